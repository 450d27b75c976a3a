"""Bad inputs, hostile files and clumsy reruns: each ends in one clear error (exit code 2 for the
CLIs, a LightningStacksError for the API) or the correct result; nothing is overwritten unasked
and no pickled code runs."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import random
import re
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

from lightning_stacks.errors import LightningStacksError

DEBUG = str(ROOT / "configs" / "debug.yaml")
FAST = ["trainer.max_epochs=1", "data.n_train=64", "data.n_val=32", "data.n_test=32", "logger.kind=none",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.enable_progress_bar=false"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TRAIN, REDUCE = _script("train"), _script("reduce")


def call(script, *args: str) -> tuple[int, str]:
    """Run a CLI's ``main`` in this process; (exit code, stderr). An exception escaping ``main``
    (a traceback for the user) fails the test."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = script.main(list(args))
    return rc, err.getvalue()


def assert_refused(rc: int, stderr: str, pattern: str) -> None:
    """Exit code 2, one ``error: `` line (the last one) matching ``pattern``, no traceback."""
    assert rc == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-2000:]
    assert re.search(pattern, errors[0]), errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Evil:
    """Unpickling this runs ``open(marker, 'w')``: a checkpoint holding it must be refused unread."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny finished run (1 epoch of debug.yaml): its out_dir."""
    out = tmp_path_factory.mktemp("trained") / "run"
    rc, err = call(TRAIN, DEBUG, f"out_dir={out}", *FAST)
    assert rc == 0, err[-3000:]
    return out


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Evil(marker)}, path)
    return path, marker


# --------------------------------------------------------------------------- untrusted checkpoints
@pytest.mark.parametrize("how", ["reduce.py", "load_from_checkpoint", "init_from", "ckpt_path"])
def test_evil_pickle_is_refused_without_running(how, evil, tmp_path):
    path, marker = evil
    if how == "load_from_checkpoint":
        from lightning_stacks.module import StackModule

        with pytest.raises(LightningStacksError, match="only tensors and plain data are loaded, so nothing ran"):
            StackModule.load_from_checkpoint(path)
    else:
        args = {"reduce.py": (REDUCE, str(path)),
                "init_from": (TRAIN, DEBUG, f"out_dir={tmp_path / 'run'}", f"init_from={path}", *FAST),
                "ckpt_path": (TRAIN, DEBUG, f"out_dir={tmp_path / 'run'}", f"ckpt_path={path}", *FAST)}[how]
        assert_refused(*call(*args), r"evil\.ckpt .*refused: it would load the Python object \S*open; .*nothing ran")
    assert not marker.exists(), "the pickle's code ran"


def test_evil_pickle_through_the_real_cli(evil):
    path, marker = evil
    proc = run_cli("reduce.py", str(path), cwd=path.parent)
    assert_refused(proc.returncode, proc.stderr, "nothing ran")
    assert not marker.exists()


@pytest.fixture(scope="module")
def nan_ckpt(trained, tmp_path_factory) -> Path:
    ckpt = torch.load(trained / "final.ckpt", weights_only=True)
    ckpt["state_dict"]["net.stacks.1.V.weight"][0, 0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "nan.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def truncated(trained, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trunc") / "trunc.ckpt"
    path.write_bytes((trained / "final.ckpt").read_bytes()[:1500])
    return path


@pytest.mark.parametrize("what", ["nan", "truncated"])
@pytest.mark.parametrize("how", ["reduce.py", "init_from", "ckpt_path"])
def test_damaged_checkpoints_are_refused(what, how, nan_ckpt, truncated, tmp_path):
    path = {"nan": nan_ckpt, "truncated": truncated}[what]
    pattern = {"nan": r"parameter 'net.stacks.1.V.weight' holds NaN or infinite values.*earlier checkpoint",
               "truncated": r"truncated or damaged"}[what]
    if how == "reduce.py":
        rc, err = call(REDUCE, str(path), f"reduce.output={tmp_path / 'r.ckpt'}")
    else:
        rc, err = call(TRAIN, DEBUG, f"out_dir={tmp_path / 'run'}", f"{how}={path}", *FAST)
    assert_refused(rc, err, pattern)
    assert not (tmp_path / "r.ckpt").exists() and not (tmp_path / "run" / "final.ckpt").exists()


