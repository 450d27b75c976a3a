"""Generations of a network on changing data: ``continue=<previous job>`` as a config, a fit
that starts from a checkpoint (``init_from``) checked against its new data, its input scaling
kept or refitted, and the lineage that the checkpoint and the reduction report carry.

A *generation* is a fit that starts from a parent checkpoint. ``data_info["lineage"]`` lists
them oldest first: generation 0 (a fresh fit: its data file, hash and rows) and then, per
generation, the parent checkpoint (path and SHA-256), the data (file and SHA-256), its rows per
split, the input scaling (``kept``/``refitted``) and the parent's metrics on the new data's
splits (``parent_metrics``: the previous network as it was saved, raw rows in). The reduction
history restarts when the data changed (metrics on other data do not compare), so
``reduce.baseline=first`` and the summary's comparisons stay on one data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from .checkpoint import CheckpointError, read_checkpoint
from .config import ConfigError, load_config, to_container
from .data import check_against
from .data.files import file_sha256
from .evaluation import evaluate_source
from .module import StackModule, load_module
from .preprocess import has_statistics
from .reduction.job import data_label, module_sources
from .rundir import is_launch_rank_zero

LINEAGE_KEY = "lineage"
MOVED_STDS = 3.0  # a feature whose training mean moved by more than this many stored stds is named


# --------------------------------------------------------------------------- continue=<job>
def parent_checkpoint(previous: str) -> Path:
    """The network ``continue=<previous>`` starts from: ``<previous>`` itself when it is a
    checkpoint file; for a job folder its ``final.ckpt``, or the reduced checkpoint of a single fit
    reduced after training (``reduce.after_training``)."""
    prev = Path(previous).expanduser()
    if prev.is_file():
        return prev
    final = prev / "final.ckpt"
    if not final.is_file():
        raise ConfigError(f"continue={previous}: no finished job there (looked for {final}); give a finished job's "
                          "out_dir or a checkpoint file")
    cfg = read_checkpoint(final)["hyper_parameters"]["config"]
    reduce_cfg = cfg.get("reduce", {}) if isinstance(cfg, dict) else {}
    if isinstance(reduce_cfg, dict) and reduce_cfg.get("after_training") and not cfg.get("rounds"):
        reduced = Path(reduce_cfg.get("output") or prev / "final_reduced.ckpt")
        if reduced.is_file():
            return reduced
    return final


def continue_config(previous: str, path: str | None, overrides: list[str]) -> DictConfig:
    """The config of ``python train.py [config.yaml] continue=<previous> [key=value ...]``: the
    previous job's config, with ``init_from`` its final network, ``rounds`` its last round (a
    fine-tune and reduce; none for a single fit), ``data.scaling=keep``; then the YAML file and
    the overrides on top (e.g. ``data.path=week2.csv out_dir=runs/w2 'rounds+=[{epochs: 10}]'``).

    Raises:
        ConfigError: no finished job or checkpoint at ``previous``; ``init_from`` or
            ``ckpt_path`` also given; ``out_dir`` the previous job's own folder.
    """
    for item in overrides:
        if item.partition("=")[0] in ("init_from", "ckpt_path", "continue"):
            raise ConfigError(f"continue={previous} sets where the fit starts; drop '{item}'")
    ckpt = parent_checkpoint(previous)
    base = read_checkpoint(ckpt)["hyper_parameters"]["config"]
    if not isinstance(base, dict):
        raise CheckpointError(f"{ckpt}: its stored config is not a mapping; it is not a lightning_stacks checkpoint")
    base = {k: v for k, v in base.items() if k not in ("overwrite", "ckpt_path")}  # only this command line may
    base["init_from"] = str(ckpt)
    base["rounds"] = list(base.get("rounds") or [])[-1:]
    if isinstance(base.get("data"), dict):
        base["data"] = {**base["data"], "scaling": "keep"}
    if isinstance(base.get("reduce"), dict):
        base["reduce"] = {**base["reduce"], "output": ""}
    cfg = load_config(path, overrides, base=base)
    if cfg.init_from != str(ckpt) or cfg.ckpt_path:
        raise ConfigError(f"continue={previous} sets where the fit starts; drop init_from and ckpt_path from {path}")
    out, parent_dir = Path(cfg.out_dir).resolve(), ckpt.resolve().parent
    if out in (parent_dir, parent_dir.parent if parent_dir.name == "rounds" else parent_dir):
        raise ConfigError(f"continue={previous} writes a new job: give out_dir=<a new folder> (out_dir is {cfg.out_dir}, "
                          "the previous job's)")
    return cfg


# --------------------------------------------------------------------------- a generation's start
def rows_of(info: dict[str, Any]) -> dict[str, int]:
    return {s: int(info[f"n_{s}"]) for s in ("train", "val", "test") if isinstance(info.get(f"n_{s}"), int)}


def data_record(info: dict[str, Any]) -> dict[str, Any]:
    """Which data a generation used: file (or data set), its SHA-256 (files) and rows per split."""
    return {"data": info.get("source") or info.get("dataset"), "data_sha256": info.get("sha256"), "rows": rows_of(info)}


def lineage_of(info: dict[str, Any]) -> list[dict]:
    """``info``'s lineage; for a checkpoint saved before lineages, its generation 0 from its data_info."""
    lineage = info.get(LINEAGE_KEY)
    if isinstance(lineage, list) and lineage:
        return [dict(g) for g in lineage if isinstance(g, dict)]
    return [{"generation": 0, "parent": None, "parent_sha256": None, **data_record(info),
             "scaling": "fitted" if info.get("x_mean") is not None else "none"}]


