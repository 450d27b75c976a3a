"""Merging onto the dataclass schema, with errors that name the unknown key and the valid ones."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .schema import ConfigError


def _valid_keys(schema: Any, dotted: str) -> tuple[str, list[str]]:
    """Walk ``dotted`` down the dataclass schema; return (parent path, valid keys there)."""
    parts = dotted.split(".")
    node = schema
    parent: list[str] = []
    for part in parts[:-1]:
        names = {f.name: f for f in dataclasses.fields(node)}
        if part not in names or not dataclasses.is_dataclass(getattr(node, part, None)):
            break
        node = getattr(node, part)
        parent.append(part)
    return ".".join(parent) or "<top level>", sorted(f.name for f in dataclasses.fields(node))


def _merge(base: DictConfig, other: Any, schema: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or str(err)
        parent, valid = _valid_keys(schema, str(key))
        raise ConfigError(
            f"unknown config key '{key}' (from {source}); valid keys under {parent}: {', '.join(valid)}"
        ) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "?")
        msg = str(err).splitlines()[0]
        raise ConfigError(f"bad value for config key '{key}' (from {source}): {msg}") from None