@pytest.mark.parametrize("what", ["nan", "truncated"])
def test_load_from_checkpoint_refuses_damaged_files(what, nan_ckpt, truncated):
    from lightning_stacks.checkpoint import CheckpointError
    from lightning_stacks.module import StackModule

    path, pattern = {"nan": (nan_ckpt, "holds NaN or infinite values"), "truncated": (truncated, "truncated or damaged")}[what]
    with pytest.raises(CheckpointError, match=pattern):
        StackModule.load_from_checkpoint(path)


def test_a_run_and_its_resume_print_no_unsafe_load_warning(trained, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    proc = run_cli("train.py", DEBUG, f"out_dir={out}", "ckpt_path=last", *FAST[1:], "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights_only" not in proc.stderr + proc.stdout
    assert "[train] resuming the fit from" in proc.stdout


# --------------------------------------------------------------------------- nothing overwritten
@pytest.mark.parametrize("output,pattern", [
    ("{ckpt}", r"its reduced checkpoint .* would replace the input checkpoint"),
    ("{dir}/final.json", r"ends in \.json, the name of its report"),
    ("{dir}/same.ckpt", r"its report .*same\.json would replace the input checkpoint"),
    ("{dir}", r"is a folder"),
    ("{ckpt}/x.ckpt", r"lies inside the file"),
])
def test_reduce_refuses_outputs_that_replace_its_input(trained, tmp_path, output, pattern):
    import shutil

    src = tmp_path / ("same.json" if "same" in output else "final.ckpt")
    shutil.copy(trained / "final.ckpt", src)
    before = digest(src)
    rc, err = call(REDUCE, str(src), f"reduce.output={output.format(ckpt=src, dir=tmp_path)}", "reduce.clusters=[2,2,2]")
    assert_refused(rc, err, pattern)
    assert digest(src) == before


def test_reduce_refuses_an_existing_output_unless_overwrite(trained, tmp_path):
    out = tmp_path / "r.ckpt"
    out.write_text("earlier result")
    rc, err = call(REDUCE, str(trained / "final.ckpt"), f"reduce.output={out}", "reduce.clusters=[2,2,2]")
    assert_refused(rc, err, r"r\.ckpt already exists; set overwrite=true")
    assert out.read_text() == "earlier result"
    rc, err = call(REDUCE, str(trained / "final.ckpt"), f"reduce.output={out}", "reduce.clusters=[2,2,2]", "overwrite=true")
    assert rc == 0, err[-2000:]
    assert (tmp_path / "r.json").is_file()
    from lightning_stacks.module import StackModule

    assert all(n <= 2 for n in StackModule.load_from_checkpoint(out).net.widths)


def test_rerun_of_a_finished_fit_is_refused_unless_overwrite(trained, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = digest(out / "final.ckpt")
    assert_refused(*call(TRAIN, DEBUG, f"out_dir={out}", *FAST), r"already holds a finished run .*final\.ckpt.*overwrite=true")
    assert digest(out / "final.ckpt") == before
    (out / "final.ckpt").unlink()  # an interrupted run: only checkpoints/last.ckpt
    assert_refused(*call(TRAIN, DEBUG, f"out_dir={out}", *FAST), r"already holds an interrupted run.*ckpt_path=last")
    rc, err = call(TRAIN, DEBUG, f"out_dir={out}", *FAST, "overwrite=true")
    assert rc == 0, err[-2000:]
    assert (out / "final.ckpt").is_file() and not (out / ".lock").exists()


def test_overwrite_is_not_inherited_from_a_checkpoint(trained, tmp_path):
    """A run trained with overwrite=true stores it in its config; reduce.py must not read it."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert call(TRAIN, DEBUG, f"out_dir={out}", *FAST, "overwrite=true")[0] == 0
    (tmp_path / "r.ckpt").write_text("keep me")
    assert_refused(*call(REDUCE, str(out / "final.ckpt"), f"reduce.output={tmp_path / 'r.ckpt'}"), "already exists")
    assert (tmp_path / "r.ckpt").read_text() == "keep me"


def test_a_second_job_on_a_locked_out_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this live process holds it
    proc = run_cli("train.py", DEBUG, f"out_dir={out}", *FAST, cwd=tmp_path)
    assert_refused(proc.returncode, proc.stderr, rf"out_dir '.*run' is in use by another job \(process {os.getpid()} on host")
    assert (out / ".lock").read_text().startswith(str(os.getpid())) and not (out / "checkpoints").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    from lightning_stacks.rundir import out_dir_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".lock"
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")
    with out_dir_lock(tmp_path) as held:
        assert held == lock and lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()
    assert "taking over the lock" in capsys.readouterr().err


def test_temp_checkpoint_names_are_per_process(tmp_path):
    from lightning_stacks.atomic import atomic_save

    atomic_save({"a": 1}, tmp_path / "x.ckpt")
    src = (ROOT / "lightning_stacks" / "checkpoint.py").read_text()  # AtomicLastCheckpoint
    assert "tmp{os.getpid()}" in src and sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


# --------------------------------------------------------------------------- refused up front
@pytest.mark.parametrize("args,pattern", [
    (["model.widths=[1,2"], r"override 'model.widths=\[1,2': the value is not valid YAML"),
    (["widths"], r"'widths' is not a key=value override"),
    (["=3"], r"override '=3' is not of the form key=value"),
    (["optim.lr=nan"], r"optim.lr must be a finite number, got nan"),
    (["optim.lr=.inf"], r"optim.lr must be a finite number, got inf"),
    (["data.noise=nan"], r"data.noise must be a finite number"),
    (["reduce.tolerances=[1,nan,1]"], r"reduce.tolerances\[1\] must be a finite number"),
    (["rounds=[{optim: {lr: .nan}}]"], r"rounds\[0\].optim.lr must be a finite number"),
    (["trainer.precision=banana"], r"trainer.precision='banana' is not one of: 32-true"),
    (["trainer.accelerator=quantum"], r"trainer.accelerator='quantum' is not one of: auto, cpu"),
    (["trainer.devices=0"], r"Lightning refused the trainer settings .*devices=0"),
    (["trainer.strategy=nonsense"], r"Lightning refused the trainer settings .*strategy=nonsense"),
    (["seed=-1"], r"seed must be in \[0, 2\*\*32\)"),
    (["model.widths=[1.5,2,2]"], r"bad value for config key 'model.widths\[0\]'"),
    (["model.widths=[10000000000,16,8]"], r"needs about \d+ bytes \(\d+\.\d GB.*more than the \d+ bytes.*use smaller model.widths"),
    (["data.n_train=10000000000000"], r"data.n_train/n_val/n_test=10000000000000/32/32 needs about \d+ bytes .*use fewer points"),
])
def test_bad_settings_are_refused_in_one_line(args, pattern, tmp_path):
    rc, err = call(TRAIN, DEBUG, f"out_dir={tmp_path / 'run'}", *FAST, *args)
    assert_refused(rc, err, pattern)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_accelerator_gpu_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_refused(*call(TRAIN, DEBUG, f"out_dir={tmp_path}", *FAST, "trainer.accelerator=gpu"),
                   r"trainer.accelerator=gpu but no GPU is available; use auto or cpu")


@pytest.mark.parametrize("text,pattern", [
    ("model: {widths: [1, 2\n", r"config file .*bad.yaml is not valid YAML .* at line \d+, column \d+"),
    ("- 1\n- 2\n", r"must hold a mapping of keys, not ListConfig"),
    (None, r"config file not found"),
])
def test_bad_config_files(text, pattern, tmp_path):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    assert_refused(*call(TRAIN, str(path), f"out_dir={tmp_path / 'run'}"), pattern)


@pytest.mark.parametrize("kind,pattern", [
    ("file", r"out_dir '.*' is a file, not a folder"),
    ("readonly", r"out_dir '.*' (is not writable|cannot be created)"),
])
def test_unusable_out_dir(kind, pattern, tmp_path):
    if kind == "file":
        out = tmp_path / "f"
        out.write_text("x")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "run"
    assert_refused(*call(TRAIN, DEBUG, f"out_dir={out}", *FAST), pattern)


def test_unwritable_out_dir_as_root_is_refused_too(tmp_path, monkeypatch):
    """Root ignores permissions, so the check is exercised through os.access."""
    from lightning_stacks import rundir

    monkeypatch.setattr(rundir.os, "access", lambda *a, **k: False)
    assert_refused(*call(TRAIN, DEBUG, f"out_dir={tmp_path / 'run'}", *FAST), r"is not writable; choose a writable out_dir")


# --------------------------------------------------------------------------- silent wrong results
def test_divergence_stops_with_exit_2_and_keeps_the_last_checkpoint(trained, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    last = digest(out / "checkpoints" / "last.ckpt")
    (out / "final.ckpt").unlink()
    proc = run_cli("train.py", DEBUG, f"out_dir={out}", *FAST, "overwrite=true", "optim.lr=1e30", cwd=tmp_path)
    assert_refused(proc.returncode, proc.stderr, r"training loss, the weights or the validation outputs became NaN or infinite in epoch 0.*last good checkpoint, if any, is kept.*lower optim.lr")
    assert digest(out / "checkpoints" / "last.ckpt") == last
    assert not (out / "final.ckpt").exists() and not (out / ".lock").exists()


def test_one_output_regression_targets_of_shape_n(tmp_path):
    from lightning_stacks.evaluation import TargetError, targets_for

    out = torch.zeros(5, 1)
    assert targets_for(out, torch.ones(5), "regression").shape == (5, 1)
    with pytest.raises(TargetError, match=r"regression targets must have the outputs' shape \(5, 2\)"):
        targets_for(torch.zeros(5, 2), torch.ones(5), "regression")


# --------------------------------------------------------------------------- the reduction API
@pytest.fixture(scope="module")
def small_net():
    from lightning_stacks.model import DeepStackNetwork

    torch.manual_seed(0)
    net = DeepStackNetwork(2, [6, 5], [3, 2])
    x = torch.randn(40, 2)
    return net, x


def _with_nan_weight(net):
    import copy

    bad = copy.deepcopy(net)
    with torch.no_grad():
        bad.stacks[0].V.weight[0, 0] = float("nan")
    return bad


@pytest.mark.parametrize("case,pattern", [
    ("nan_inputs", r"inputs holds NaN or infinite values"),
    ("nan_weights", r"parameter 'stacks.0.V.weight' holds NaN or infinite values"),
    ("task", r"task='regresion' is not one of: classification, regression"),
    ("sequential", r"net is a Sequential; reduce_network takes a DeepStackNetwork .*from_sequential"),
    ("float_clusters", r"clusters\[0\] must be a whole number, got 2.5"),
    ("unknown_setting", r"unknown reduction setting\(s\) \['tolerance'\]; valid settings: outside"),
    ("settings_type", r"settings must be a ReduceSettings or a dict"),
    ("labels_width", r"y_ref for regression must have shape \(N, 2\) for this network, got \(40, 3\)"),
    ("class_range", r"y_ref holds class indices in \[0, 7\]; this network has 2 classes"),
    ("int_inputs", r"inputs holds torch.int64 values; give floating-point inputs"),
    ("streamed_nan", r"batch 1 holds NaN or infinite inputs"),
    ("nan_max_drop", r"max_drop must be a finite number"),
])
def test_reduce_network_refuses_bad_arguments(case, pattern, small_net):
    from lightning_stacks.reduction import ReduceSettings, reduce_network

    net, x = small_net
    kw = {"net": net, "x_check": x, "settings": ReduceSettings(), "task": "regression"}
    if case == "nan_inputs":
        kw["x_check"] = x.clone().index_fill_(0, torch.tensor([3]), float("nan"))
    elif case == "nan_weights":
        kw["net"] = _with_nan_weight(net)
    elif case == "task":
        kw["task"] = "regresion"
    elif case == "sequential":
        kw["net"] = torch.nn.Sequential(torch.nn.Linear(2, 2))
    elif case == "float_clusters":
        kw["settings"] = ReduceSettings(clusters=[2.5, 2])
    elif case == "unknown_setting":
        kw["settings"] = {"tolerance": [0.1, 0.1]}
    elif case == "settings_type":
        kw["settings"] = [0.1]
    elif case == "labels_width":
        kw.update(settings=ReduceSettings(max_drop=0.1), y_ref=torch.zeros(40, 3))
    elif case == "class_range":
        kw.update(settings=ReduceSettings(max_drop=0.1), task="classification", y_ref=torch.arange(40) % 8)
    elif case == "int_inputs":
        kw["x_check"] = torch.ones(40, 2, dtype=torch.long)
    elif case == "streamed_nan":
        kw["x_check"] = [x[:20], torch.full((20, 2), float("nan"))]
    elif case == "nan_max_drop":
        kw["settings"] = ReduceSettings(max_drop=float("nan"))
    with pytest.raises(LightningStacksError, match=pattern):
        reduce_network(**kw)


def test_reduce_network_accepts_numpy_dicts_and_whole_float_counts(small_net):
    from lightning_stacks.reduction import ReduceSettings, reduce_network

    net, x = small_net
    a, _ = reduce_network(net, x.numpy(), {"clusters": [3.0, 2]}, task="regression")
    b, _ = reduce_network(net, x, ReduceSettings(clusters=[3, 2]), task="regression")
    assert a.widths == b.widths
    torch.testing.assert_close(a(x), b(x))
    y = net(x).detach().numpy()
    c, _ = reduce_network(net, x, ReduceSettings(max_drop=0.05), task="regression", y_ref=y)
    assert sum(c.widths) <= sum(net.widths)


# --------------------------------------------------------------------------- fuzz
KEYS = ["optim.lr", "data.noise", "model.widths", "model.bottleneck", "trainer.precision", "schedule.batch_start",
        "schedule.l2_start", "reduce.max_drop", "reduce.clusters", "reduce.tolerances", "seed", "data.name",
        "trainer.accelerator", "model.variant", "data.x_min", "pruning.sparsity", "reduce.output", "init_from", "rounds"]
JUNK = ["nan", "-inf", "1e30", "-1", "0", "[1,2", "{", "abc", "[]", "[0,0,0]", "[4,4,4]", "null", "''", "1e400",
        "[nan]", "'[1]'", "64-true", "gpu", "9999999999999", "[{epochs: 0}]", "x.json", "\x00"]


def _tree(root: Path, skip: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): digest(p) for p in root.rglob("*") if p.is_file() and skip not in p.parents}


# junk inputs may drive a metric to nan before the run is refused (exit 2); torchmetrics warns about it
@pytest.mark.filterwarnings("ignore:Encountered `nan` values in tensor")
def test_fuzz_clis(trained, tmp_path, monkeypatch):
    """Random bytes, truncations and corruptions of a real checkpoint fed to reduce.py and to
    train.py init_from, and random overrides: exit code 0 or 2, no exception escapes (no
    traceback), and no file outside the job's out_dir is created or changed."""
    rng = random.Random(1234)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    good = (trained / "final.ckpt").read_bytes()
    guard = tmp_path / "untouched"
    guard.mkdir()
    (guard / "keep.txt").write_text("keep")
    for i in range(30):
        out = tmp_path / f"job{i}"
        kind = rng.choice(["bytes", "truncate", "corrupt", "overrides"])
        overrides = [f"{rng.choice(KEYS)}={rng.choice(JUNK)}" for _ in range(rng.randint(1, 3))]
        overrides = [o if not o.startswith(("reduce.output=", "init_from=")) else o.replace("=", f"={out}/", 1)
                     for o in overrides]
        blob = None
        if kind == "bytes":
            blob = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        elif kind == "truncate":
            blob = good[: rng.randrange(len(good))]
        elif kind == "corrupt":
            data = bytearray(good)
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            blob = bytes(data)
        before = _tree(tmp_path, out)
        if blob is not None:
            out.mkdir()
            (out / "in.ckpt").write_bytes(blob)
            before = _tree(tmp_path, out)
            if rng.random() < 0.5:
                rc, err = call(REDUCE, str(out / "in.ckpt"), *overrides[:1])
            else:
                rc, err = call(TRAIN, DEBUG, f"out_dir={out}", *FAST, f"init_from={out / 'in.ckpt'}")
        else:
            rc, err = call(TRAIN, DEBUG, f"out_dir={out}", *FAST, *overrides)
        case = f"case {i} ({kind}, {overrides}): rc={rc} {err[-600:]}"
        assert rc in (0, 2), case
        assert "Traceback" not in err, case
        if rc == 2:
            assert err.strip().splitlines()[-1].startswith("error: "), case
        assert _tree(tmp_path, out) == before, case


def test_fuzz_through_the_real_cli(trained, tmp_path):
    """A few of the same inputs through real processes: exit codes and stderr as a user sees them."""
    good = (trained / "final.ckpt").read_bytes()
    (tmp_path / "t.ckpt").write_bytes(good[: len(good) // 2])
    (tmp_path / "r.ckpt").write_bytes(np.random.default_rng(0).bytes(500))
    for args in (("reduce.py", "t.ckpt"), ("reduce.py", "r.ckpt"), ("train.py", DEBUG, "out_dir=o", "optim.lr=[1,"),
                 ("train.py", DEBUG, "out_dir=o", "init_from=r.ckpt", *FAST)):
        proc = run_cli(*args, cwd=tmp_path)
        assert_refused(proc.returncode, proc.stderr, ".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "r.ckpt", "t.ckpt"]
