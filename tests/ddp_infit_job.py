"""A user's own DDP job: own DataModule and LightningModule, ReductionCallback inside the fit.

    python tests/ddp_infit_job.py OUT_DIR

Lightning re-runs this script once per extra process; every rank writes the checksum and the
widths of its final network to ``OUT_DIR/rank<r>.txt``.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
from byo import BlobsDataModule, MyClassifier

from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.checkpoint import network_checksum

if __name__ == "__main__":
    out = Path(sys.argv[1])
    pl.seed_everything(0)
    module = MyClassifier()
    cb = ReductionCallback(max_drop=0.02, at_epochs=[2], optimizer_state="carry", report_path=out / "reduction_report.json")
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(out), callbacks=[cb])
    trainer.fit(module, datamodule=BlobsDataModule(n=800))
    widths = " ".join(map(str, module.body.widths))
    (out / f"rank{trainer.global_rank}.txt").write_text(f"{network_checksum(module.body)} {widths} {len(cb.reports)}\n")
