"""MNIST experiments: the reduction vs magnitude pruning over seeds and accuracy-drop thresholds
(the paper's fig. 8), the width sweep (fig. 9), the training-time sweep (fig. 10), and rows for
the other methods (group sparsity, layer sparsity, stable units) and the harder baselines
(Torch-Pruning + fine-tuning, magnitude pruning with retraining, the small network from scratch).

    python bench/compare_mnist.py --mode quick                     # 3 seeds
    python bench/compare_mnist.py --mode full                      # 10 seeds, more thresholds
    python bench/compare_mnist.py --mode quick --parts seeds,drops # a subset of the parts

Parts: ``seeds`` (the recipe ``--recipe``, retrain-reduce rounds, once per seed), ``control``
(the recipe with every reduction switched off: the full network trained for the same epochs with
the same rounds, final round included), ``baselines`` (per seed, at the reduced widths and the same
total epochs: Torch-Pruning + fine-tuning, global magnitude pruning with retraining, the reduced
architecture from scratch; ``--baselines`` picks a subset), ``drops`` (one automatic reduction of
each seed's trained full network per threshold, ``--drops``, and magnitude pruning without
retraining at the same compression), ``width``, ``time``, ``methods`` (group sparsity, layer
sparsity and stable units on seed 0).
Every training run is a ``train.py`` job under ``--work`` (default ``runs/compare_mnist``); a
finished job (its ``final.ckpt`` and identical ``job.yaml``) is not run again, so an interrupted
run continues where it stopped and parts can be run one at a time, or shared out: processes
given the same ``--work`` and disjoint ``--seed-list`` shards run side by side, and a last
process over all seeds finds every job done and writes the summary. The summary is written to
``results/compare_mnist_<mode>.json`` (with the git commit, configs, seeds, per-step widths,
accuracies, compression factors, wall times), a CSV of the fig. 8 points and PNGs.
Compression factor = nonzero parameters of the full network / of the compressed one, the same
count for every method. Torch-Pruning rows need the optional extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import ROOT, mnist_root
from omegaconf import OmegaConf

from lightning_stacks.checkpoint import save_module
from lightning_stacks.config import ConfigError, load_config, to_container
from lightning_stacks.data import build_datamodule, describe_data
from lightning_stacks.evaluation import predict
from lightning_stacks.methods.magnitude_pruning import (
    max_compression,
    nonzero_parameters,
    prune_to_compression,
)
from lightning_stacks.module import StackModule, load_module

MODES = {
    "quick": {"seeds": 3, "drops": [1e-8, 1e-6, 1e-4, 1e-3, 1e-2], "widths": [256, 512, 1024, 2048],
              "time_fractions": [0.25, 0.5, 1.0]},
    "full": {"seeds": 10, "drops": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
             "widths": [256, 512, 1024, 2048], "time_fractions": [0.125, 0.25, 0.5, 1.0, 2.0]},
}
PARTS = ("seeds", "control", "baselines", "drops", "width", "time", "methods")


def root_override(data_name: str, root) -> list[str]:
    """``data.root`` for MNIST recipes (the other data sets refuse the key: they read no IDX files)."""
    return [f"data.root={root}"] if data_name == "mnist" else []


class Bench:
    """Runs and caches the jobs; holds the data so every evaluation uses the same tensors."""

    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        name = load_config(args.recipe).data.name
        self.recipe = load_config(args.recipe, [*root_override(name, args.data_root), f"logger.kind={args.logger}",
                                                "trainer.enable_progress_bar=false"])
        if not self.recipe.rounds:
            raise SystemExit(f"{args.recipe} has no rounds: the recipe must be a retrain-reduce job")
        dm = build_datamodule(self.recipe.data)
        if describe_data(dm).get("x_mean") is not None:  # bare networks are evaluated on these rows, for every seed
            raise SystemExit(f"{args.recipe}: compare_mnist evaluates networks on fixed splits of unscaled inputs (mnist, "
                             "digits); a standardized file data set's splits and input layer change with the seed")
        self.train, self.test = dm.split("train"), dm.split("test")

    # --- jobs -------------------------------------------------------------------------------
    def job(self, name: str, cfg: dict, seed_files: dict[str, Path] | None = None) -> Path:
        """Run ``train.py`` on ``cfg`` in ``work/name`` unless that exact job already finished.
        ``seed_files`` (path in the job's folder -> file): copied in first when missing, e.g. an
        identical round 0 another job already trained, which the job then resumes from."""
        out = self.work / name
        cfg = dict(cfg, out_dir=str(out))
        text = OmegaConf.to_yaml(OmegaConf.create(cfg))
        spec = out / "job.yaml"
        if (out / "final.ckpt").is_file() and spec.is_file() and self.same_job(spec, text):
            return out
        out.mkdir(parents=True, exist_ok=True)
        for rel, src in (seed_files or {}).items():
            if not (out / rel).is_file():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out / rel)
        spec.write_text(text)
        print(f"[bench] job {name} ...", flush=True)
        t0 = time.perf_counter()
        with open(out / "train.log", "a") as log:
            rc = subprocess.run([sys.executable, str(ROOT / "train.py"), str(spec)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise SystemExit(f"job {name} failed (exit {rc}); see {out / 'train.log'}")
        wall = time.perf_counter() - t0
        (out / "wall.json").write_text(json.dumps({"seconds": wall}))
        print(f"[bench] job {name} done in {wall / 60:.1f} min", flush=True)
        return out

    @staticmethod
    def same_job(spec: Path, text: str) -> bool:
        """The finished job's spec is this job: equal once both are resolved with today's schema
        (a key added to the config since, at its default, does not invalidate the job)."""
        if spec.read_text() == text:
            return True
        try:
            old = to_container(load_config(spec))
        except ConfigError:  # a key that no longer exists: a different job
            return False
        return old == to_container(load_config(base=OmegaConf.to_container(OmegaConf.create(text))))

    def recipe_cfg(self, seed: int, **changes) -> dict:
        cfg = to_container(self.recipe)
        cfg["seed"] = seed
        for key, value in changes.items():
            node = cfg
            *path, last = key.split(".")
            for p in path:
                node = node[p]
            node[last] = value
        return cfg

    def single_round(self, seed: int, epochs: int | None = None, **changes) -> dict:
        """The recipe's first round only (train, then one reduction), optionally with other epochs."""
        first = dict(to_container(self.recipe)["rounds"][0])
        if epochs is not None:
            first["epochs"] = epochs
        return self.recipe_cfg(seed, rounds=[first], **changes)

    def fine_tune_cfg(self, seed: int, init_from: Path, epochs: int | None = None, **changes) -> dict:
        """A single fit with the recipe's last round's schedule, optimizer and augmentation
        settings, as long as ``epochs`` (default: all the recipe's rounds after the first together)."""
        rounds = to_container(self.recipe)["rounds"]
        last = rounds[-1]
        cfg = self.recipe_cfg(seed, rounds=[], init_from=str(init_from), **changes)
        cfg["trainer"]["max_epochs"] = sum(r["epochs"] for r in rounds[1:]) if epochs is None else epochs
        cfg["schedule"].update(last.get("schedule", {}))
        cfg["optim"].update(last.get("optim", {}))
        cfg["augment"].update(last.get("augment", {}))
        return cfg

    @staticmethod
    def wall(out: Path) -> float:
        path = out / "wall.json"
        return json.loads(path.read_text())["seconds"] if path.is_file() else float("nan")

    # --- evaluation ---------------------------------------------------------------------------
    def errors(self, net) -> dict:
        net = on_eval_device(net).eval()  # once for both splits
        out = {}
        for split, (x, y) in (("train", self.train), ("test", self.test)):
            wrong = wrong_predictions(net, x, y)
            out[f"{split}_errors"], out[f"{split}_acc"] = wrong, 1 - wrong / len(y)
        return out

    def row(self, method: str, net, full_nonzero: int, **extra) -> dict:
        nz = nonzero_parameters(net)
        return {"method": method, "widths": list(net.widths), "neurons": sum(net.widths), "nonzero_params": nz,
                "compression": full_nonzero / nz, **self.errors(net), **extra}

    def pruning_rows(self, full_net, factor: float, full_nonzero: int) -> list[dict]:
        rows = []
        for scope in ("global", "layer"):
            pruned, _ = prune_to_compression(full_net, factor, scope)
            rows.append(self.row(f"magnitude_{scope}_no_retrain", pruned, full_nonzero))
        return rows

    def ratio_reach(self, full_net, start: float, need_errors: int, step: float = 0.5, stop: float = 60.0) -> list[dict]:
        """Global pruning (no retraining) of ``full_net`` from ``start``x compression up in ``step``s
        until it misclassifies ``need_errors`` training images (or ``stop``x, or the most pruning can
        reach): where a ratio target becomes reachable."""
        x, y = self.train
        points, factor, stop = [], start, min(stop, max_compression(full_net))  # pruning reaches only below the max
        while factor < stop:
            pruned, _ = prune_to_compression(full_net, factor, "global")
            wrong = wrong_predictions(pruned.eval(), x, y)
            points.append({"compression": factor, "train_errors": wrong})
            if wrong >= need_errors:
                break
            factor += step
        return points


EVAL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_eval_device(net):
    """``net`` if it is on the GPU (when there is one), else a copy of it there."""
    return net if next(net.parameters()).device == EVAL_DEVICE else copy.deepcopy(net).to(EVAL_DEVICE)


def wrong_predictions(net, x: torch.Tensor, y: torch.Tensor) -> int:
    """Misclassified rows of ``x``, counted on the GPU when there is one (a copy of a CPU net is
    moved there; the CPU-held data follows in batches, see ``predict``)."""
    out = predict(on_eval_device(net), x)  # (N, classes) on the net's device
    return int((out.argmax(1) != y.to(out.device)).sum())


def steps_of(history: list[dict]) -> list[dict]:
    """Per round and step: widths, params, metrics (from a module's reduction history)."""
    return [{"round": r, "step": s["step"], "widths": s["widths"], "params": s["params"], "metrics": s["metrics"]}
            for r, rep in enumerate(history) for s in rep["steps"]]


# --- parts ----------------------------------------------------------------------------------
def part_seeds(b: Bench, seeds: list[int]) -> list[dict]:
    runs = []
    for s in seeds:
        out = b.job(f"seed_{s}", b.recipe_cfg(s))
        full, final = load_module(out / "rounds" / "round_0" / "last.ckpt"), load_module(out / "final.ckpt")
        full_nz = nonzero_parameters(full.net)
        ours = b.row("reduction", final.net, full_nz, epochs=sum(r.epochs for r in b.recipe.rounds), wall_seconds=b.wall(out))
        run = {"seed": s, "full": b.row("full", full.net, full_nz), "reduced": ours, "steps": steps_of(final.history),
               "pruning": b.pruning_rows(full.net, ours["compression"], full_nz)}
        last = max(i for i, r in enumerate(b.recipe.rounds) if r.reduce)
        if last < len(b.recipe.rounds) - 1:  # the recipe ends with fine-tuning: also keep the network before it
            after = load_module(out / "rounds" / f"round_{last}.ckpt")
            run["after_last_reduction"] = b.row("reduction_before_finetune", after.net, full_nz, round=last)
        # global: one threshold over all weights (the stronger baseline); layer: every weight matrix to the
        # same sparsity, which is what TF-MOT's prune_low_magnitude does (the paper's baseline)
        for row in run["pruning"]:
            scope = row["method"].split("_")[1]
            run[f"ratio_pruned_{scope}_over_reduced_train_errors"] = row["train_errors"] / max(1, ours["train_errors"])
        # how far global pruning must go before it makes 10x our errors (the ratio target)
        need = 10 * max(1, ours["train_errors"])
        curve = b.ratio_reach(full.net, ours["compression"], need)
        run["global_pruning_to_10x_errors"] = curve
        run["global_pruning_10x_errors_at_compression"] = curve[-1]["compression"] if curve[-1]["train_errors"] >= need else None
        # the full network may hold exact zeros (group sparsity): also count against its dense shape
        run["compression_vs_dense_full"] = sum(p.numel() for p in full.net.parameters()) / ours["nonzero_params"]
        print(f"[seeds] seed {s}: widths {ours['widths']} ({ours['neurons']}), test {ours['test_acc']:.4f} "
              f"(full {run['full']['test_acc']:.4f}), {ours['compression']:.1f}x; train errors reduced {ours['train_errors']} "
              f"vs global pruning {run['pruning'][0]['train_errors']}, per-layer pruning {run['pruning'][1]['train_errors']}; global pruning reaches 10x our errors at "
              f"{run['global_pruning_10x_errors_at_compression']}x", flush=True)
        runs.append(run)
    return runs


def part_control(b: Bench, seeds: list[int]) -> list[dict]:
    """The control: the recipe with every reduction switched off, i.e. the full network trained
    for the same total epochs with the same rounds (schedules, optimizers, final round). Its round
    0 is the recipe job's round 0 (same seed, same schedule): when that job has trained it, the
    control resumes from its end instead of training it again."""
    total = sum(r.epochs for r in b.recipe.rounds)
    rounds = [dict(r, reduce=False) for r in to_container(b.recipe)["rounds"]]
    runs = []
    for s in seeds:
        round0 = b.work / f"seed_{s}" / "rounds" / "round_0" / "last.ckpt"
        shared = {"rounds/round_0/last.ckpt": round0} if round0.is_file() else None
        out = b.job(f"seed_{s}_control", b.recipe_cfg(s, rounds=rounds), seed_files=shared)
        full = load_module(out / "rounds" / "round_0" / "last.ckpt")
        full_nz = nonzero_parameters(full.net)
        control = b.row("control_equal_budget", load_module(out / "final.ckpt").net, full_nz, epochs=total,
                        wall_seconds=b.wall(out), round_0_shared=shared is not None)
        runs.append({"seed": s, "full": b.row("full", full.net, full_nz), "control": control})
        print(f"[control] seed {s}: full network after round 0 test {runs[-1]['full']['test_acc']:.4f}, trained "
              f"{total} epochs with every round and no reduction {control['test_acc']:.4f}", flush=True)
    return runs


def part_drops(b: Bench, seeds: list[int], drops: list[float]) -> list[dict]:
    from lightning_stacks.reduction.job import reduce_module

    points = []
    for s in seeds:
        cache = b.work / f"seed_{s}" / "drops.json"
        done = {p["max_drop"]: p for p in json.loads(cache.read_text())} if cache.is_file() else {}
        full = load_module(b.work / f"seed_{s}" / "rounds" / "round_0" / "last.ckpt")
        full_nz = nonzero_parameters(full.net)
        for t in drops:
            if t not in done:
                cfg = load_config(base=full.hparams["config"], overrides=[f"reduce.max_drop={t}", "reduce.baseline=current",
                                                                           *root_override(full.cfg.data.name, b.args.data_root)])
                t0 = time.perf_counter()
                reduced, report = reduce_module(full, cfg, log=lambda rec: None)
                seconds = time.perf_counter() - t0
                ours = b.row("reduction", reduced.net, full_nz, seconds=seconds, evaluations=report.evaluations)
                pruned = b.pruning_rows(full.net, ours["compression"], full_nz)
                done[t] = {"seed": s, "max_drop": t, "reduction": ours, "pruning": pruned}
                cache.write_text(json.dumps(list(done.values()), indent=1))
                print(f"[drops] seed {s} max_drop {t:g}: {ours['widths']} {ours['compression']:.1f}x, train errors "
                      f"{ours['train_errors']} vs pruning {pruned[0]['train_errors']}", flush=True)
            points.append(done[t])
    return points


def first_round_point(b: Bench, out: Path, **extra) -> dict:
    """Full network and its first reduction (``rounds/round_0.ckpt``) of a job."""
    full, red = load_module(out / "rounds" / "round_0" / "last.ckpt"), load_module(out / "rounds" / "round_0.ckpt")
    full_nz = nonzero_parameters(full.net)
    return {**extra, "full": b.row("full", full.net, full_nz), "reduced": b.row("reduction", red.net, full_nz),
            "steps": steps_of(red.history), "wall_seconds": b.wall(out)}


def part_width(b: Bench, widths: list[int]) -> list[dict]:
    base, J = b.recipe.model.widths, len(b.recipe.model.widths)
    points = []
    for n in widths:
        if [n] * J == list(base):  # the recipe's own width: seed 0's first round
            out = b.job("seed_0", b.recipe_cfg(0))
        else:
            out = b.job(f"width_{n}", b.single_round(0, **{"model.widths": [n] * J}))
        points.append(first_round_point(b, out, n=n))
        print(f"[width] n={n}: reduced to {points[-1]['reduced']['widths']}", flush=True)
    return points


def part_time(b: Bench, fractions: list[float]) -> list[dict]:
    e0 = b.recipe.rounds[0].epochs
    points = []
    for epochs in dict.fromkeys(max(1, round(e0 * f)) for f in fractions):
        if epochs == e0:
            out = b.job("seed_0", b.recipe_cfg(0))
        else:
            out = b.job(f"epochs_{epochs}", b.single_round(0, epochs))
        points.append(first_round_point(b, out, epochs=epochs))
        print(f"[time] {epochs} epochs: reduced to {points[-1]['reduced']['widths']}", flush=True)
    return points


def torch_pruned(full: StackModule, widths: list[int]) -> StackModule:
    """Torch-Pruning: remove each stack's lowest-L1-importance ReLU neurons (V rows with their W
    columns, as one dependency group) down to ``widths``; returns a module of that architecture."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise SystemExit('the Torch-Pruning rows need: pip install -e ".[bench]"') from None
    net = copy.deepcopy(full.net)
    example = torch.zeros(1, net.input_dim, device=next(net.parameters()).device)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    importance = tp.importance.MagnitudeImportance(p=1)
    for stack, keep in zip(net.stacks, widths, strict=True):
        n = stack.V.out_features
        if keep >= n:
            continue
        group = graph.get_pruning_group(stack.V, tp.prune_linear_out_channels, idxs=list(range(n)))
        drop = importance(group).argsort()[: n - keep].tolist()
        graph.get_pruning_group(stack.V, tp.prune_linear_out_channels, idxs=drop).prune()
    arch = dict(full.net.architecture(), widths=[s.V.out_features for s in net.stacks])
    module = StackModule(full.hparams["config"], architecture=arch)
    module.net.load_state_dict(net.state_dict())
    return module


BASELINES = ("torch_pruning", "magnitude", "scratch")


def part_baselines(b: Bench, seeds: list[int], which: tuple[str, ...] = BASELINES) -> list[dict]:
    """Per seed, at the reduced network's widths / compression and the recipe's total epochs:
    Torch-Pruning of the full network + fine-tuning, global magnitude pruning with retraining,
    and the reduced architecture trained from scratch (``which`` picks a subset)."""
    rows = []
    total_epochs = sum(r.epochs for r in b.recipe.rounds)
    tune_epochs = total_epochs - b.recipe.rounds[0].epochs
    for s in seeds:
        seed_dir = b.work / f"seed_{s}"
        b.job(f"seed_{s}", b.recipe_cfg(s))
        full_ckpt = seed_dir / "rounds" / "round_0" / "last.ckpt"
        full, final = load_module(full_ckpt), load_module(seed_dir / "final.ckpt")
        full_nz, widths = nonzero_parameters(full.net), list(final.net.widths)
        factor = full_nz / nonzero_parameters(final.net)
        rows.append(b.row("reduction", final.net, full_nz, seed=s, epochs=total_epochs, wall_seconds=b.wall(seed_dir)))
        if "torch_pruning" in which:  # Torch-Pruning to our widths + the recipe's later epochs as fine-tuning
            tp_init = seed_dir / "torch_pruned.ckpt"
            if not tp_init.is_file():
                save_module(torch_pruned(full, widths), tp_init)
            out = b.job(f"seed_{s}_torch_pruning", b.fine_tune_cfg(s, tp_init))
            rows.append(b.row("torch_pruning_finetune", load_module(out / "final.ckpt").net, full_nz, seed=s,
                              epochs=total_epochs, wall_seconds=b.wall(seed_dir) + b.wall(out)))
        if "magnitude" in which:  # magnitude pruning with retraining at our factor (polynomial ramp over the first half)
            out = b.job(f"seed_{s}_magnitude_retrain", b.fine_tune_cfg(s, full_ckpt, **{"pruning.compression": factor,
                                                                                         "pruning.end_epoch": tune_epochs / 2}))
            rows.append(b.row("magnitude_global_retrain", load_module(out / "final.ckpt").net, full_nz, seed=s,
                              epochs=total_epochs, wall_seconds=b.wall(seed_dir) + b.wall(out)))
        if "scratch" in which:  # the reduced architecture trained from scratch, same recipe, same total epochs
            cfg = b.recipe_cfg(s, rounds=[], **{"model.widths": widths, "trainer.max_epochs": total_epochs})
            out = b.job(f"seed_{s}_scratch", cfg)
            rows.append(b.row("small_from_scratch", load_module(out / "final.ckpt").net, full_nz, seed=s,
                              epochs=total_epochs, wall_seconds=b.wall(out)))
        print(f"[baselines] seed {s}: " + ", ".join(f"{r['method']} {r['test_acc']:.4f}" for r in rows if r["seed"] == s),
              flush=True)
    return rows


def part_methods(b: Bench, gs_lambda: float, ls_penalty: float) -> list[dict]:
    """The seeds' other methods on seed 0, against its full network's parameter count."""
    from lightning_stacks.reduction.job import reduce_module

    b.job("seed_0", b.recipe_cfg(0))
    # the seeds' other methods, seed 0, against the same full network's parameter count
    full = load_module(b.work / "seed_0" / "rounds" / "round_0" / "last.ckpt")
    full_nz = nonzero_parameters(full.net)
    other = []
    cfg = load_config(base=full.hparams["config"], overrides=[
        *root_override(full.cfg.data.name, b.args.data_root), "reduce.outside=false", "reduce.max_drop=-1", "reduce.domain=[0,1]",
        "reduce.domain_milp_seconds=2", f"reduce.domain_milp_units={b.args.milp_units}", "reduce.refit=false",
        "reduce.bottleneck_tol=-1"])
    t0 = time.perf_counter()
    stable, _ = reduce_module(full, cfg, log=lambda rec: None)
    other.append(b.row("stable_units_domain", stable.net, full_nz, seed=0, seconds=time.perf_counter() - t0,
                       note="certified on all of [0,1]^784; no retraining"))
    for name, changes in (("group_sparsity", {"group_sparsity.lambdas": [gs_lambda]}),
                          ("layer_sparsity", {"layer_sparsity.penalties": [ls_penalty] + [0.0] * (len(b.recipe.model.widths) - 1),
                                            "reduce.merge_identity_layers": True})):
        out = b.job(f"seed_0_{name}", b.single_round(0, **changes))
        point = first_round_point(b, out)
        after_zeroed = next((st for st in point["steps"] if st["step"] in ("zeroed", "layers")), point["steps"][0])
        other.append({**point["reduced"], "method": f"{name}+reduction", "seed": 0, "wall_seconds": point["wall_seconds"],
                      "full_trained_with_penalty": point["full"], "after_method_step": after_zeroed, "steps": point["steps"],
                      "compression_vs_unpenalized_full": full_nz / point["reduced"]["nonzero_params"]})
    return other


# --- summary and plots ----------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize_methods(rows: list[dict]) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        summary = {"method": method, "seeds": [r["seed"] for r in rs], "widths": [r["widths"] for r in rs],
                   "nonzero_params_mean": statistics.fmean(r["nonzero_params"] for r in rs), "epochs": rs[0]["epochs"]}
        for key in ("train_acc", "test_acc", "wall_seconds"):
            summary[f"{key}_mean"], summary[f"{key}_sd"] = mean_sd([r[key] for r in rs])
        out.append(summary)
    return out


def write_csv(path: Path, points: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "max_drop", "method", "compression", "neurons", "train_errors", "test_errors", "train_acc", "test_acc"])
        for p in points:
            for r in [p["reduction"], *p["pruning"]]:
                w.writerow([p["seed"], p["max_drop"], r["method"], f"{r['compression']:.3f}", r["neurons"], r["train_errors"],
                            r["test_errors"], f"{r['train_acc']:.5f}", f"{r['test_acc']:.5f}"])


def plot_drops(path: Path, points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"reduction": ("o", "C0"), "magnitude_global_no_retrain": ("x", "C3"), "magnitude_layer_no_retrain": ("+", "C1")}
    for ax, split in zip(axes, ("train", "test"), strict=True):
        for method, (marker, color) in styles.items():
            xs, ys = [], []
            for p in points:
                for r in [p["reduction"], *p["pruning"]]:
                    if r["method"] == method:
                        xs.append(r["compression"])
                        ys.append(max(r[f"{split}_errors"], 0.5))  # 0 errors drawn at 0.5 on the log axis
            ax.scatter(xs, ys, marker=marker, color=color, label=method.replace("_", " "))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("compression factor (nonzero parameters full / compressed)")
        ax.set_ylabel(f"misclassified {split} images (0 drawn at 0.5)")
        ax.set_title(f"{split}: one point per seed and threshold")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(path: Path, points: list[dict], key: str, xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [p[key] for p in points]
    widths = [p["reduced"]["widths"] for p in points]
    for j in range(len(widths[0])):
        ax1.plot(xs, [w[j] for w in widths], "o-", label=f"stack {j + 1} after reduction")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("symlog", linthresh=1)  # a stack can be reduced to 0 ReLU neurons
    ax1.set_ylim(bottom=0)
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("ReLU neurons")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(xs, [p["reduced"]["compression"] for p in points], "o-", color="C2")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel("compression factor")
    for p in points:
        ax2.annotate(f"test {p['reduced']['test_acc']:.4f}\n(full {p['full']['test_acc']:.4f})",
                     (p[key], p["reduced"]["compression"]), fontsize=7)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--recipe", default=str(ROOT / "configs" / "mnist_compress.yaml"))
    p.add_argument("--seeds", type=int, default=0, help="number of seeds (default: 3 quick, 10 full)")
    p.add_argument("--seed-list", default="", help="these seeds instead of 0..N-1, e.g. 3,4 (one shard of a run that "
                   "several processes share through --work)")
    p.add_argument("--baselines", default=",".join(BASELINES), help=f"subset of {','.join(BASELINES)} for the baselines part")
    p.add_argument("--drops", default="", help="thresholds for the drops part, e.g. 1e-4,1e-3 (default: the mode's)")
    p.add_argument("--widths", default="", help="width sweep values, e.g. 256,512 (default: the mode's)")
    p.add_argument("--data-root", default=mnist_root())
    p.add_argument("--work", default=str(ROOT / "runs" / "compare_mnist"))
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--logger", default="csv", choices=["csv", "wandb", "none"])
    p.add_argument("--gs-lambda", type=float, default=0.02, help="group-sparsity lambda (every stack) for the methods part")
    p.add_argument("--ls-penalty", type=float, default=5.0,
                   help="layer-sparsity penalty on stack 1 (the layer that can merge: its inputs are >= 0) for the methods part")
    p.add_argument("--milp-units", type=int, default=64, help="at most this many MILPs in the stable-units row")
    args = p.parse_args()
    parts = [x for x in args.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    mode = MODES[args.mode]
    seeds = list(range(args.seeds or mode["seeds"]))
    if args.seed_list:
        try:
            seeds = sorted({int(x) for x in args.seed_list.split(",") if x.strip()})
        except ValueError:
            raise SystemExit(f"--seed-list takes comma-separated integers, e.g. 3,4 (got '{args.seed_list}')") from None
    baselines = tuple(x for x in args.baselines.split(",") if x)
    if set(baselines) - set(BASELINES) or not baselines:
        raise SystemExit(f"--baselines: choose from {', '.join(BASELINES)} (got '{args.baselines}')")
    drops = mode["drops"]
    if args.drops:
        try:
            drops = [float(x) for x in args.drops.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(f"--drops takes comma-separated numbers, e.g. 1e-4,1e-3 (got '{args.drops}')") from None
    widths = [int(w) for w in args.widths.split(",")] if args.widths else mode["widths"]
    b = Bench(args)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    summary_path = results / f"compare_mnist_{args.mode}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update({"mode": args.mode, "git_commit": git_commit(), "recipe": str(Path(args.recipe).resolve().relative_to(ROOT)
                    if Path(args.recipe).resolve().is_relative_to(ROOT) else args.recipe),
                    "recipe_config": to_container(b.recipe)})
    # parts may be run one at a time, with different --seeds: each part records its own seeds and command
    command = " ".join(["python", "bench/compare_mnist.py", *sys.argv[1:]])
    for part in parts:
        summary.setdefault("part_seeds", {})[part] = seeds
        summary.setdefault("part_commands", {})[part] = command
    if "seeds" in parts:
        summary.update({"seeds": seeds, "command": command})

    def save() -> None:  # after every part: a stopped run keeps what it finished
        summary_path.write_text(json.dumps(summary, indent=1))

    if "seeds" in parts:
        summary["seeds_runs"] = part_seeds(b, seeds)
        reds = [r["reduced"] for r in summary["seeds_runs"]]
        summary["seeds_summary"] = {
            "neurons_mean": statistics.fmean(r["neurons"] for r in reds),
            "test_acc_mean": statistics.fmean(r["test_acc"] for r in reds),
            "full_test_acc_mean": statistics.fmean(r["full"]["test_acc"] for r in summary["seeds_runs"]),
            "compression_mean": statistics.fmean(r["compression"] for r in reds),
            **{f"ratio_pruned_{scope}_over_reduced_train_errors": [r[f"ratio_pruned_{scope}_over_reduced_train_errors"]
                                                                  for r in summary["seeds_runs"]] for scope in ("global", "layer")},
            "global_pruning_10x_errors_at_compression": [r["global_pruning_10x_errors_at_compression"] for r in summary["seeds_runs"]],
        }
        save()
    if "control" in parts:
        summary["control"] = part_control(b, seeds)
        save()
    if "baselines" in parts:
        summary["baselines"] = part_baselines(b, seeds, baselines)
        summary["baselines_summary"] = summarize_methods(summary["baselines"])
        for m in summary["baselines_summary"]:
            print(f"[baselines] {m['method']:<26} test {m['test_acc_mean']:.4f} +- {m['test_acc_sd']:.4f}  train "
                  f"{m['train_acc_mean']:.4f}  epochs {m['epochs']}", flush=True)
        save()
    if "methods" in parts:
        summary["methods"] = part_methods(b, args.gs_lambda, args.ls_penalty)
        save()
    if "drops" in parts:
        summary["drops"] = part_drops(b, seeds, drops)
        write_csv(results / f"compare_mnist_{args.mode}_fig8.csv", summary["drops"])
        plot_drops(results / f"compare_mnist_{args.mode}_fig8.png", summary["drops"])
        save()
    if "time" in parts:
        summary["time"] = part_time(b, mode["time_fractions"])
        plot_sweep(results / f"compare_mnist_{args.mode}_fig10.png", summary["time"], "epochs", "training epochs (schedule stretched)",
                   "training-time sweep (seed 0, first round: train then one reduction)")
        save()
    if "width" in parts:
        summary["width"] = part_width(b, widths)
        plot_sweep(results / f"compare_mnist_{args.mode}_fig9.png", summary["width"], "n", "n_j (width of every stack before reduction)",
                   "width sweep (seed 0, first round: train then one reduction)")
        save()
    print(f"wrote {summary_path}")


if __name__ == "__main__":
    main()
