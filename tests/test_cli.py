"""train.py and reduce.py end to end, as a user runs them."""

import re

import pytest
import torch
from conftest import run_cli


def last_line(proc):
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sine")
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={out}", "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_sine_prints_val_mse_last(sine_run):
    out, proc = sine_run
    assert last_line(proc).startswith("val_mse=")
    float(last_line(proc).split("=")[1])
    assert "neurons per stack: 16/16/8" in proc.stdout
    assert (out / "final.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


def test_train_digits_prints_val_acc_last(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", "data.name=digits", f"out_dir={tmp_path}", "trainer.max_epochs=3",
                   "model.bottleneck=[8,8]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_line(proc).startswith("val_acc=")
    assert float(last_line(proc).split("=")[1]) > 0.5


def test_train_with_wandb_offline_writes_a_run(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", "logger.kind=wandb", f"out_dir={tmp_path}", "trainer.max_epochs=1",
                   env={"WANDB_API_KEY": "", "WANDB_MODE": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "an offline run folder is written"


def test_bad_key_fails_with_message(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", "trainer.max_epoch=3", f"out_dir={tmp_path}")
    assert proc.returncode == 2
    assert "unknown config key 'trainer.max_epoch'" in proc.stderr and "max_epochs" in proc.stderr


def test_reduce_cli_writes_reduced_checkpoint(sine_run, tmp_path):
    out, _ = sine_run
    proc = run_cli("reduce.py", str(out / "final.ckpt"), "reduce.tolerances=[0.01,0.01,0.01]", "reduce.clusters=[4,4,2]",
                   f"reduce.output={tmp_path / 'r.ckpt'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster" in proc.stdout and "train MSE" in proc.stdout
    from lightning_stacks.module import StackModule

    m = StackModule.load_from_checkpoint(tmp_path / "r.ckpt")
    assert all(n <= k for n, k in zip(m.net.widths, [4, 4, 2], strict=True))
    assert (tmp_path / "r.json").is_file()
    assert m(torch.zeros(3, 1)).shape == (3, 7)


@pytest.mark.parametrize("args,pattern", [
    (["reduce.tolerances=[1,-1,1]"], "reduce.tolerances must all be >= 0"),
    (["reduce.clusters=[4,4,99]"], "clusters for stack 3 is 99 > its 8 neurons"),
    (["reduce.max_drop=1.5"], r"reduce.max_drop must be in \[0, 1\]"),
    (["data.name=digits"], r"data 'digits' needs 64 -> 10"),
    (["reduce.tolerance=[1,1,1]"], "unknown config key 'reduce.tolerance'"),
])
def test_reduce_cli_bad_arguments(sine_run, args, pattern):
    out, _ = sine_run
    proc = run_cli("reduce.py", str(out / "final.ckpt"), *args)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert re.search(pattern, proc.stderr), proc.stderr[-2000:]


def test_reduce_cli_refuses_non_checkpoint(tmp_path):
    junk = tmp_path / "x.ckpt"
    junk.write_text("hello")
    proc = run_cli("reduce.py", str(junk))
    assert proc.returncode == 2 and "not a readable PyTorch checkpoint" in proc.stderr


def test_resume_single_fit_from_last(tmp_path):
    import torch as _t

    a = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "trainer.max_epochs=2")
    assert a.returncode == 0, a.stderr[-3000:]
    steps_a = _t.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    b = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "trainer.max_epochs=3", "ckpt_path=last")
    assert b.returncode == 0, b.stderr[-3000:]
    assert "[train] resuming the fit from" in b.stdout
    ckpt = _t.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == steps_a + 2  # restored, then one epoch of 256/128 batches


def test_missing_resume_checkpoint_is_named(tmp_path):
    proc = run_cli("train.py", "configs/debug.yaml", f"out_dir={tmp_path}", "ckpt_path=last")
    assert proc.returncode == 2 and "ckpt_path 'last' does not exist" in proc.stderr


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_default_job_is_a_quiet_retrain_reduce_run(tmp_path, processes):
    """The no-argument job (shrunk here), in one process and in two (DDP on CPU): train, reduce,
    fine-tune, reduce; the tables and the summary line; no warning of any library on stdout or
    stderr (a warning shows as ``<file>.py:<line>: <message>``, Lightning's as plain advice)."""
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"] if processes == 2 else []
    proc = run_cli("train.py", f"out_dir={tmp_path}", "trainer.max_epochs=6", "model.widths=[64,64,64]",
                   "data.n_train=400", "data.n_val=200", "data.n_test=200", "logger.kind=wandb", *ddp,
                   env={"WANDB_API_KEY": "", "WANDB_MODE": ""}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "reduction 1 of 2 (round 0)" in out and "reduction 2 of 2 (round 1)" in out
    summary = next(line for line in out.splitlines() if line.startswith("neurons 192 -> "))
    assert "val mse" in summary and "x fewer" in summary or "all removed" in summary
    assert f"report: {tmp_path}/reduction_report.json" in out
    assert out.strip().splitlines()[-1].startswith("val_mse=")
    noise = [line for line in (out + proc.stderr).splitlines()
             if "warn" in line.lower() or "Tip:" in line or "deprecated" in line.lower() or "recommended" in line.lower()
             or re.search(r"\.py:\d+: ", line)]
    assert not noise, noise
