"""bench/compare_mnist.py end to end on a tiny digits recipe (the same code path as the MNIST runs)."""

import json

import pytest
import torch
from conftest import run_cli

RECIPE = """
model: {widths: [24, 16, 8], bottleneck: [8, 8]}
data: {name: digits}
trainer: {accelerator: cpu, devices: "1"}
schedule: {warmup_epochs: 2, l2_start: 1.0e-4, l2_end: 1.0e-3, batch_start: 64, batch_end: 256}
optim: {lr: 3.0e-3}
reduce: {max_drop: 1.0e-2, baseline: first, refit: true}
rounds:
  - epochs: 4
  - epochs: 2
    schedule: {warmup_epochs: 0, l2_start: 1.0e-3, l2_end: 1.0e-3}
"""


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)
    args = ["--recipe", str(recipe), "--work", str(tmp / "work"), "--results", str(tmp / "results"), "--seeds", "1",
            "--widths", "12,24", "--parts", "seeds,control,baselines,drops,time,width", "--logger", "none",
            "--drops", "1e-8,1e-6,1e-4,1e-3,1e-2"]
    first = run_cli("bench/compare_mnist.py", *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_cli("bench/compare_mnist.py", *args)  # everything cached: no job runs again
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, first.stdout, second.stdout


def test_every_part_is_written_with_consistent_accounting(bench_run):
    tmp, _, _ = bench_run
    res = json.loads((tmp / "results" / "compare_mnist_quick.json").read_text())
    assert res["part_seeds"] == {p: [0] for p in ("seeds", "control", "baselines", "drops", "time", "width")}
    assert res["seeds"] == [0] and res["git_commit"] and res["recipe_config"]["data"]["name"] == "digits"
    run = res["seeds_runs"][0]
    assert run["full"]["widths"] == [24, 16, 8] and run["full"]["compression"] == 1.0
    assert [s["round"] for s in run["steps"]][0] == 0 and {s["round"] for s in run["steps"]} == {0, 1}
    red = run["reduced"]
    assert red["compression"] > 1 and red["neurons"] == sum(red["widths"]) < 48
    for pruned in run["pruning"]:  # magnitude pruning at the reduced model's compression factor
        assert pruned["nonzero_params"] == pytest.approx(red["nonzero_params"], abs=1)
        assert pruned["widths"] == [24, 16, 8]
        scope = pruned["method"].split("_")[1]
        assert run[f"ratio_pruned_{scope}_over_reduced_train_errors"] == pruned["train_errors"] / max(1, red["train_errors"])
    # global pruning pushed from our factor up until it makes 10x our train errors
    curve, need = run["global_pruning_to_10x_errors"], 10 * max(1, red["train_errors"])
    assert curve[0]["compression"] == pytest.approx(red["compression"])
    assert curve[0]["train_errors"] == run["pruning"][0]["train_errors"]
    assert all(b["compression"] == pytest.approx(a["compression"] + 0.5) for a, b in zip(curve, curve[1:], strict=False))
    assert all(p["train_errors"] < need for p in curve[:-1])
    reached = curve[-1]["train_errors"] >= need
    assert run["global_pruning_10x_errors_at_compression"] == (curve[-1]["compression"] if reached else None)
    if not reached:  # stopped at 60x or where pruning every weight would be needed
        from lightning_stacks.methods.magnitude_pruning import max_compression
        from lightning_stacks.module import load_module

        full = load_module(tmp / "work" / "seed_0" / "rounds" / "round_0" / "last.ckpt").net
        assert curve[-1]["compression"] + 0.5 >= min(60.0, max_compression(full))
    assert res["seeds_summary"]["global_pruning_10x_errors_at_compression"] == [run["global_pruning_10x_errors_at_compression"]]
    assert run["compression_vs_dense_full"] == pytest.approx(red["compression"])  # no exact zeros in the full net
    assert set(res["seeds_summary"]) >= {"ratio_pruned_global_over_reduced_train_errors", "ratio_pruned_layer_over_reduced_train_errors"}
    # control: the recipe with every reduction off (6 epochs, both rounds), round 0 shared with the seed job
    (ctrl,) = res["control"]
    assert ctrl["seed"] == 0 and ctrl["full"] == run["full"]
    control = ctrl["control"]
    assert control["widths"] == [24, 16, 8] and control["epochs"] == 6 and control["round_0_shared"]
    from lightning_stacks.checkpoint import read_checkpoint
    from lightning_stacks.config import load_config

    job = load_config(tmp / "work" / "seed_0_control" / "job.yaml")
    assert [r.reduce for r in job.rounds] == [False, False] and [r.epochs for r in job.rounds] == [4, 2]
    shared = read_checkpoint(tmp / "work" / "seed_0_control" / "rounds" / "round_0" / "last.ckpt")
    own = read_checkpoint(tmp / "work" / "seed_0" / "rounds" / "round_0" / "last.ckpt")
    assert all(torch.equal(shared["state_dict"][k], v) for k, v in own["state_dict"].items())
    # baselines at the reduced widths / compression, every one trained for the recipe's 6 epochs
    rows = {r["method"]: r for r in res["baselines"]}
    assert set(rows) == {"reduction", "torch_pruning_finetune", "magnitude_global_retrain", "small_from_scratch"}
    assert rows["reduction"]["widths"] == red["widths"] and rows["reduction"]["test_acc"] == red["test_acc"]
    assert rows["torch_pruning_finetune"]["widths"] == rows["small_from_scratch"]["widths"] == red["widths"]
    assert rows["magnitude_global_retrain"]["widths"] == [24, 16, 8]
    assert rows["magnitude_global_retrain"]["nonzero_params"] <= red["nonzero_params"] * 1.01
    assert {r["epochs"] for r in rows.values()} == {6}
    tuned = load_config(tmp / "work" / "seed_0_torch_pruning" / "job.yaml")
    assert tuned.trainer.max_epochs == 2 and tuned.init_from.endswith("seed_0/torch_pruned.ckpt")
    assert load_config(tmp / "work" / "seed_0_scratch" / "job.yaml").trainer.max_epochs == 6
    assert [m["method"] for m in res["baselines_summary"]] == [r["method"] for r in res["baselines"]]
    drops = res["drops"]
    assert [p["max_drop"] for p in drops] == [1e-8, 1e-6, 1e-4, 1e-3, 1e-2]
    assert drops[-1]["reduction"]["neurons"] <= drops[0]["reduction"]["neurons"]  # 1e-2 allows more than 1e-8
    assert [p["n"] for p in res["width"]] == [12, 24]
    assert [p["epochs"] for p in res["time"]] == [1, 2, 4]
    for name in ("fig8.png", "fig8.csv", "fig9.png", "fig10.png"):
        assert (tmp / "results" / f"compare_mnist_quick_{name}").stat().st_size > 0


def test_finished_jobs_are_not_run_again(bench_run):
    _, first, second = bench_run
    assert "[bench] job seed_0 ..." in first
    assert "[bench] job" not in second


@pytest.mark.parametrize(("args", "message"), [
    (["--seed-list", "1,x"], "--seed-list takes comma-separated integers"),
    (["--baselines", "scratch,bogus"], "--baselines: choose from torch_pruning, magnitude, scratch"),
    (["--drops", "1e-3,big"], "--drops takes comma-separated numbers"),
])
def test_bad_shard_arguments_are_refused(tmp_path, args, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = run_cli("bench/compare_mnist.py", "--recipe", str(recipe), "--parts", "seeds", *args,
                  "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--logger", "none")
    assert out.returncode != 0 and message in out.stderr
    assert not (tmp_path / "work").exists()


def test_a_shard_runs_only_its_seeds(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("epochs: 4", "epochs: 1").replace("epochs: 2", "epochs: 1"))
    out = run_cli("bench/compare_mnist.py", "--recipe", str(recipe), "--parts", "seeds", "--seed-list", "2",
                  "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--logger", "none")
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["seed_2"]
    res = json.loads((tmp_path / "results" / "compare_mnist_quick.json").read_text())
    assert res["seeds"] == [2] and [r["seed"] for r in res["seeds_runs"]] == [2]


def test_unknown_part_is_refused(tmp_path):
    out = run_cli("bench/compare_mnist.py", "--parts", "seeds,bogus", "--work", str(tmp_path))
    assert out.returncode != 0 and "unknown parts ['bogus']" in out.stderr


def test_a_job_spec_written_before_a_new_config_key_still_matches(bench_run):
    """A finished job's job.yaml that lacks a key added to the schema since (at its default) is
    the same job; a changed value is not."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from compare_mnist import Bench

    tmp, _, _ = bench_run
    spec = tmp / "work" / "seed_0" / "job.yaml"
    text = spec.read_text()
    assert "polish: false" in text
    old = tmp / "old_job.yaml"
    old.write_text(text.replace("  polish: false\n", ""))
    assert Bench.same_job(old, text)
    old.write_text(text.replace("  polish: false\n", "  polish: true\n"))
    assert not Bench.same_job(old, text)
    old.write_text(text.replace("  polish: false\n", "  no_such_key: 1\n"))
    assert not Bench.same_job(old, text)


def test_the_frontier_plot_reads_every_row_of_a_summary(bench_run):
    tmp, _, _ = bench_run
    out = run_cli("bench/plot_frontier.py", str(tmp / "frontier.png"), str(tmp / "results" / "compare_mnist_quick.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "seeds" in line]
    labels = " ".join(lines)
    for label in ("recipe: reduced", "control: full network", "Torch-Pruning", "from scratch", "magnitude pruning"):
        assert label in labels
    assert len(lines) == 5 and all("seeds  1" in line for line in lines)
    assert (tmp / "frontier.png").stat().st_size > 10_000
