"""Metric names logged by the module, the callbacks and the reduction (``stage/name``)."""

TRAIN_LOSS = "train/loss"
TRAIN_L2 = "train/l2"
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
