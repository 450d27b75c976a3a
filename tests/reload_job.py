"""A fresh process after a fit whose end-of-fit reduction shrank ``SeqClassifier.mlp``: the last
checkpoint loads with one call and gives the saved outputs, and the fit resumes from it.

    python tests/reload_job.py DIR      # DIR holds ck/last.ckpt and expected.pt
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from user_models import Digits, SeqClassifier

from lightning_stacks.callbacks import ReductionCallback
from lightning_stacks.checkpoint import load_reduced_checkpoint, restore_shapes

if __name__ == "__main__":
    out = Path(sys.argv[1])
    last = out / "ck" / "last.ckpt"
    expected = torch.load(out / "expected.pt")
    module = load_reduced_checkpoint(SeqClassifier, last).eval()  # the class: built from the stored hyper-parameters
    with torch.no_grad():
        assert torch.equal(module(expected["x"]), expected["out"]), "outputs differ"

    class Restoring(SeqClassifier):  # the other documented way: load_from_checkpoint with restore_shapes
        def on_load_checkpoint(self, checkpoint):
            restore_shapes(self, checkpoint)

    again = Restoring.load_from_checkpoint(last).eval()
    with torch.no_grad():
        assert torch.equal(again(expected["x"]), expected["out"]), "load_from_checkpoint outputs differ"
    print("identical outputs", [m.out_features for m in module.mlp if isinstance(m, torch.nn.Linear)])
    fresh = SeqClassifier()
    cb = ReductionCallback(max_drop=0.02, reference="val", verbose=False)
    trainer = pl.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(out), callbacks=[cb])
    trainer.fit(fresh, datamodule=Digits(), ckpt_path=str(last), weights_only=False)
    assert trainer.current_epoch == 5 and len(cb.reports) == 1 and cb.done, "trained on; its reduction state came back (done)"
    print("resumed", [m.out_features for m in fresh.mlp if isinstance(m, torch.nn.Linear)])
