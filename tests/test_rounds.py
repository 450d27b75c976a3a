"""Retrain-reduce rounds: DDP consistency, resume, optimizer after reduction, WandB history."""

from pathlib import Path

import pytest
import torch
from conftest import run_cli

from lightning_stacks.checkpoint import read_checkpoint
from lightning_stacks.config import load_config, to_container

ROUNDS = ("rounds=[{epochs: 2, reduction: {tolerances: [0.001,0.001,0.001], clusters: [8,8,4]}},"
          " {epochs: 2, reduction: {max_drop: 0.05, refit: true}}]")
ROUND0 = "rounds=[{epochs: 2, reduction: {tolerances: [0.001,0.001,0.001], clusters: [8,8,4]}}]"


def widths_history(ckpt: Path) -> list:
    hp = read_checkpoint(ckpt)["hyper_parameters"]
    return [[s["widths"] for s in rep["steps"]] for rep in hp["history"]]


@pytest.mark.slow
def test_ddp_two_processes_two_rounds_identical_models(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.strategy=ddp", ROUNDS, "logger.kind=csv")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for i in (0, 1):
        sums = [(tmp_path / "rounds" / f"round_{i}.rank{r}.sha256").read_text() for r in (0, 1)]
        assert sums[0] == sums[1], f"ranks differ after round {i}: {sums}"
    assert len(widths_history(tmp_path / "final.ckpt")) == 2  # both rounds reduced
    assert proc.stdout.strip().splitlines()[-1].startswith("val_mse=")  # round 2 finished


@pytest.mark.slow
def test_ddp_within_revert_and_distillation_keep_ranks_identical(tmp_path):
    # round 1 diverges (absurd LR) and is rejected by its guard: rank 0 decides and rewrites
    # round_1.ckpt, every rank loads it; round 2 distills from the full network on both ranks
    rounds = ("rounds=[{epochs: 2, reduction: {max_drop: 0.05}}, {epochs: 2, reduce: false, within: 0.05, optim: {lr: 5.0}},"
              " {epochs: 2, reduction: {max_drop: 0.05}, distill: {weight: 0.5}}]")
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "trainer.accelerator=cpu",
                   "trainer.devices=2", "trainer.strategy=ddp", rounds)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "going on from round 0's network" in proc.stdout and "distilling (weight 0.5)" in proc.stdout
    for i in (0, 1, 2):
        sums = [(tmp_path / "rounds" / f"round_{i}.rank{r}.sha256").read_text() for r in (0, 1)]
        assert sums[0] == sums[1], f"ranks differ after round {i}: {sums}"
    assert (tmp_path / "rounds" / "round_1.rank0.sha256").read_text() == (tmp_path / "rounds" / "round_0.rank0.sha256").read_text()


def test_resume_after_round_one_equals_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    a = run_cli("train.py", "configs/debug.yaml", f"out_dir={whole}", ROUNDS)
    assert a.returncode == 0, a.stderr[-3000:]
    # a job stopped after round 0's reduction (its checkpoint written), then restarted with the
    # full round list: round 0 must not be redone, round 1 must run on the reduced shapes
    b1 = run_cli("train.py", "configs/debug.yaml", f"out_dir={parts}", ROUND0)
    assert b1.returncode == 0, b1.stderr[-3000:]
    reduced = read_checkpoint(parts / "rounds" / "round_0.ckpt")["hyper_parameters"]["architecture"]["widths"]
    b2 = run_cli("train.py", "configs/debug.yaml", f"out_dir={parts}", ROUNDS)
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resuming after round 0" in b2.stdout and f"round 1: 2 epochs on widths {reduced}" in b2.stdout
    assert "round 0:" not in b2.stdout
    assert widths_history(parts / "final.ckpt") == widths_history(whole / "final.ckpt")
    sa, sb = (read_checkpoint(p / "final.ckpt")["state_dict"] for p in (whole, parts))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])
    # rerunning a finished job does nothing new (and exits cleanly), a config with fewer rounds is refused
    again = run_cli("train.py", "configs/debug.yaml", f"out_dir={parts}", ROUNDS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "all 2 rounds had already finished" in again.stdout and "round 1:" not in again.stdout
    assert widths_history(parts / "final.ckpt") == widths_history(whole / "final.ckpt")
    c = run_cli("train.py", "configs/debug.yaml", f"out_dir={parts}", ROUND0)
    assert c.returncode == 2 and "already holds round 1" in c.stderr


def test_round_settings_are_checked_before_training(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}",
                   "rounds=[{epochs: 2, reduction: {clusters: [99, 4, 4]}}]")
    assert proc.returncode == 2
    assert "rounds[0] (widths now [16, 16, 8]): clusters for stack 1 is 99 > its 16 neurons" in proc.stderr
    assert not (tmp_path / "rounds" / "round_0" / "last.ckpt").exists(), "nothing was trained"


