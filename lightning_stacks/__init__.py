"""lightning_stacks: Deep Stack Networks trained with PyTorch Lightning and shrunk by the
function-preserving Reduction Algorithm."""

from .config import Config, ConfigError, load_config
from .model import DeepStackNetwork, Stack
from .schedule import Schedule

__all__ = ["Config", "ConfigError", "DeepStackNetwork", "Schedule", "Stack", "StackModule", "load_config"]


def __getattr__(name):  # StackModule pulls in Lightning: import it only when asked for
    if name == "StackModule":
        from .module import StackModule

        return StackModule
    raise AttributeError(name)
