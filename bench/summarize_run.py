"""Print a finished job's reduction history as the paper's tables and save a JSON summary.

    python bench/summarize_run.py runs/sine_table1/final.ckpt results/sine_table1.json --config configs/sine_table1.yaml

The summary holds the config file and command, seed, git commit, and per round: every step's
neurons per stack, parameters, train/test metric, max output change, times and chosen settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from _common import ROOT

from lightning_stacks.checkpoint import read_checkpoint
from lightning_stacks.config import from_container
from lightning_stacks.data import build_datamodule
from lightning_stacks.module import load_module
from lightning_stacks.reduction.report import ReductionReport, StepRecord
from lightning_stacks.training import final_metrics

STEP_KEYS = ("step", "widths", "params", "metrics", "max_output_change", "seconds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--config", default="", help="the config file the job ran (recorded)")
    p.add_argument("--extra", default="", help="extra command-line overrides the job ran with (recorded)")
    args = p.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    hp = ckpt["hyper_parameters"]
    rounds = []
    for k, rep in enumerate(hp["history"]):
        report = ReductionReport(task=rep["task"], steps=[StepRecord(**s) for s in rep["steps"]])
        print(f"round {rep.get('round', k)}: chosen clusters {rep['settings'].get('chosen_clusters')}")
        print(report.table())
        rounds.append({"round": rep.get("round", k), "steps": [{key: s[key] for key in STEP_KEYS} for s in rep["steps"]],
                       "chosen_tolerances": rep["settings"].get("chosen_tolerances"),
                       "chosen_clusters": rep["settings"].get("chosen_clusters"),
                       "evaluations": rep["evaluations"], "reduce_seconds": rep["reduce_seconds"]})
    # the job may end with fine-tuning after its last reduction: measure the network it saved
    cfg = from_container(hp["config"])
    final = final_metrics(load_module(args.checkpoint), build_datamodule(cfg.data, seed=cfg.seed))
    print("final network: " + "  ".join(f"{k}={v:.4f}" for k, v in final.items()))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    summary = {"config": args.config, "command": f"python train.py {args.config} {args.extra}".strip(), "git_commit": commit,
               "seed": hp["config"]["seed"], "resolved_config": hp["config"], "final_widths": hp["architecture"]["widths"],
               "final_metrics": final, "rounds": rounds}
    with open(args.output, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
