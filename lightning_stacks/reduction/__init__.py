"""The Reduction Algorithm: pure tensor math in :mod:`.core` and :mod:`.kmeans`, the network-wide
steps in :mod:`.steps` (automatic search in :mod:`.auto`), the driver ``reduce_network`` in
:mod:`.pipeline`; :mod:`.settings`, :mod:`.report` and :mod:`.stacks` hold what they share."""

from .core import (
    StackWeights,
    balanced_factors,
    bottleneck_basis,
    cluster_stack,
    find_outside_neurons,
    fold_always_active,
    fold_constant_neurons,
    kink_representation,
    merge_clusters,
    preactivation_range,
    project_bottleneck,
    refit_outgoing,
    remove_weak,
    select_weak,
    weak_bound,
    weak_scores,
    weighted_kmeans,
)
from .pipeline import reduce_network
from .report import ReductionReport, StepRecord
from .settings import ReduceSettings, ReductionError
from .stacks import build_network, run_stacks, stack_weights

__all__ = [
    "ReduceSettings", "ReductionError", "ReductionReport", "StackWeights", "StepRecord",
    "balanced_factors", "bottleneck_basis", "build_network", "cluster_stack", "find_outside_neurons",
    "fold_always_active", "fold_constant_neurons", "kink_representation", "merge_clusters",
    "preactivation_range", "project_bottleneck", "reduce_network", "refit_outgoing", "remove_weak", "run_stacks", "select_weak",
    "stack_weights", "weak_bound", "weak_scores", "weighted_kmeans",
]
