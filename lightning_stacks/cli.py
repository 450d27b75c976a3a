"""Shared command-line parsing for ``train.py`` and ``reduce.py``."""

from __future__ import annotations

from .config import ConfigError


def split_args(argv: list[str], positional: int = 0) -> tuple:
    """Split ``[positional...] [config.yaml] [key=value ...]``.

    Returns ``(*positionals, yaml_path_or_None, overrides)``. Anything else is refused.
    """
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        raise ConfigError("usage: [config.yaml] [key=value ...]; see the module docstring for examples")
    pos = []
    for _ in range(positional):
        if not argv or "=" in argv[0]:
            raise ConfigError(f"expected {positional} positional argument(s) before the overrides")
        pos.append(argv.pop(0))
    path = None
    if argv and "=" not in argv[0]:
        path = argv.pop(0)
        if not path.endswith((".yaml", ".yml")):
            raise ConfigError(f"'{path}' is neither a .yaml config file nor a key=value override")
    for a in argv:
        if "=" not in a:
            raise ConfigError(f"'{a}' is not a key=value override (only one config file may be given)")
    return (*pos, path, argv)