def same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two data_info dicts describe the same data: equal file hashes (and rows) when both
    have one, else the same source (or data set) and rows per split; True when ``a`` does not say
    which data it was (a checkpoint of a built-in data set saved without it)."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"] and rows_of(a) == rows_of(b)
    ka, kb = a.get("source") or a.get("dataset"), b.get("source") or b.get("dataset")
    if ka is None or kb is None:
        return True
    return ka == kb and (not rows_of(a) or rows_of(a) == rows_of(b))


def first_generation(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with the lineage of a fresh fit (generation 0)."""
    return {**info, LINEAGE_KEY: lineage_of({k: v for k, v in info.items() if k != LINEAGE_KEY})}


def _moved_feature(parent: dict, found: dict) -> str:
    """The feature whose training mean moved most, in stored stds, when beyond ``MOVED_STDS``."""
    if found.get("x_mean") is None or parent.get("x_mean") is None or len(found["x_mean"]) != len(parent["x_mean"]):
        return ""
    moved = np.abs(np.subtract(found["x_mean"], parent["x_mean"])) / np.asarray(parent["x_std"], dtype=float)
    j = int(np.argmax(moved))
    if moved[j] <= MOVED_STDS:
        return ""
    names = found.get("feature_names") or [str(i) for i in range(len(moved))]
    return f"; on this training split '{names[j]}' moved by {moved[j]:.3g} stored stds (data.scaling=refit fits the scaling to it)"


def parent_metrics(parent: StackModule, cfg: DictConfig, dm) -> dict[str, float]:
    """The parent network as it was saved (its own input layer, raw rows in) on the new data's
    validation and test splits."""
    sources = module_sources(parent, cfg, dm)
    return {s: evaluate_source(parent.net, sources[s], parent.task) for s in ("val", "test") if s in sources}


def start_generation(cfg: DictConfig, dm, info: dict[str, Any]) -> StackModule:
    """The module a fit from ``cfg.init_from`` starts with, on the data ``dm`` (``info``: its
    ``describe_data``): the checkpoint's network, checked against the data first
    (:func:`~lightning_stacks.data.check_against`: a one-line DataMismatch before any training);
    its input scaling kept (``data.scaling=keep``) or refitted on this training split; a new
    lineage record; the reduction history kept on the same data, restarted on new data."""
    parent = load_module(cfg.init_from, to_container(cfg))
    check_against(parent.data_info, info, data_label(cfg))
    pinfo = parent.data_info
    new = {k: v for k, v in info.items() if k not in ("x_mean", "x_std", LINEAGE_KEY)}
    refit = cfg.data.scaling == "refit"
    stats = info if refit else (parent.inputs.statistics() if has_statistics(parent.inputs) else {})
    new.update({k: stats[k] for k in ("x_mean", "x_std") if stats.get(k) is not None})
    scaling = ("refitted" if refit else "kept") if "x_mean" in new else "none"
    record = {"generation": len(lineage_of(pinfo)), "parent": str(Path(cfg.init_from).resolve()),
              "parent_sha256": file_sha256(cfg.init_from), "parent_widths": list(parent.net.widths), **data_record(info),
              "scaling": scaling, "parent_metrics": parent_metrics(parent, cfg, dm)}
    new[LINEAGE_KEY] = lineage_of(pinfo) + [record]
    same = same_data(pinfo, info)
    history = parent.history if same else []
    module = StackModule(to_container(cfg), architecture=parent.net.architecture(), history=history, data_info=new)
    module.net.load_state_dict(parent.net.state_dict())
    if is_launch_rank_zero():
        where = data_label(cfg)
        if scaling == "kept":
            print(f"[data] input scaling: kept from {cfg.init_from} (data.scaling=keep){_moved_feature(pinfo, info)}", flush=True)
        elif scaling == "refitted":
            print(f"[data] input scaling: refitted on the training split of {where} (data.scaling=refit)", flush=True)
        print(f"[lineage] generation {record['generation']}: from {cfg.init_from} (widths {record['parent_widths']}) on "
              f"{where}; reduction history {'carried on (same data)' if same else 'restarted (new data)'}", flush=True)
    return module


# --------------------------------------------------------------------------- the end of a generation
def comparison(module: StackModule, metrics: dict[str, float]) -> str | None:
    """``previous -> new`` on this generation's data (val and test), or None for a fresh fit:
    the metrics of the parent network (measured when the generation started) and of ``module``
    (``metrics`` as ``final_metrics`` names them: ``val_mse``, ...)."""
    lineage = module.data_info.get(LINEAGE_KEY) or []
    last = lineage[-1] if lineage else {}
    before = last.get("parent_metrics") if isinstance(last, dict) else None
    if not before:
        return None
    unit = "acc" if module.task == "classification" else "mse"
    parts = [f"{s} {unit} {before[s]:.4g} -> {metrics[f'{s}_{unit}']:.4g}" for s in ("val", "test")
             if s in before and f"{s}_{unit}" in metrics]
    data = Path(str(last.get("data"))).name
    neurons = f"neurons {sum(last.get('parent_widths') or [])} -> {sum(module.net.widths)}"
    return f"previous -> new network on {data}'s validation/test split: {', '.join(parts)}; {neurons}"
