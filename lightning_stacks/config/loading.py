"""Loading a config: dataclass defaults <- a saved config <- a YAML file <- key=value overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .merge import _merge, _valid_keys
from .schema import Config, ConfigError
from .validate import validate


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> DictConfig:
    """Build a validated config: dataclass defaults <- ``base`` <- YAML file <- overrides.

    Args:
        base: a saved config (e.g. a checkpoint's) to start from instead of the bare defaults.
        path: optional YAML file with overrides of the defaults.
        overrides: dotlist such as ``["trainer.max_epochs=3", "model.widths=[8,8]"]``;
            ``key.0.sub=value`` changes one key of a list entry, ``key+=[item, ...]`` appends
            to a list (one more round: ``rounds+=[{epochs: 10}]``).

    Raises:
        ConfigError: unknown key, wrong type, malformed override or invalid value.
    """
    schema = Config()
    cfg = OmegaConf.structured(schema)
    if base is not None:
        cfg = _merge(cfg, base, schema, "checkpoint")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML ({_yaml_reason(err)}); fix the syntax there") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read ({type(err).__name__}: {err})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        cfg = _merge(cfg, loaded, schema, str(path))
    for item in overrides or []:
        key = item.partition("=")[0]
        if key.endswith("+"):  # key+=[...]: append to a list
            cfg = _append_to_list(cfg, item, schema)
            continue
        if "=" not in item or not key or any(not part.strip() or part != part.strip() for part in key.split(".")):
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_epochs=3)")
        try:
            dot = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{item}': the value is not valid YAML ({_yaml_reason(err)}); "
                              "quote it or fix the brackets, e.g. model.widths=[16,16]") from None
        if _LIST_INDEX.search(key):  # a key inside a list entry, e.g. rounds.1.reduction.max_drop
            cfg = _update_in_list(cfg, item, dot)
        else:
            cfg = _merge(cfg, dot, schema, f"override '{item}'")
    validate(cfg)
    return cfg


_LIST_INDEX = re.compile(r"(^|\.)\d+(\.|$)")
APPEND_EXAMPLE = "rounds+=[{epochs: 10}]"


def _append_to_list(cfg: DictConfig, item: str, schema: Config) -> DictConfig:
    """Apply ``key+=[item, ...]``: the items are appended to the list at ``key`` (e.g. one more
    round: ``rounds+=[{epochs: 10}]``) and checked like the rest of it."""
    key, _, text = item.partition("+=")
    if not key or any(not part.strip() or part != part.strip() or part.isdigit() for part in key.split(".")):
        raise ConfigError(f"override '{item}' is not of the form key+=[item, ...] (e.g. {APPEND_EXAMPLE})")
    try:
        value = OmegaConf.select(OmegaConf.from_dotlist([f"{key}={text}"]), key)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': the value is not valid YAML ({_yaml_reason(err)}); "
                          f"give a list in brackets, e.g. {APPEND_EXAMPLE}") from None
    if not OmegaConf.is_list(value):
        raise ConfigError(f"override '{item}': += appends a list of items, got {text!r}; "
                          f"write the items in brackets, e.g. {APPEND_EXAMPLE}")
    try:
        current = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException:
        current = None
    if current is None and OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
        parent, valid = _valid_keys(schema, key)
        raise ConfigError(f"unknown config key '{key}' in override '{item}'; valid keys under {parent}: {', '.join(valid)}")
    if not OmegaConf.is_list(current):
        raise ConfigError(f"override '{item}': '{key}' holds a {'mapping' if OmegaConf.is_dict(current) else 'value'}, "
                          f"not a list; += appends to lists only (set it with {key}=...)")
    kind = getattr(current._metadata, "element_type", None)
    if dataclasses.is_dataclass(kind):  # e.g. a round: name a mistyped key and the valid ones
        valid = sorted(f.name for f in dataclasses.fields(kind))
        for i, entry in enumerate(value):
            bad = sorted(set(entry) - set(valid)) if OmegaConf.is_dict(entry) else None
            if bad is None or bad:
                what = f"has the unknown key '{bad[0]}'" if bad else "is not a mapping"
                raise ConfigError(f"override '{item}': appended item {i} {what}; valid keys of a {key} entry: "
                                  f"{', '.join(valid)}")
    joined = OmegaConf.to_container(current) + OmegaConf.to_container(value)
    update = OmegaConf.create()
    OmegaConf.update(update, key, joined, force_add=True)
    return _merge(cfg, update, schema, f"override '{item}'")


def _update_in_list(cfg: DictConfig, item: str, dot: DictConfig) -> DictConfig:
    """Apply ``key=value`` whose key indexes a list (``rounds.1.optim.lr=1e-4``): the entry must
    exist; the value is merged into it and checked like every other value."""
    key = item.partition("=")[0]
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[:depth]) or "<top level>"
        if part.isdigit():
            if not OmegaConf.is_list(node):
                raise ConfigError(f"override '{item}': '{where}' is not a list, so it has no entry {part}")
            if int(part) >= len(node):
                raise ConfigError(f"override '{item}': '{where}' has {len(node)} entries (0-{len(node) - 1}), "
                                  f"not {int(part) + 1}; give the whole list to add entries")
            node = node[int(part)]
        else:
            if not OmegaConf.is_dict(node) or part not in node:
                raise ConfigError(f"override '{item}': no key '{part}' under '{where}'")
            node = node[part]
    if not (OmegaConf.is_list(node) or OmegaConf.is_dict(node)):
        raise ConfigError(f"override '{item}': '{'.'.join(parts[:-1])}' holds a value, not a list or mapping")
    value = OmegaConf.select(dot, key)
    try:  # cfg is load_config's own, built by merges: updating it in place touches no caller's config
        OmegaConf.update(cfg, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value, merge=True)
    except (ConfigKeyError, ConfigAttributeError) as err:
        raise ConfigError(f"unknown config key in override '{item}': {str(err).splitlines()[0]}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad value in override '{item}': {str(err).splitlines()[0]}") from None
    return cfg


def _yaml_reason(err: Exception) -> str:
    """A YAML error's problem and place, one line."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def to_container(cfg: DictConfig) -> dict:
    """A plain dict (for checkpoints and logger run configs)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_container(data: dict) -> DictConfig:
    """Rebuild a validated config from a dict saved in a checkpoint (keys we no longer know fail)."""
    return load_config(base=data)
