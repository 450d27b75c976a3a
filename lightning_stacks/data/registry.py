"""Building the DataModule a config names: the built-in ones, or your own by dotted path."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from ..config import DATASETS, ConfigError
from ..schedule import Schedule
from .files import CSVDataModule, NPZDataModule
from .mnist import DigitsDataModule, MNISTDataModule
from .sine import SineDataModule
from .tensors import DataError

DATAMODULES = {"sine": SineDataModule, "mnist": MNISTDataModule, "digits": DigitsDataModule,
               "csv": CSVDataModule, "npz": NPZDataModule}


def load_datamodule_class(spec: str) -> type:
    """Import ``package.module:ClassName`` and check it is a LightningDataModule class.

    Raises:
        ConfigError: ``spec`` is not of that form.
        DataError: the module or class cannot be imported, or is not a LightningDataModule.
    """
    mod_name, _, cls_name = str(spec).partition(":")
    if not mod_name or not cls_name or ":" in cls_name:
        raise ConfigError(f"data.module='{spec}' must have the form package.module:ClassName")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as err:
        raise DataError(f"data.module='{spec}': cannot import module '{mod_name}' ({err}); is it on the "
                        f"Python path? (a script's folder is, the working directory is not: set PYTHONPATH=.)") from None
    obj: Any = module
    for part in cls_name.split("."):
        if not hasattr(obj, part):
            found = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, pl.LightningDataModule))
            raise DataError(f"data.module='{spec}': module '{mod_name}' has no '{cls_name}'"
                            f" (its LightningDataModules: {', '.join(found) or 'none'})")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, pl.LightningDataModule)):
        raise DataError(f"data.module='{spec}' is not a pytorch_lightning.LightningDataModule subclass (got {obj!r})")
    return obj


def _instantiate(data_cfg, seed: int) -> pl.LightningDataModule:
    cls = load_datamodule_class(data_cfg.module)
    raw = data_cfg.kwargs
    kwargs = dict(OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else raw or {})
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = seed
    try:
        return cls(**kwargs)
    except Exception as err:  # noqa: BLE001 - any constructor failure is reported with its kwargs
        raise DataError(f"data.module='{data_cfg.module}' failed to build with data.kwargs={kwargs}: "
                        f"{type(err).__name__}: {err}") from err



def build_datamodule(data_cfg, schedule: Schedule | None = None, seed: int = 0) -> pl.LightningDataModule:
    """The DataModule that ``data_cfg`` describes.

    Args:
        data_cfg: the ``data`` section of the config.
        schedule: the training schedule (the built-in and file DataModules follow its batch sizes).
        seed: the job's seed (file splits; passed to your DataModule as ``seed`` if it takes one).

    Returns:
        A built-in :class:`TensorDataModule`, or an instance of ``data.module`` (with
        ``data.kwargs``) when ``data.name`` is ``module``. Call ``setup()`` and then
        :func:`describe_data` for its task and dimensions.

    Raises:
        ConfigError: an unknown ``data.name`` or a malformed ``data.module``.
        DataError: ``data.module`` cannot be imported or built.
    """
    name = data_cfg.name
    if getattr(data_cfg, "module", "") and name in ("module", "sine"):
        return _instantiate(data_cfg, seed)
    if name not in DATAMODULES:
        extra = " (data.name=module needs data.module=package.module:ClassName)" if name == "module" else ""
        raise ConfigError(f"data.name='{name}' is not one of: {', '.join(DATASETS)}{extra}")
    return DATAMODULES[name](data_cfg, schedule=schedule, seed=seed)
