"""The Reduction Algorithm: pure tensor math in :mod:`.core`, the network-wide driver in
:mod:`.pipeline`."""

from .core import (
    StackWeights,
    balanced_factors,
    cluster_stack,
    find_outside_neurons,
    fold_always_active,
    fold_constant_neurons,
    kink_representation,
    merge_clusters,
    preactivation_range,
    remove_weak,
    select_weak,
    weak_bound,
    weak_scores,
    weighted_kmeans,
)
from .pipeline import (
    ReduceSettings,
    ReductionError,
    ReductionReport,
    StepRecord,
    build_network,
    reduce_network,
    run_stacks,
    stack_weights,
)

__all__ = [
    "ReduceSettings", "ReductionError", "ReductionReport", "StackWeights", "StepRecord",
    "balanced_factors", "build_network", "cluster_stack", "find_outside_neurons",
    "fold_always_active", "fold_constant_neurons", "kink_representation", "merge_clusters",
    "preactivation_range", "reduce_network", "remove_weak", "run_stacks", "select_weak",
    "stack_weights", "weak_bound", "weak_scores", "weighted_kmeans",
]
