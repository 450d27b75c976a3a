"""A user's own DDP job on a plain Sequential: reduced at epoch 2 (optimizer state and StepLR
carried) and at the end, on 2 gloo processes.

    python tests/ddp_sequential_job.py OUT_DIR

Lightning re-runs this script once per extra process; every rank writes the checksum, the layer
kinds and widths of its final MLP and the number of reductions to ``OUT_DIR/rank<r>.txt``.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
from torch import nn
from user_models import Digits, SeqClassifier

from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.checkpoint import network_checksum

if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    module = SeqClassifier(batchnorm=False, step_lr=True)
    cb = ReductionCallback(max_drop=0.02, at_epochs=[2], optimizer_state="carry", report_path=out / "reduction_report.json",
                           verbose=False)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(out), callbacks=[cb])
    trainer.fit(module, datamodule=Digits())
    kinds = ",".join(type(m).__name__ for m in module.mlp)
    widths = ",".join(str(m.out_features) for m in module.mlp if isinstance(m, nn.Linear))
    (out / f"rank{trainer.global_rank}.txt").write_text(f"{network_checksum(module.mlp)} {kinds} {widths} {len(cb.reports)}\n")
