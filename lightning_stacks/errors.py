"""The one base class of every error this project raises for a bad input.

``train.py`` and ``reduce.py`` catch :class:`LightningStacksError` and print its message as one
line (``error: ...``, exit code 2); any other exception is a bug and keeps its traceback. Each
message names the problem (a config key, a file, a parameter) and how to fix it.
"""

from __future__ import annotations


class LightningStacksError(ValueError):
    """A bad input (config, data, checkpoint, settings, out_dir); the message names it and the fix."""


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (a CLI prints it after ``error: ``)."""
    return " ".join(str(err).split()) or type(err).__name__