def test_optimizer_after_reduction_holds_exactly_live_parameters(tmp_path):
    import pytorch_lightning as pl

    from lightning_stacks.callbacks import ReductionCallback
    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.training import build_trainer

    cfg = load_config(None, ["model.widths=[16,16,8]", "data.n_train=256", "trainer.max_epochs=2", f"out_dir={tmp_path}",
                             "logger.kind=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                             "schedule.warmup_epochs=0", "schedule.l2_start=1e-3", "schedule.l2_end=1e-3",
                             "reduce.tolerances=[0.001,0.001,0.001]", "reduce.clusters=[6,6,3]"])
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, module.schedule)
    cb = ReductionCallback.from_config(cfg.reduce, round_index=0, verbose=False, report_path=None)
    build_trainer(cfg, callbacks=[cb], logger=False).fit(module, datamodule=dm)
    assert cb.done and module.net.widths != [16, 16, 8] and len(module.history) == 1

    class Probe(pl.Callback):
        def on_train_start(self, trainer, m):
            self.opt_ids = [id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]]
            self.groups = {g["name"]: [p.detach().clone() for p in g["params"]] for g in trainer.optimizers[0].param_groups}
            self.live = {g["name"]: g["params"] for g in trainer.optimizers[0].param_groups}

    probe = Probe()
    build_trainer(cfg, callbacks=[probe], logger=False).fit(module, datamodule=dm)
    assert sorted(probe.opt_ids) == sorted(id(p) for p in module.parameters())
    assert len(probe.opt_ids) == len(set(probe.opt_ids))
    for name, before in probe.groups.items():
        changed = [not torch.equal(b, p.detach()) for b, p in zip(before, probe.live[name], strict=True) if b.numel()]
        assert any(changed), f"param group {name} did not train after the reduction"


