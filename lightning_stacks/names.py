"""Metric names logged by the module, the callbacks and the reduction (``stage/name``)."""

TRAIN_LOSS = "train/loss"
TRAIN_L2 = "train/l2"
TRAIN_ACC = "train/acc"  # on the logging step's batch
TRAIN_MSE = "train/mse"
TRAIN_DISTILL = "train/distill"
TRAIN_LAMBDA = "train/lambda"
TRAIN_LR = "train/lr"
TRAIN_BATCH_SIZE = "train/batch_size"
VAL_MSE = "val/mse"
VAL_ACC = "val/acc"
TEST_MSE = "test/mse"
TEST_ACC = "test/acc"


def metric_name(stage: str, task: str) -> str:
    """``val/acc`` for classification, ``val/mse`` for regression (same for train/test)."""
    return f"{stage}/{'acc' if task == 'classification' else 'mse'}"


def reduce_neurons(stack: int) -> str:
    """Neurons left in stack ``stack`` (1-based, as in the paper's tables)."""
    return f"reduce/neurons/stack_{stack}"


REDUCE_NEURONS_TOTAL = "reduce/neurons/total"
REDUCE_PARAMS = "reduce/params"
REDUCE_MAX_CHANGE = "reduce/max_output_change"
REDUCE_ROUND = "reduce/round"
REDUCE_STEP = "reduce/step"


NEURONS_TOTAL = "neurons/total"  # logged with training steps and reduction steps: one staircase line


def neurons(stack: int) -> str:
    """Neurons in stack ``stack`` (1-based), on the same timeline as the training curves."""
    return f"neurons/stack_{stack}"


def neuron_metrics(widths) -> dict[str, float]:
    """``neurons/total`` and ``neurons/stack_<j>`` for a list of widths."""
    out = {neurons(j + 1): float(n) for j, n in enumerate(widths)}
    out[NEURONS_TOTAL] = float(sum(widths))
    return out


def block_neuron_metrics(widths_by_block: dict[str, list[int]]) -> dict[str, float]:
    """``neurons/total`` over every block, ``neurons/<block>`` per block and, for one block that
    is a Deep Stack Network named ``net`` (a StackModule's), ``neurons/stack_<j>`` as before."""
    if list(widths_by_block) == ["net"]:
        return neuron_metrics(widths_by_block["net"])
    out = {f"neurons/{path}": float(sum(w)) for path, w in widths_by_block.items()}
    out[NEURONS_TOTAL] = float(sum(sum(w) for w in widths_by_block.values()))
    return out
