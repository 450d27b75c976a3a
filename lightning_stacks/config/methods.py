"""The dataclasses of the reduction and training-method sections: reduce, sparsity, pruning, distill, augment."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReduceConfig:
    """The Reduction Algorithm's settings (``reduce.py`` and the reduction callback).

    Manual mode: per-stack ``tolerances`` (step 2) and ``clusters`` (step 3; 0 = do not cluster
    that stack); an empty list skips the step. Automatic mode: ``max_drop`` in [0, 1] (accuracy
    points, or relative MSE increase, on the ``reference`` split); -1 = manual. ``weak_share``:
    the part of that budget the weak steps may use (clustering gets the rest). ``refit``: beyond
    the paper, least-squares refit of each reduced stack's W and c to the original stack outputs.
    ``polish``: beyond the paper, automatic mode then spends what its per-stack budget ramp left:
    one neuron at a time (merge two, or drop the weakest), in whichever stack costs least, while
    the whole network stays within ``max_drop``. ``bottleneck_tol``: beyond the paper, >= 0 shrinks the linear bottlenecks to the rank of their
    values on the checked inputs (relative singular-value cut-off; 0 = exact); -1 = off.
    ``baseline``: automatic mode measures the drop from the ``current`` network's metric, or from
    the ``first`` one in the reduction history (the full network, across retrain-reduce rounds).
    ``sample``: step 1 checks this many random training inputs (0 = all).
    ``reference_size``: automatic mode measures the drop on a seeded random subsample of this many
    points of the ``reference`` split (0 = all of it); bounds its memory on large data.
    ``device``: where to reduce (``auto`` = the model's training device: CUDA when available).
    ``kmeans``: step 3's weighted k-means: ``torch`` (on the reduction's device) or ``sklearn``
    (scikit-learn on the CPU, the reference implementation).
    ``report``: ``steps`` measures every row of the reduction's table (output change, metrics on
    every split; the full network's row shares step 1's pass, and rows that keep the first
    stack's original neurons reuse its activations when they fit in 1 GiB); ``final`` only the
    full network and the final one (less time on large data).
    ``output``: path of the reduced checkpoint (empty = ``<input>_reduced.ckpt``).
    ``after_training``: ``train.py`` reduces its final network and writes ``final_reduced.ckpt``.
    ``optimizer_state``: what the next round's Adam starts from: ``reset`` (fresh state) or
    ``carry`` (moments of the neurons that survived unmerged are sliced over, merged neurons and
    re-factorized affine weights start at zero).
    ``merge_identity_layers``: a "layers" step folds stack 1's ReLU layer into its affine path when
    it acts as the identity (V >= 0, b >= 0 and inputs >= 0: ``reduce.domain`` with lower >= 0,
    or data whose inputs are all >= 0). ``domain``: ``[lower, upper]`` of a box input domain (e.g. ``[0, 1]`` for images): a first
    "domain" step removes units proven stable on the whole box (interval and linear bounds, then a
    MILP per undecided unit with ``domain_milp_seconds`` each, for at most ``domain_milp_units``
    units) — equivalent on the whole domain. ``tighten``: report how many of step 1's decisions
    (made on training points) also hold on the whole domain (needs ``domain``).
    """

    outside: bool = True
    sample: int = 0
    tolerances: list[float] = field(default_factory=list)
    clusters: list[int] = field(default_factory=list)
    max_drop: float = -1.0
    weak_share: float = 0.25
    refit: bool = False
    polish: bool = False
    bottleneck_tol: float = -1.0
    baseline: str = "current"
    reference: str = "train"
    seed: int = 0
    kmeans_n_init: int = 3
    kmeans: str = "torch"
    report: str = "steps"
    device: str = "auto"
    reference_size: int = 0
    output: str = ""
    after_training: bool = False
    optimizer_state: str = "reset"
    merge_identity_layers: bool = False
    domain: list[float] = field(default_factory=list)
    domain_milp_seconds: float = 5.0
    domain_milp_units: int = 2000
    tighten: bool = False


@dataclass
class GroupSparsityConfig:
    """Sparse group lasso on each ReLU neuron's incoming weights (Alvarez & Salzmann), applied
    by its prox after every optimizer step. ``lambdas``: per stack, or one value for all; empty
    = off. ``alpha``: l1 share in [0, 1]. ``start_epoch``: -1 = after ``schedule.warmup_epochs``.
    """

    lambdas: list[float] = field(default_factory=list)
    alpha: float = 0.0
    include_bias: bool = True
    start_epoch: int = -1


@dataclass
class PruningConfig:
    """Magnitude pruning with retraining (the baseline, TF-MOT style): during training the masks
    follow the polynomial sparsity schedule from 0 at ``begin_epoch`` to ``sparsity`` at
    ``end_epoch`` (-1 = the last epoch), re-ranked every ``frequency`` steps; the zeros are made
    permanent at the end. ``sparsity`` = 0 is off; or give ``compression`` (>= 1, nonzero
    parameters before / after, converted to a weight sparsity at the start of training).
    ``scope``: global or layer.
    """

    sparsity: float = 0.0
    compression: float = 0.0
    scope: str = "global"
    begin_epoch: float = 0.0
    end_epoch: float = -1.0
    frequency: int = 50


@dataclass
class LayerSparsityConfig:
    """Negative-part layer regularizer (Hebiri & Lederer), applied by its prox after every
    optimizer step. ``penalties``: r_j per stack or one for all; empty = off. ``start_epoch``: -1 =
    after ``schedule.warmup_epochs``. Identity-acting layers merge in the reduction's ``layers``
    step when ``reduce.merge_identity_layers`` is on."""

    penalties: list[float] = field(default_factory=list)
    start_epoch: int = -1


@dataclass
class DistillConfig:
    """Beyond the paper: fine-tune against a teacher network's outputs (knowledge distillation,
    Hinton et al. 2015), so that a reduced network relearns the full network's function and not
    only the labels. ``weight``: the teacher term's share of the data loss, in [0, 1] (0 = off;
    the loss is ``(1 - weight) * label loss + weight * teacher loss``). ``temperature`` (> 0):
    classification compares the softened class distributions (KL, scaled by T^2); regression
    uses the squared distance to the teacher's outputs. ``teacher``: a checkpoint of ours; empty
    = in a rounds job, the full network (round 0's trained network, before its reduction);
    ``previous`` = in a rounds job, the network the previous round trained, before its reduction.
    """

    weight: float = 0.0
    temperature: float = 4.0
    teacher: str = ""


@dataclass
class AugmentConfig:
    """Beyond the paper: random translations of the training images (evaluation and the
    reduction see the inputs as they are). ``shift``: each training image moves by a random
    whole number of pixels in [-shift, shift] along each axis, drawn per image and per step
    (0 = off); the uncovered border takes ``fill`` (in the network's input units: 0 is MNIST's
    background). ``image_shape``: [H, W] or [C, H, W] of the flattened inputs (C-major, as
    ``x.reshape(N, C, H, W)`` reads them); empty = the data set's own (MNIST 28x28, digits 8x8).
    A distillation teacher sees the same moved images as the network it teaches.
    """

    shift: int = 0
    fill: float = 0.0
    image_shape: list[int] = field(default_factory=list)