def test_wandb_offline_run_records_every_reduction_step(tmp_path):
    from lightning_stacks.wandb_offline import history

    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", ROUNDS, "logger.kind=wandb",
                   "trainer.log_every_n_steps=1", env={"WANDB_API_KEY": "", "WANDB_MODE": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    rows = history(run_files[0])
    red = [r for r in rows if "reduce/neurons/stack_1" in r]
    assert [(r["reduce/round"], r["reduce/step"]) for r in red] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    for r in red:
        assert {"reduce/neurons/stack_2", "reduce/neurons/stack_3", "reduce/neurons/total", "reduce/params",
                "reduce/train_metric", "reduce/test_metric", "reduce/max_output_change"} <= set(r)
    steps = [r["trainer/global_step"] for r in rows if "trainer/global_step" in r]
    assert steps == sorted(steps) and steps[-1] > steps[0]
    assert any("train/loss" in r for r in rows)
    assert any("final/val_mse" in r for r in rows)
    for i in (0, 1):  # the paper-style table per round, one row per reduction step
        tables = [r for r in rows if f"reduce/table_round_{i}/_type" in r]
        assert tables and tables[0][f"reduce/table_round_{i}/_type"] == "table-file"
        assert tables[0][f"reduce/table_round_{i}/nrows"] == 4
        figures = [r for r in rows if f"reduce/figure_round_{i}/_type" in r]  # the 1-D sine network is plotted
        assert figures and figures[0][f"reduce/figure_round_{i}/_type"] == "images/separated"
        assert (tmp_path / "figures" / f"round_{i}.png").is_file()


@pytest.mark.slow
def test_killed_mid_round_resumes_from_its_last_epoch(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    args = [sys.executable, str(ROOT / "train.py"), "configs/debug.yaml", f"out_dir={tmp_path}", "data.n_train=6000",
            "schedule.batch_start=16", "schedule.batch_end=16", "rounds=[{epochs: 30, reduction: {tolerances: [0,0,0]}}]"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "WANDB_MODE": "offline"})
    last = tmp_path / "rounds" / "round_0" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "an epoch checkpoint is written during the round"
    epoch = torch.load(last, weights_only=False)["epoch"]
    assert epoch < 29, "killed before the round finished"
    again = run_cli("train.py", *args[2:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(resuming" in again.stdout
    assert (tmp_path / "rounds" / "round_0.ckpt").is_file()


@pytest.mark.parametrize("mode", ["reset", "carry"])
def test_optimizer_state_after_reduction(tmp_path, mode):
    import pytorch_lightning as pl

    from lightning_stacks.callbacks import ReductionCallback
    from lightning_stacks.data import build_datamodule
    from lightning_stacks.module import StackModule
    from lightning_stacks.training import build_trainer

    cfg = load_config(None, ["model.widths=[16,16,8]", "data.n_train=256", "trainer.max_epochs=2", f"out_dir={tmp_path}",
                             "logger.kind=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
                             "reduce.tolerances=[0.001,0.001,0.001]", "reduce.clusters=[12,12,6]",
                             f"reduce.optimizer_state={mode}"])
    module = StackModule(to_container(cfg))
    dm = build_datamodule(cfg.data, module.schedule)

    class Before(pl.Callback):  # runs before the reduction callback (list order)
        def on_train_end(self, trainer, m):
            opt = trainer.optimizers[0]
            self.state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in m.net.named_parameters()}

    before = Before()
    cb = ReductionCallback.from_config(cfg.reduce, round_index=0, verbose=False, report_path=None)
    build_trainer(cfg, callbacks=[before, cb], logger=False).fit(module, datamodule=dm)
    kept = cb.report["kept_ids"]

    class After(pl.Callback):
        def on_train_start(self, trainer, m):
            opt = trainer.optimizers[0]
            self.state = {n: {k: v.clone() for k, v in opt.state.get(p, {}).items()} for n, p in m.net.named_parameters()}

    after = After()
    build_trainer(cfg, callbacks=[after], logger=False).fit(module, datamodule=dm)
    if mode == "reset":
        assert all(not s for s in after.state.values())
        return
    survived = 0
    for j, ids in enumerate(kept):
        old, new = before.state[f"stacks.{j}.V.weight"]["exp_avg"], after.state[f"stacks.{j}.V.weight"]["exp_avg"]
        oldw, neww = before.state[f"stacks.{j}.W.weight"]["exp_avg"], after.state[f"stacks.{j}.W.weight"]["exp_avg"]
        for i, src in enumerate(ids):
            if src >= 0:
                survived += 1
                torch.testing.assert_close(new[i], old[src])
                torch.testing.assert_close(neww[:, i], oldw[:, src])
            else:
                assert torch.all(new[i] == 0)
        torch.testing.assert_close(after.state[f"stacks.{j}.W.bias"]["exp_avg"], before.state[f"stacks.{j}.W.bias"]["exp_avg"])
    assert survived > 0


def test_round_ending_outside_within_goes_on_from_the_last_round_within(tmp_path):
    # round 1 trains with an absurd learning rate: its network ends far from the full network's
    # train MSE, so the job continues from round 0's network; round 2 then fine-tunes that one
    rounds = ("rounds=[{epochs: 2, reduction: {max_drop: 0.05}}, {epochs: 2, reduce: false, within: 0.05, optim: {lr: 5.0}},"
              " {epochs: 1, reduce: false, within: 1.0, optim: {lr: 1.0e-9}}]")
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", rounds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "more than within=0.05: going on from round 0's network" in proc.stdout, proc.stdout[-3000:]
    assert "round 2 ends within 1 of the full network" in proc.stdout
    rounds_dir = tmp_path / "rounds"
    r0, r1, rejected = (read_checkpoint(rounds_dir / name) for name in ("round_0.ckpt", "round_1.ckpt", "round_1.rejected.ckpt"))
    assert r1["reverted_to"] == 0 and r1["round"] == 1
    for k in r0["state_dict"]:
        torch.testing.assert_close(r1["state_dict"][k], r0["state_dict"][k])
    assert any(not torch.equal(rejected["state_dict"][k], r0["state_dict"][k]) for k in r0["state_dict"])
    final = read_checkpoint(tmp_path / "final.ckpt")["state_dict"]  # round 2 at lr 1e-9: round 0's weights, barely moved
    for k in r0["state_dict"]:
        torch.testing.assert_close(final[k], r0["state_dict"][k], atol=1e-6, rtol=0)
    # a rerun resumes after round 2 with the reverted history, nothing is redone
    again = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", rounds)
    assert again.returncode == 0 and "all 3 rounds had already finished" in again.stdout


def test_within_out_of_range_is_refused(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "rounds=[{epochs: 1}, {epochs: 1, within: 2}]")
    assert proc.returncode == 2 and "rounds[1].within must be in [0, 1] (or -1 = no check), got 2.0" in proc.stderr
    assert not (tmp_path / "rounds").exists()


def test_wandb_dashboard_curves_staircase_summary_and_flat_config(tmp_path):
    """What a dashboard shows: the training metric and the neuron counts at every logging step,
    the reduction steps at their own, strictly later steps (one axis across rounds), the final
    figures in the run summary, and the job's config once, flat."""
    from lightning_stacks.wandb_offline import config, history, summary

    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", ROUNDS, "logger.kind=wandb",
                   env={"WANDB_API_KEY": "", "WANDB_MODE": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_file = next(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    rows = [r for r in history(run_file) if "trainer/global_step" in r]
    steps = [r["trainer/global_step"] for r in rows if "neurons/total" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "every neuron count has its own, growing step"
    train = [r for r in rows if "train/mse" in r]
    assert train and all({"neurons/total", "neurons/stack_1", "neurons/stack_3", "train/loss"} <= set(r) for r in train)
    red = [r for r in rows if "reduce/step" in r]
    assert len(red) == 8 and len({r["trainer/global_step"] for r in red}) == 8
    totals = [r["neurons/total"] for r in rows if "neurons/total" in r]
    assert totals[0] == 40 and totals[-1] < 40 and totals == sorted(totals, reverse=True), "a staircase down"
    s = summary(run_file)
    assert s["final/neurons"] == totals[-1] and s["final/neurons_before"] == 40 and s["final/compression"] > 1
    assert {"final/val_mse", "final/params", "final/architecture"} <= set(s)
    c = config(run_file)
    assert c["model.widths"] == [16, 16, 8] and "rounds" in c and not any(k in c for k in ("config", "architecture", "history"))
