"""A job's output folder: checked before any work, locked while the job runs, never overwritten
unless asked (``overwrite=true``).

- :func:`check_out_dir`: ``out_dir`` is a writable folder (created if missing), and a single fit
  does not silently replace an earlier run's ``final.ckpt`` / ``checkpoints/last.ckpt``.
- :func:`out_dir_lock`: ``out_dir/.lock`` (created with ``O_EXCL``, holding ``pid host``) for the
  job's life, taken by global rank 0 only: a second job on the same folder is refused. A lock
  left by a dead process on this host is taken over (with a note on stderr).
- :func:`check_output`: a reduced checkpoint and its report replace neither their input nor an
  existing file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from .config import ConfigError

LOCK_NAME = ".lock"
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_launch_rank_zero() -> bool:
    """True in the process that will be global rank 0, before any Trainer exists (Lightning's DDP
    launcher re-runs the command for the other ranks with ``LOCAL_RANK``/``NODE_RANK`` set)."""
    for key in RANK_ENV:
        try:
            if int(os.environ.get(key, "0") or 0) != 0:
                return False
        except ValueError:
            continue
    return True


def check_out_dir(cfg) -> Path:
    """Refuse an unusable ``out_dir`` and a rerun that would replace a single fit's results.

    Raises:
        ConfigError: ``out_dir`` is a file or not writable; or (no ``rounds``, no ``ckpt_path``,
            ``overwrite=false``) it already holds ``final.ckpt`` or ``checkpoints/last.ckpt``.
    """
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir '{out}' is a file, not a folder; choose another out_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out_dir '{out}' cannot be created ({err.strerror or err}); choose a writable out_dir") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir '{out}' is not writable; choose a writable out_dir")
    if cfg.rounds or cfg.ckpt_path or cfg.overwrite:
        return out
    for name, what in (("final.ckpt", "a finished run"), ("checkpoints/last.ckpt", "an interrupted run")):
        if (out / name).is_file():
            raise ConfigError(f"out_dir '{out}' already holds {what} ({out / name}); resume it with ckpt_path=last, "
                              "choose another out_dir, or set overwrite=true to replace it")
    return out


def _holder(lock: Path) -> tuple[int, str]:
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return -1, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True


@contextlib.contextmanager
def out_dir_lock(out_dir: str | Path) -> Iterator[Path | None]:
    """Hold ``out_dir/.lock`` for the ``with`` block (global rank 0 only; other ranks get None).

    Raises:
        ConfigError: another live job holds the lock.
    """
    if not is_launch_rank_zero():
        yield None
        return
    lock = Path(out_dir) / LOCK_NAME
    if not _create(lock):
        pid, host = _holder(lock)
        if host == socket.gethostname() and pid > 0 and not _alive(pid):
            print(f"note: taking over the lock {lock} left by process {pid}, which is no longer running", file=sys.stderr)
            lock.unlink(missing_ok=True)
        if not _create(lock):
            pid, host = _holder(lock)
            raise ConfigError(f"out_dir '{out_dir}' is in use by another job (process {pid} on host {host or '?'}, lock file "
                              f"{lock}); wait for it to finish or choose another out_dir (delete the lock file only if "
                              "that job is gone)")
    try:
        yield lock
    finally:
        if _holder(lock)[0] == os.getpid():
            lock.unlink(missing_ok=True)


def check_output(out: str | Path, protected: list[str | Path], overwrite: bool) -> Path:
    """Refuse a reduced checkpoint path ``out`` that would replace something not asked for.

    The report goes to ``out`` with a ``.json`` suffix. Refused: ``out`` ending in ``.json``; ``out``
    or its report being one of ``protected`` (the input checkpoint); ``out`` a folder or inside a
    file; ``out`` or its report existing while ``overwrite`` is false.
    """
    out = Path(out)
    key = "reduce.output"
    if out.suffix == ".json":
        raise ConfigError(f"{key}='{out}' ends in .json, the name of its report; give a .ckpt path")
    report = out.with_suffix(".json")
    for path in map(Path, protected):
        for mine, what in ((out, "reduced checkpoint"), (report, "report")):
            if mine.resolve() == path.resolve():
                raise ConfigError(f"{key}='{out}': its {what} {mine} would replace the input checkpoint {path}; "
                                  "choose another reduce.output")
    if out.is_dir():
        raise ConfigError(f"{key}='{out}' is a folder; give a file path such as {out / 'reduced.ckpt'}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{key}='{out}' lies inside the file {parent}; choose another reduce.output")
    if not overwrite:
        for mine in (out, report):
            if mine.exists():
                raise ConfigError(f"{mine} already exists; set overwrite=true to replace it or choose another "
                                  "reduce.output")
    return out
