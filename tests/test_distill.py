"""Distillation (``distill.*``): fine-tuning toward a frozen teacher network's outputs."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli

from lightning_stacks.checkpoint import read_checkpoint
from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.evaluation import evaluate
from lightning_stacks.module import StackModule, load_module


def make_module(*overrides):
    cfg = load_config(None, ["model.widths=[6,5,4]", "model.bottleneck=[3,2]", *overrides])
    return StackModule(to_container(cfg))


def perturbed_copy(net, scale: float):
    """A teacher that differs from the student: its weights plus Gaussian noise."""
    teacher = copy.deepcopy(net)
    for p in teacher.parameters():
        p.data.add_(scale * torch.randn_like(p))
    return teacher


def test_classification_teacher_loss_is_the_tempered_kl_times_t_squared():
    torch.manual_seed(0)
    module = make_module("data.name=digits", "distill.temperature=3")
    teacher = perturbed_copy(module.net, 0.3)
    module.set_teacher(teacher)
    x = torch.randn(7, 64)
    out = module(x)
    p_t = F.softmax(teacher(x) / 3, 1)
    expected = (p_t * (p_t.log() - F.log_softmax(out / 3, 1))).sum(1).mean() * 9
    torch.testing.assert_close(module.teacher_loss(out, x), expected)
    module.set_teacher(copy.deepcopy(module.net))  # a teacher equal to the student: nothing to learn
    assert module.teacher_loss(module(x), x).abs() < 1e-6


def test_regression_teacher_loss_is_the_summed_squared_distance():
    torch.manual_seed(1)
    module = make_module()
    teacher = perturbed_copy(module.net, 0.3)
    module.set_teacher(teacher)
    x = torch.rand(9, 1)
    out = module(x)
    torch.testing.assert_close(module.teacher_loss(out, x), (out - teacher(x)).pow(2).sum(1).mean())


# training_step is called directly, without a Trainer: Lightning notes that self.log has nowhere to go
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference")
def test_training_step_mixes_label_and_teacher_loss_by_weight():
    torch.manual_seed(2)
    module = make_module("distill.weight=0.25")
    teacher = perturbed_copy(module.net, 0.5)
    module.set_teacher(teacher)
    x, y = torch.rand(16, 1), torch.randn(16, 7)
    out = module(x)
    expected = 0.75 * module.data_loss(out, y) + 0.25 * module.teacher_loss(out, x) + module.l2_penalty()
    torch.testing.assert_close(module.training_step((x, y), 0), expected)
    # the teacher is frozen and no part of the module: not in its parameters, state dict or optimizer
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in module.state_dict())
    ids = {id(p) for g in module.configure_optimizers().param_groups for p in g["params"]}
    assert ids == {id(p) for p in module.net.parameters()}


def test_teacher_of_another_shape_is_refused():
    module = make_module()
    other = make_module("data.name=digits").net
    with pytest.raises(ValueError, match="teacher maps 64 -> 10, the network 1 -> 7"):
        module.set_teacher(other)
    module.cfg = load_config(None, ["distill.weight=0.5"])
    with pytest.raises(RuntimeError, match="no teacher network was set"):
        module.training_step((torch.rand(4, 1), torch.randn(4, 7)), 0)


@pytest.mark.parametrize("override, message", [
    ("distill.weight=1.5", "distill.weight must be in [0, 1]"),
    ("distill.temperature=0", "distill.temperature > 0"),
])
def test_bad_distill_values_fail_clearly(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_rounds_distill_from_the_full_network_of_round_zero(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}",
                   "rounds=[{epochs: 2, reduction: {max_drop: 0.05}}, {epochs: 2, reduce: false, distill: {weight: 0.5}}]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 1: 2 epochs on widths" in proc.stdout and "distilling (weight 0.5)" in proc.stdout
    assert "round 0: 2 epochs on widths [16, 16, 8]\n" in proc.stdout  # round 0 trains on labels alone
    # the default teacher is the network round 0 trained, before its reduction: its metric is the
    # "full" row of the first reduction report
    teacher = tmp_path / "rounds" / "round_0" / "last.ckpt"
    full = load_module(teacher)
    history = read_checkpoint(tmp_path / "final.ckpt")["hyper_parameters"]["history"]
    assert full.net.widths == [16, 16, 8]
    dm_x, dm_y = _train_split(full)
    assert evaluate(full.net, dm_x, dm_y, full.task) == pytest.approx(history[0]["steps"][0]["metrics"]["train"], rel=1e-6)


def test_rounds_distill_from_the_previous_rounds_network(tmp_path):
    """teacher: previous = the network the previous round trained, before its reduction (here
    round 1's, which differs from the full network: round 0 reduced it and round 1 retrained it)."""
    from lightning_stacks.config import round_config
    from lightning_stacks.rounds import teacher_of_round

    rounds = ("rounds=[{epochs: 2, reduction: {max_drop: 0.05}}, {epochs: 2, reduction: {max_drop: 0.05}}, "
              "{epochs: 2, reduce: false, distill: {weight: 0.5, teacher: previous}}]")
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", rounds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "round 2: 2 epochs on widths" in proc.stdout and "distilling (weight 0.5)" in proc.stdout
    cfg = load_config("configs/debug.yaml", [f"out_dir={tmp_path}", rounds])
    rounds_dir = tmp_path / "rounds"
    assert teacher_of_round(round_config(cfg, 2), 2, rounds_dir, rounds_dir / "round_0" / "last.ckpt") == str(rounds_dir / "round_1" / "last.ckpt")
    teacher = load_module(rounds_dir / "round_1" / "last.ckpt")
    history = read_checkpoint(tmp_path / "final.ckpt")["hyper_parameters"]["history"]
    # round 1's trained network is the "full" row of the second reduction, not the first's
    assert teacher.net.widths == history[1]["steps"][0]["widths"] != history[0]["steps"][0]["widths"]
    x, y = _train_split(teacher)
    assert evaluate(teacher.net, x, y, teacher.task) == pytest.approx(history[1]["steps"][0]["metrics"]["train"], rel=1e-6)


def _train_split(module):
    from lightning_stacks.data import build_datamodule

    return build_datamodule(module.cfg.data, seed=module.cfg.seed).split("train")


@pytest.mark.parametrize("args, message", [
    (["rounds=[{epochs: 2, distill: {weight: 0.5}}]"], "rounds[0] trains the full network, so it cannot distill from it"),
    (["rounds=[{epochs: 2}, {epochs: 1, distill: {weight: 0.5, teacher: nowhere.ckpt}}]"],
     "rounds[1]: distill teacher checkpoint 'nowhere.ckpt' does not exist"),
    (["distill.weight=0.5"], "distill.weight > 0 needs a teacher: set distill.teacher=<checkpoint>"),
    (["distill.weight=0.5", "distill.teacher=previous"], "distill.teacher=previous (the previous round's network) is for a round"),
    (["rounds=[{epochs: 2, distill: {weight: 0.5, teacher: previous}}]"],
     "rounds[0]: distill.teacher=previous distills from the previous round's network, but rounds[0] is the first round"),
    (["rounds=[{epochs: 2}, {epochs: 0}, {epochs: 1, distill: {weight: 0.5, teacher: previous}}]"],
     "rounds[2]: distill.teacher=previous distills from the network rounds[1] trains, but rounds[1] trains 0 epochs"),
])
def test_distill_without_a_teacher_fails_before_training(tmp_path, args, message):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "rounds").exists() and not (tmp_path / "checkpoints").exists()


def test_single_fit_distills_from_a_given_checkpoint_of_matching_shape(tmp_path):
    first = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path / 'teacher'}")
    assert first.returncode == 0, first.stderr[-2000:]
    teacher = tmp_path / "teacher" / "final.ckpt"
    student = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path / 'student'}", "model.widths=[4,4,8]",
                      "distill.weight=1", f"distill.teacher={teacher}", "trainer.max_epochs=3")
    assert student.returncode == 0, student.stderr[-2000:]
    digits = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path / 'bad'}", "data.name=digits",
                     "distill.weight=1", f"distill.teacher={teacher}")
    assert digits.returncode == 2 and str(teacher) in digits.stderr, digits.stderr[-2000:]
