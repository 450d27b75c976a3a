"""One epoch of the MNIST 3x1024 (d=16) network: StackModule + Trainer vs a plain PyTorch loop.

    python bench/train_throughput.py [--repeats 2] [--batch-size 128]

Same model class, data, loader, batch size, loss (data + l2) and Adam param groups; the Trainer
runs without logger, progress bar, validation or checkpointing (what is measured is the loop).
Each side runs ``--repeats`` epochs, alternating, and the fastest epoch of each counts.
Last line: ``ratio=<lightning/plain>`` (target <= 1.15).
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from _common import ROOT, mnist_root, timed

from lightning_stacks.config import load_config, to_container
from lightning_stacks.data import MNISTDataModule, TensorBatchLoader
from lightning_stacks.module import StackModule


def plain_epoch(module: StackModule, loader: TensorBatchLoader, opt) -> None:
    module.train()
    for x, y in loader:
        loss = module.data_loss(module(x), y) + module.l2_penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def lightning_epoch(module: StackModule, dm) -> None:
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    cfg = load_config(ROOT / "configs" / "mnist.yaml", [f"data.root={mnist_root()}", "trainer.max_epochs=1",
                      f"schedule.batch_start={args.batch_size}", f"schedule.batch_end={args.batch_size}",
                      "schedule.warmup_epochs=0", "schedule.l2_start=1e-4", "schedule.l2_end=1e-4"])
    pl.seed_everything(0, verbose=False)
    lit = StackModule(to_container(cfg))
    plain = StackModule(to_container(cfg))
    plain.load_state_dict(lit.state_dict())
    plain.apply_schedule(0)  # the same l2 coefficients the Trainer sets at epoch start
    dm = MNISTDataModule(cfg.data, schedule=lit.schedule)
    x, y = dm.split("train")
    opt = plain.configure_optimizers()
    plain_t, lit_t = [], []
    for _ in range(args.repeats):
        loader = TensorBatchLoader(x, y, args.batch_size, shuffle=True, seed=0)
        plain_t.append(timed(plain_epoch, plain, loader, opt)[1])
        lit_t.append(timed(lightning_epoch, lit, dm)[1])
    steps = len(TensorBatchLoader(x, y, args.batch_size))
    print(f"threads={torch.get_num_threads()} steps/epoch={steps} batch={args.batch_size}")
    print(f"plain epochs s: {', '.join(f'{t:.2f}' for t in plain_t)}")
    print(f"lightning epochs s (incl. Trainer construction): {', '.join(f'{t:.2f}' for t in lit_t)}")
    print(f"ratio={min(lit_t) / min(plain_t):.3f}")


if __name__ == "__main__":
    main()
