"""lightning_stacks: Deep Stack Networks trained with PyTorch Lightning and shrunk by the
function-preserving Reduction Algorithm."""

import warnings

from .config import Config, ConfigError, load_config
from .model import DeepStackNetwork, Stack
from .schedule import Schedule

__all__ = ["Config", "ConfigError", "DeepStackNetwork", "L2Schedule", "ReductionCallback", "Schedule", "Stack", "StackModule",
           "export_model", "load_config", "load_reduced_checkpoint", "reduce_block", "reduce_network"]

# Lightning 2.6's pytree helper builds torch's LeafSpec, which newer torch marks deprecated: a
# FutureWarning on every fit (ours or a user's Trainer with our callbacks) from the pairing of the
# two releases, nothing this package can change.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)

_LAZY = {  # these pull in Lightning / scikit-learn: imported only when asked for
    "StackModule": ("module", "StackModule"),
    "ReductionCallback": ("callbacks", "ReductionCallback"),
    "L2Schedule": ("l2_schedule", "L2Schedule"),
    "load_reduced_checkpoint": ("checkpoint", "load_reduced_checkpoint"),
    "reduce_network": ("reduction.pipeline", "reduce_network"),
    "reduce_block": ("block_reduction", "reduce_block"),
    "export_model": ("export", "export_model"),
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(name)
