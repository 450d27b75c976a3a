"""Write the config reference (``docs/CONFIG.md``) from the dataclasses of the :mod:`.config` package.

    python -m lightning_stacks.docs_config > docs/CONFIG.md

Each section is one dataclass: its docstring, then a table of key | type | default. Nothing is
written by hand except the lines below about ``ReductionCallback``'s own keywords; a test
regenerates the file and compares, so the reference cannot drift from the code. Imports only
:mod:`.config` (no Lightning), so it runs anywhere the config does: the sections start at
:class:`~.config.schema.Config`, and a ``list[X]`` field's ``X`` is looked up in the module that
declares the field.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from typing import Any

from .config.methods import ReduceConfig
from .config.schema import Config

# ReductionCallback's keywords that are not ``reduce.*`` settings (tests/test_docs.py checks
# this against the callback's signature).
CALLBACK_OWN = {
    "at_epochs": ("list[int]", "[]", "reduce after this many epochs of training (each < the Trainer's max_epochs)"),
    "every_n_epochs": ("int", "0", "reduce after every n epochs (0 = off)"),
    "at_end": ("bool", "True", "reduce when the fit ends"),
    "modules": ("list[str] | str | None", "None",
                "attribute paths of the blocks to reduce (`model.head`); None = every outermost DeepStackNetwork or ReLU MLP nn.Sequential"),
    "attribute": ("str | None", "None", "older name of `modules` (one path)"),
    "task": ("str | None", "None", "classification or regression (None = the module's task, else inferred from the labels)"),
    "forward": ("callable | None", "None", "`forward(module, batch) -> outputs` (None = `module(batch[0])`)"),
    "targets": ("callable | None", "None", "`targets(batch) -> labels` (None = `batch[1]` or `batch[\"y\"]`)"),
    "report_path": ("str | Path | None", '"auto"',
                    "JSON report (+ .txt tables beside it); `auto` = `<trainer.log_dir or default_root_dir>/reduction_report.json`, None = none"),
    "verbose": ("bool", "True", "print each step's row as it finishes"),
    "round_index": ("int | None", "None", "label of the reductions in logs (the rounds driver sets it)"),
}
CALLBACK_CLI_ONLY = ("output", "after_training")  # ReductionCallback.CLI_ONLY

HEADER = """\
# Config reference

Generated from the dataclasses in `lightning_stacks/config/` (the single source of defaults) by
`python -m lightning_stacks.docs_config > docs/CONFIG.md`; do not edit by hand.

Set any key on the command line as `key=value` after an optional YAML file
(`python train.py configs/mnist.yaml trainer.max_epochs=3 model.widths=[512,512]`); YAML files in
`configs/` hold only what they change. A number in the key picks one entry of a list and changes
only the keys given (`rounds.1.reduction.max_drop=0.02`, `rounds.2.optim.lr=5e-4`). An unknown
key, a wrong type, an entry a list does not have or an invalid choice fails with the valid keys or
values named. `reduce.py CKPT key=value ...` starts from the checkpoint's own config.
"""


def _markdown(text: str) -> str:
    """A docstring in RST-ish markup as Markdown: ``x`` -> `x`, :class:`~a.B` -> `B`."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")


def _value(value: Any) -> str:
    """A default as it is written in an override (``true``, ``[1, 2]``, ``""``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _dataclass_named(type_name: str, owner: type) -> type | None:
    """The dataclass ``type_name`` as the module declaring ``owner`` (whose field names it) sees it."""
    obj = getattr(sys.modules[owner.__module__], type_name, None)
    return obj if inspect.isclass(obj) and dataclasses.is_dataclass(obj) else None


def _sections(cls: type, prefix: str) -> list[tuple[str, type]]:
    """(key prefix, dataclass) for ``cls`` and every dataclass nested in it, depth first."""
    out = [(prefix, cls)]
    for f in dataclasses.fields(cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            out += _sections(type(default), f"{prefix}{f.name}.")
        else:
            inner = re.fullmatch(r"list\[(\w+)\]", str(f.type))
            item = _dataclass_named(inner.group(1), cls) if inner else None
            if item is not None:
                out += _sections(item, f"{prefix}{f.name}[i].")
    return out


def _table(cls: type, prefix: str) -> list[str]:
    rows = ["| key | type | default |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            continue  # its own section
        rows.append(f"| `{prefix}{f.name}` | `{_cell(str(f.type))}` | `{_cell(_value(default))}` |")
    return rows


def _callback_section() -> list[str]:
    keys = [f.name for f in dataclasses.fields(ReduceConfig) if f.name not in CALLBACK_CLI_ONLY]
    lines = [
        "## `ReductionCallback` keyword settings",
        "",
        "`ReductionCallback(max_drop=..., **settings)` (in `lightning_stacks/callbacks.py`) takes every",
        f"`reduce.*` key above as a keyword argument except {', '.join(f'`{k}`' for k in CALLBACK_CLI_ONLY)}",
        "(those are `reduce.py` / `train.py` options), with the same defaults and checks, refused at",
        "construction when unknown or out of range:",
        "",
        ", ".join(f"`{k}`" for k in keys) + ".",
        "",
        "Its own keywords:",
        "",
        "| keyword | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, (typ, default, meaning) in CALLBACK_OWN.items():
        lines.append(f"| `{name}` | `{_cell(typ)}` | `{default}` | {_cell(meaning)} |")
    return lines


def render() -> str:
    """The whole of ``docs/CONFIG.md``."""
    lines = [HEADER]
    for prefix, cls in _sections(Config, ""):
        title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
        lines += [f"## {title} ({cls.__name__})", ""]
        doc = inspect.cleandoc(cls.__doc__ or "")
        if doc:
            lines += [_markdown(doc), ""]
        lines += _table(cls, prefix) + [""]
    lines += _callback_section()
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
