"""``trainer.cuda_graphs``: StackModule's whole training step replayed as one CUDA graph.

Everywhere: the refusals (config, Trainer, the real CLI), the graph machinery's functional core,
and a rehearsal of a graphed fit with an eager stand-in for the CUDA graph (capturing runs the
step once, replaying runs it again into the same output tensors), so that everything around the
graph (manual optimization, Lightning's step count and logging, the warm-up undone, static inputs,
learning rates and l2 coefficients as tensors, re-capture, the eager last batch) is checked
against the eager fit on a CPU. Where CUDA is, the same comparisons run with real CUDA graphs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import run_cli
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

from lightning_stacks import graphed_step
from lightning_stacks import module as module_file
from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.data import build_datamodule
from lightning_stacks.graphed_step import (
    Binding,
    GraphedStep,
    batch_signature,
    carry_step_count,
    make_capturable,
    restore,
    set_lr,
    snapshot,
    trainer_refusal,
)
from lightning_stacks.module import StackModule
from lightning_stacks.training import build_trainer, follow_schedule

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
NEEDS_CUDA = "trainer.cuda_graphs=true needs a CUDA device"


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("override,match", [
    ("trainer.accelerator=cpu", NEEDS_CUDA + "; this fit runs on cpu"),
    ("trainer.strategy=ddp", "needs a single device, not trainer.strategy=ddp"),
    ("trainer.devices=2", "needs a single device, not trainer.devices=2"),
    ("trainer.devices=0,1", "needs a single device, not trainer.devices=0,1"),
    ("trainer.num_nodes=2", "needs a single device, not trainer.num_nodes=2"),
    ("trainer.precision=16-mixed", "needs trainer.precision=32-true, not 16-mixed"),
    ("trainer.precision=bf16-true", "needs trainer.precision=32-true, not bf16-true"),
    ("trainer.gradient_clip_val=1.0", r"cannot clip gradients \(trainer.gradient_clip_val=1.0\)"),
    ("trainer.compile=default", r"set trainer.compile=none \(not default\)"),
    ("pruning.sparsity=0.5", "cannot follow pruning's masks"),
])
def test_config_refuses_what_a_graph_cannot_replay(override, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(None, ["trainer.cuda_graphs=true", override])
    assert "\n" not in str(err.value) and "trainer.cuda_graphs=false" in str(err.value)
    load_config(None, [override])  # the same setting without graphs is fine


def test_config_accepts_what_only_the_trainer_can_settle():
    cfg = load_config(None, ["trainer.cuda_graphs=true", "trainer.precision=32", "trainer.devices=1"])
    assert cfg.trainer.cuda_graphs is True
    assert load_config(None, []).trainer.cuda_graphs is False


def fake_trainer(strategy=None, callbacks=(), **over):
    """What trainer_refusal reads of a Trainer, on a CUDA device (no GPU needed to build it)."""
    values = dict(strategy=strategy or SingleDeviceStrategy(torch.device("cuda", 0)), num_devices=1, num_nodes=1,
                  precision="32-true", gradient_clip_val=None, accumulate_grad_batches=1, callbacks=list(callbacks),
                  lightning_module=None)
    return SimpleNamespace(**{**values, **over})


class StepHook(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        pass


@pytest.mark.parametrize("trainer,match", [
    (fake_trainer(strategy=SingleDeviceStrategy(torch.device("cpu"))), NEEDS_CUDA + "; this fit runs on cpu"),
    (fake_trainer(strategy=DDPStrategy(parallel_devices=[torch.device("cuda", 0), torch.device("cuda", 1)]), num_devices=2),
     r"needs a single device, not DDPStrategy on 2 device\(s\)"),
    (fake_trainer(precision="16-mixed"), "needs trainer.precision=32-true, not 16-mixed"),
    (fake_trainer(gradient_clip_val=0.5), r"cannot clip gradients \(trainer.gradient_clip_val=0.5\)"),
    (fake_trainer(accumulate_grad_batches=4), r"drop Trainer\(accumulate_grad_batches=4\)"),
    (fake_trainer(callbacks=[StepHook()]), "never calls StepHook.on_before_optimizer_step"),
])
def test_the_trainer_is_refused_with_one_line(trainer, match):
    with pytest.raises(ConfigError, match=match):
        graphed_step.check_trainer(trainer, "none")
    assert trainer_refusal(fake_trainer(), "none") is None
    assert "trainer.compile=none" in trainer_refusal(fake_trainer(), "default")


def test_a_cpu_fit_is_refused_in_setup_before_any_step(tmp_path):
    cfg = load_config(None, ["trainer.cuda_graphs=true", "model.widths=[8,4]", "model.bottleneck=[2]", "trainer.max_epochs=1"])
    module = StackModule(to_container(cfg))
    before = [p.detach().clone() for p in module.parameters()]
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=NEEDS_CUDA + "; this fit runs on cpu"):
        trainer.fit(module, datamodule=build_datamodule(cfg.data, seed=0))
    assert trainer.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True)), "nothing trained"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_build_trainer_refuses_a_machine_without_cuda(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "trainer.cuda_graphs=true", "logger.kind=none"])
    with pytest.raises(ConfigError, match=NEEDS_CUDA + "; this machine has none"):
        build_trainer(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the job would train")
def test_cli_refuses_cuda_graphs_without_cuda_and_trains_nothing(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={out}", "trainer.cuda_graphs=true", "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {NEEDS_CUDA}; this machine has none") and "trainer.cuda_graphs=false" in lines[-1]
    assert not (out / "final.ckpt").exists() and not (out / "checkpoints").exists()


def test_cli_refuses_a_precision_a_graph_cannot_replay(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={out}", "trainer.cuda_graphs=true",
                   "trainer.precision=16-mixed", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: trainer.cuda_graphs=true needs trainer.precision=32-true, "
                                                    "not 16-mixed: set it, or set trainer.cuda_graphs=false")
    assert not (out / "final.ckpt").exists()


# --------------------------------------------------------------------------- functional core
def adam_on(params, **kw):
    return torch.optim.Adam([{"params": params, "lr": 0.01}], **kw)


def loss_step(opt, params):
    opt.zero_grad()
    sum((p - 1).pow(2).sum() for p in params).backward()
    opt.step()


def test_restore_undoes_the_warm_up_so_the_next_step_is_the_first():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, fresh = adam_on(params), adam_on(twins)
    saved = snapshot(opt)  # no state yet: the warm-up creates it
    for _ in range(3):
        loss_step(opt, params)
    state_tensors = [opt.state[p]["exp_avg"] for p in params]
    restore(saved, opt)
    assert all(torch.equal(p, t) for p, t in zip(params, twins, strict=True))
    assert all(not v.any() for p in params for v in opt.state[p].values()), "state made by the warm-up starts at zero"
    assert [opt.state[p]["exp_avg"] for p in params] == state_tensors, "the same tensors (a graph reads them)"
    loss_step(opt, params)
    loss_step(fresh, twins)
    for p, t in zip(params, twins, strict=True):
        torch.testing.assert_close(p, t, rtol=0, atol=0)
    saved = snapshot(opt)  # with state: it comes back as it was
    steps = {p: opt.state[p]["step"].clone() for p in params}
    loss_step(opt, params)
    restore(saved, opt)
    assert all(torch.equal(opt.state[p]["step"], steps[p]) for p in params)


def test_learning_rates_become_tensors_filled_in_place():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = adam_on([p])
    make_capturable(opt, capturable=False)
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.dim() == 0 and lr.dtype == torch.float32 and float(lr) == pytest.approx(0.01)
    set_lr(opt.param_groups[0], 0.005)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.005)
    group = {"lr": 0.1}
    set_lr(group, 0.2)
    assert group["lr"] == 0.2
    make_capturable(opt, capturable=True)  # flags and a float32 step on the parameter's device (not stepped here)
    assert opt.param_groups[0]["lr"] is lr and opt.param_groups[0]["capturable"] and opt.param_groups[0]["fused"]


def test_a_binding_notices_every_reallocation():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    opt = adam_on(params)
    loss_step(opt, params)
    make_capturable(opt, capturable=False)
    x, y = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    assert batch_signature(x, y) != batch_signature(x[:4], y[:4])
    binding = Binding.of(opt, batch_signature(x, y))
    assert binding.holds(opt) and not binding.holds(adam_on(params))
    opt.state[params[0]]["exp_avg"] = opt.state[params[0]]["exp_avg"].clone()  # e.g. a loaded checkpoint
    assert not binding.holds(opt)
    binding = Binding.of(opt, batch_signature(x, y))
    params[1].data = params[1].data.clone()  # e.g. a device move: same Parameter, new memory
    assert not binding.holds(opt)
    binding = Binding.of(opt, batch_signature(x, y))
    opt.param_groups[0]["lr"] = 0.01  # a float baked in instead of the tensor
    assert not binding.holds(opt)


def test_the_step_count_carries_over_from_the_other_optimization_mode():
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loop = trainer.fit_loop.epoch_loop
    loop.automatic_optimization.optim_progress.optimizer.step.total.completed = 7
    carry_step_count(trainer, manual=True)
    assert loop.manual_optimization.optim_step_progress.total.completed == 7
    loop.manual_optimization.optim_step_progress.total.completed = 9
    carry_step_count(trainer, manual=False)
    assert loop.automatic_optimization.optim_progress.optimizer.step.total.completed == 9


# --------------------------------------------------------------------------- graphed fits
class EagerGraphs:
    """The stand-in for :class:`~lightning_stacks.graphed_step.CudaGraphs` on a CPU: "capturing"
    runs the step once (the graph's first replay), replaying runs it again into the same outputs."""

    optimizer_options: dict = {}
    capturable = False

    def side_stream(self, device):
        return contextlib.nullcontext()

    def capture(self, step, device):
        outputs = step()
        return {"step": step, "outputs": outputs, "fresh": True}, outputs

    def replay(self, handle):
        if handle["fresh"]:
            handle["fresh"] = False
            return
        for key, value in handle["step"]().items():
            handle["outputs"][key].copy_(value)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def graphs_on(request, monkeypatch):
    """Where graphed fits run: ``cpu`` (the eager stand-in, the Trainer's checks skipped) or
    ``cuda`` (real CUDA graphs)."""
    if request.param == "cpu":
        monkeypatch.setattr(graphed_step, "CudaGraphs", EagerGraphs)
        monkeypatch.setattr(module_file, "check_trainer", lambda *args, **kwargs: None)
    return request.param


class MemoryLogger(Logger):
    """Every (step, metrics) row Lightning sends to a logger."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name, version = "memory", 0

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


class Record(pl.Callback):
    """Each step's loss and batch size; per epoch the graphs captured so far."""

    def __init__(self):
        self.losses, self.batch_sizes, self.captures = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.batch_sizes.append(batch[0].shape[0])

    def on_train_epoch_end(self, trainer, pl_module):
        graphed = pl_module._graphed
        self.captures.append(None if graphed is None else graphed.captures)


@dataclass
class Fit:
    module: StackModule
    record: Record
    logger: MemoryLogger
    trainer: pl.Trainer


SMALL = ["model.widths=[16,8]", "model.bottleneck=[4]", "trainer.max_epochs=4", "schedule.warmup_epochs=1",
         "schedule.l2_start=1e-4", "schedule.l2_end=1e-3", "schedule.lr_end_mult=0.5", "logger.kind=none"]
SINE = ["data.n_train=200", "data.n_val=64", "data.n_test=64", "schedule.batch_start=32", "schedule.batch_end=64"]
CASES = {  # 200 or 1257 training rows: every epoch ends with a smaller batch
    "sine, growing batches, in-fit reduction": (SINE, True, False),
    "sine, distillation": ([*SINE, "distill.weight=0.5"], False, True),
    "digits, shifted images": (["data.name=digits", "augment.shift=1", "schedule.batch_start=128",
                                "schedule.batch_end=256"], False, False),
}


def teacher_for(cfg) -> StackModule:
    torch.manual_seed(123)
    return StackModule(to_container(load_config(None, [f"data.name={cfg.data.name}", "model.widths=[8,8]", "model.bottleneck=[3]"])))


def graphed_fit(tmp_path, graphs: bool, device: str, overrides, reduce_at=(), teacher=False) -> Fit:
    pl.seed_everything(0)
    cfg = load_config(None, [*SMALL, *overrides, f"trainer.cuda_graphs={str(graphs).lower()}"])
    module = StackModule(to_container(cfg))
    if teacher:
        module.set_teacher(teacher_for(cfg))
    dm = build_datamodule(cfg.data, seed=cfg.seed)
    follow_schedule(dm, module)
    record, logger = Record(), MemoryLogger()
    callbacks = [record]
    if reduce_at:  # manual mode, fixed cluster counts, on the CPU: the same decisions in both fits
        callbacks.insert(0, ReductionCallback(at_epochs=list(reduce_at), at_end=False, clusters=[6, 4], optimizer_state="carry",
                                              device="cpu", verbose=False, report_path=None))
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                         logger=logger, log_every_n_steps=2, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path / ("graphed" if graphs else "eager")), callbacks=callbacks)
    trainer.fit(module, datamodule=dm)
    return Fit(module, record, logger, trainer)


