"""Random image translations of training batches (``augment.*``)."""

import pytest
import torch
from conftest import run_cli

from lightning_stacks.augment import image_layout, random_shift
from lightning_stacks.config import ConfigError, load_config, round_config, to_container
from lightning_stacks.module import StackModule


def one_pixel_images(n: int, h: int, w: int, row: int, col: int, channels: int = 1) -> torch.Tensor:
    x = torch.zeros(n, channels, h, w)
    x[:, :, row, col] = torch.arange(1, channels + 1, dtype=torch.float32)[None, :]
    return x.reshape(n, -1)


def test_every_image_moves_by_its_own_offset_within_the_shift(device):
    x = one_pixel_images(4000, 7, 9, row=3, col=4, channels=2).to(device)
    torch.manual_seed(0)
    out = random_shift(x, (2, 7, 9), 2).reshape(4000, 2, 7, 9)
    assert out.device == x.device and out.shape == (4000, 2, 7, 9)
    offsets = set()
    for img in out.cpu():
        (r0, c0), (r1, c1) = [(int(i) // 9, int(i) % 9) for i in (img[0].flatten().nonzero().item(), img[1].flatten().nonzero().item())]
        assert (r0, c0) == (r1, c1), "the channels move together"
        assert img[0, r0, c0] == 1 and img[1, r1, c1] == 2 and img.abs().sum() == 3, "the pixel moves, nothing else appears"
        offsets.add((r0 - 3, c0 - 4))
    assert offsets == {(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)}, "every offset in [-2, 2]^2 occurs"


def test_moved_in_border_takes_the_fill_value_and_shift_zero_is_the_identity():
    x = torch.ones(500, 16)
    torch.manual_seed(1)
    out = random_shift(x, (1, 4, 4), 1, fill=-0.5).reshape(500, 4, 4)
    assert set(out.unique().tolist()) == {-0.5, 1.0}
    moved = (out == -0.5).flatten(1).any(1)
    assert 0 < int(moved.sum()) < 500  # offset (0, 0) leaves an image as it was
    assert random_shift(x, (1, 4, 4), 0) is x
    for bad in ((-1, 0.0), (1, float("nan"))):
        with pytest.raises(ValueError, match="shift must be >= 0 and fill finite"):
            random_shift(x, (1, 4, 4), *bad)


def test_the_same_seed_draws_the_same_offsets():
    x = torch.rand(64, 784)
    a = random_shift(x, (1, 28, 28), 2, generator=torch.Generator().manual_seed(3))
    b = random_shift(x, (1, 28, 28), 2, generator=torch.Generator().manual_seed(3))
    c = random_shift(x, (1, 28, 28), 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("shape, pattern", [
    ([28], r"must be \[H, W\] or \[C, H, W\]"),
    ([0, 784], r"must be \[H, W\] or \[C, H, W\] of positive sizes"),
    ([27, 28], r"augment.image_shape \[27, 28\] holds 756 values but the network takes 784 inputs"),
])
def test_image_layouts_that_do_not_fit_are_refused(shape, pattern):
    with pytest.raises(ConfigError, match=pattern):
        image_layout(shape, 784)
    assert image_layout([28, 28], 784) == (1, 28, 28) and image_layout([3, 2, 5], 30) == (3, 2, 5)


# the steps are called directly, outside a Trainer: Lightning notes that self.log has nowhere to go
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference")
def test_training_step_moves_the_images_and_evaluation_does_not(monkeypatch):
    cfg = load_config(None, ["data.name=digits", "model.widths=[6,5,4]", "model.bottleneck=[3,2]", "augment.shift=1"])
    module = StackModule(to_container(cfg))
    assert module.data_info["image_shape"] == [8, 8] and module.image_layout() == (1, 8, 8)
    x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
    seen = []
    monkeypatch.setattr(module, "forward", lambda inp: seen.append(inp) or module.net(inp))
    torch.manual_seed(5)
    module.training_step((x, y), 0)
    torch.manual_seed(5)
    assert torch.equal(seen[-1], random_shift(x, (1, 8, 8), 1)) and not torch.equal(seen[-1], x)
    module.validation_step((x, y), 0)
    assert seen[-1] is x  # validation (and the reduction, which calls the network) see the inputs as they are


def test_a_checkpoint_saved_without_an_image_shape_takes_the_built_in_data_sets():
    cfg = load_config(None, ["data.name=digits", "model.widths=[6,5,4]", "model.bottleneck=[3,2]", "augment.shift=1"])
    module = StackModule(to_container(cfg), data_info={"task": "classification", "input_dim": 64, "output_dim": 10})
    assert "image_shape" not in module.data_info and module.image_layout() == (1, 8, 8)


@pytest.mark.parametrize("override, pattern", [
    ("augment.shift=-1", "augment: need shift >= 0"),
    ("augment.image_shape=[28]", r"image_shape \[\] or \[H, W\] or \[C, H, W\] of positive sizes"),
    ("augment.fill=nan", "fill"),
    ("augment.turn=3", "unknown config key 'augment.turn'"),
])
def test_bad_augment_values_fail_clearly(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_a_round_can_move_images_alone():
    cfg = load_config("configs/debug.yaml", ["data.name=digits", "rounds=[{epochs: 1}, {epochs: 1, augment: {shift: 2}}]"])
    assert round_config(cfg, 0).augment.shift == 0 and round_config(cfg, 1).augment.shift == 2


@pytest.mark.parametrize("args, message", [
    (["augment.shift=1"], "augment.shift=1 moves images, but data 'sine' has no image shape"),
    (["data.name=digits", "augment.shift=1", "augment.image_shape=[4,4]"],
     "augment.image_shape [4, 4] holds 16 values but the network takes 64 inputs"),
    (["rounds=[{epochs: 1}, {epochs: 1, augment: {shift: 1}}]"], "rounds[1]: augment.shift=1 moves images, but data 'sine'"),
])
def test_a_shift_without_fitting_images_fails_before_training(tmp_path, args, message):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "rounds").exists() and not (tmp_path / "checkpoints").exists()


def test_rounds_job_trains_a_round_on_moved_digits(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "data.name=digits",
                   "rounds=[{epochs: 2, reduction: {max_drop: 0.05}}, {epochs: 2, reduce: false, augment: {shift: 1}}]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 1: 2 epochs on widths" in proc.stdout and (tmp_path / "final.ckpt").is_file()
