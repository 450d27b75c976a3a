"""Reduce a trained Deep Stack Network with the Reduction Algorithm (SPEC section 2).

    python reduce.py runs/sine/final.ckpt reduce.tolerances=[0.04,0.06,0.2] reduce.clusters=[13,20,24]
    python reduce.py runs/sine/final.ckpt reduce.max_drop=0.01        # automatic: <= 1% relative MSE rise
    python reduce.py runs/mnist/final.ckpt reduce.max_drop=1e-3 data.root=../shared/data/mnist
    python reduce.py CKPT my_settings.yaml reduce.refit=true        # settings from a YAML file, then overrides

The checkpoint's own config is the starting point; a YAML file and ``key=value`` overrides go on
top (``reduce.*`` settings, or ``data.root``). Writes ``<ckpt>_reduced.ckpt`` (or
``reduce.output``) and the report as JSON beside it, and prints the paper-style table.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from lightning_stacks.checkpoint import read_checkpoint
    from lightning_stacks.cli import split_args
    from lightning_stacks.config import ConfigError, load_config
    from lightning_stacks.errors import LightningStacksError, one_line

    try:
        ckpt, path, overrides = split_args(argv, positional=1)
        base = read_checkpoint(ckpt)["hyper_parameters"]["config"]
        if not isinstance(base, dict):
            raise ConfigError(f"{ckpt}: its stored config is not a mapping; it is not a lightning_stacks checkpoint")
        base = {k: v for k, v in base.items() if k != "overwrite"}  # only this command line may allow overwriting
        cfg = load_config(path, overrides, base=base)
        from lightning_stacks.reduction.job import run_reduce

        module, report, out = run_reduce(ckpt, cfg)
    except LightningStacksError as err:  # a bad input: one line naming it and the fix; anything else is a bug
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print()
    print(report.table())
    if report.evaluations:
        print(f"automatic mode: {report.evaluations} evaluations, chosen tolerances "
              f"{report.settings['chosen_tolerances']} and clusters {report.settings['chosen_clusters']}")
    before, after = report.steps[0].widths, report.steps[-1].widths
    print(f"neurons {sum(before)} -> {sum(after)} ({sum(before) / max(sum(after), 1):.1f}x); "
          f"reduction {report.reduce_seconds:.2f}s, evaluation {report.eval_seconds:.2f}s")
    print(f"reduced checkpoint: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
