"""Which blocks of a LightningModule the reduction works on: named by attribute path
(``"model.head"``, ``"mlp.2"``) or found (every outermost Deep Stack Network or ReLU MLP
``nn.Sequential``), checked before training, and put back after a reduction."""

from __future__ import annotations

import difflib
import re

from torch import nn

from .blocks import Block, BlockError, block_for, find_blocks, set_child
from .config import ConfigError

PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def check_paths(modules, attribute) -> list[str] | None:
    """``modules`` (a path or a list of them) or its alias ``attribute``, as a list (None = find
    them); ConfigError for a malformed path or both given."""
    if modules is not None and attribute is not None:
        raise ConfigError("give modules=[...] or its older name attribute=..., not both")
    raw = modules if modules is not None else attribute
    if raw is None:
        return None
    key = "modules" if modules is not None else "attribute"
    paths = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else None
    if not paths:
        raise ConfigError(f"{key}={raw!r} must be an attribute path such as 'model.head', or a non-empty list of them")
    bad = [p for p in paths if not isinstance(p, str) or not PATH_RE.match(p)]
    if bad:
        raise ConfigError(f"{key}={raw!r}: {bad[0]!r} is not an attribute name or dotted path (such as 'model.head')")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"modules={paths} names a block twice")
    nested = [(a, b) for a in paths for b in paths if a != b and b.startswith(a + ".")]
    if nested:
        raise ConfigError(f"modules={paths}: {nested[0][1]} lies inside {nested[0][0]}; name each block once")
    return paths


def get_block(root: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``; a ReductionError names the closest existing name on a typo."""
    node, done = root, []
    for part in path.split("."):
        children = dict(node.named_children())
        if part not in children:
            owner = ".".join(done) or type(root).__name__
            close = difflib.get_close_matches(part, list(children), n=1)
            hint = f"; did you mean '{'.'.join([*done, close[0]])}'?" if close else \
                f"; its submodules: {', '.join(children) or 'none'}"
            extra = f" ({type(getattr(node, part)).__name__}, not a module)" if hasattr(node, part) else ""
            raise BlockError(f"modules: '{path}' not found: {owner} has no submodule '{part}'{extra}{hint}")
        node = children[part]
        done.append(part)
    return node


def resolve_targets(root: nn.Module, paths: list[str] | None) -> list[Block]:
    """The blocks to reduce, as adapters over the current modules: the ``paths`` named (each
    checked: a BlockError names the layer that cannot be reduced), or every outermost reducible
    block found (a BlockError lists what was looked at when there is none)."""
    if paths is not None:
        return [block_for(get_block(root, p), p) for p in paths]
    found, skipped = find_blocks(root)
    if not found:
        why = "; ".join(f"{p}: {reason}" for p, reason in skipped.items())
        raise BlockError(f"{type(root).__name__} holds no reducible block (a DeepStackNetwork or an nn.Sequential ReLU MLP)"
                         + (f"; looked at {why}" if why else "") + "; name the block with modules=['...']")
    return [block_for(module, p) for p, module in found]


def put_block(root: nn.Module, path: str, new: nn.Module, report: dict) -> None:
    """Install a reduced block (a StackModule's ``net`` through its ``replace_network``, which
    also records the report in its history)."""
    replace = getattr(root, "replace_network", None)
    if callable(replace) and path == "net":
        replace(new, report)
    else:
        set_child(root, path, new)