def assert_same_fit(eager: Fit, graphed: Fit, rtol=1e-5, atol=1e-6):
    assert graphed.record.batch_sizes == eager.record.batch_sizes
    assert graphed.trainer.global_step == eager.trainer.global_step == len(eager.record.losses)
    torch.testing.assert_close(torch.tensor(graphed.record.losses), torch.tensor(eager.record.losses), rtol=rtol, atol=atol)
    assert graphed.module.net.widths == eager.module.net.widths
    want = eager.module.net.state_dict()
    for name, value in graphed.module.net.state_dict().items():
        torch.testing.assert_close(value, want[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    assert [step for step, _ in graphed.logger.rows] == [step for step, _ in eager.logger.rows], "logged on the same steps"
    for (step, got), (_, row) in zip(graphed.logger.rows, eager.logger.rows, strict=True):
        assert set(got) == set(row), step
        for key, value in row.items():
            assert got[key] == pytest.approx(value, rel=rtol, abs=atol), (step, key)


@pytest.mark.parametrize("case", list(CASES))
def test_graphed_fit_equals_the_eager_fit(tmp_path, graphs_on, case):
    overrides, reduce, teacher = CASES[case]
    reduce_at = [2] if reduce else []
    eager = graphed_fit(tmp_path, False, graphs_on, overrides, reduce_at, teacher)
    graphed = graphed_fit(tmp_path, True, graphs_on, overrides, reduce_at, teacher)
    assert not graphed.module.automatic_optimization and eager.module.automatic_optimization
    assert len(set(eager.record.batch_sizes)) >= 3, "full batches of more than one size and smaller last batches"
    if reduce:
        assert sum(eager.module.net.widths) < 24, "the reduction ran inside the fit"
    assert_same_fit(eager, graphed)
    logged = {key for _, row in graphed.logger.rows for key in row}
    assert "train/loss" in logged and "train/l2" in logged and ("train/distill" in logged) == teacher
    assert graphed.module._l2_feed is None, "the graph's tensors go with the fit"


def test_graph_is_captured_again_after_the_reduction_only(tmp_path, graphs_on):
    constant = ["data.n_train=192", "data.n_val=64", "data.n_test=64", "schedule.batch_start=32", "schedule.batch_end=32"]
    graphed = graphed_fit(tmp_path, True, graphs_on, constant, reduce_at=[2])
    assert set(graphed.record.batch_sizes) == {32}
    assert graphed.record.captures == [1, 1, 2, 2], "one capture, then one after the reduction at epoch 2"
    assert graphed.module.net.widths != [16, 8]
    eager = graphed_fit(tmp_path, False, graphs_on, constant, reduce_at=[2])
    assert_same_fit(eager, graphed)


@needs_cuda
def test_graph_binds_the_reduced_parameters_and_a_device_move_recaptures():
    cfg = load_config(None, [*SMALL, *SINE, "trainer.cuda_graphs=true"])
    module = StackModule(to_container(cfg)).cuda()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True, capturable=True)
    step = GraphedStep()
    counted = []
    lightning_opt = SimpleNamespace(optimizer=opt, _on_before_step=lambda: counted.append(1), _on_after_step=lambda: None)
    x, y = torch.rand(32, 1, device="cuda"), torch.randn(32, module.net.output_dim, device="cuda")
    for i in range(3):
        out = step.step(lightning_opt, module.loss_parts, x, y, first=i == 0)
    assert step.captures == 1 and len(counted) == 3 and out["loss"].isfinite()
    assert step.step(lightning_opt, module.loss_parts, x[:8], y[:8], first=False) is None, "the smaller batch runs eagerly"
    assert [id(p) for p in step.bound_parameters] == [id(p) for p in module.parameters()]
    old = [p.data for p in module.parameters()]  # held: the move cannot land on the same addresses
    module.cpu().cuda()  # same Parameters, new memory (Adam's state stays where it was)
    step.step(lightning_opt, module.loss_parts, x, y, first=False)
    assert step.captures == 2 and all(p.data_ptr() != o.data_ptr() for p, o in zip(module.parameters(), old, strict=True))
