"""One epoch of the MNIST 3x1024 (d=16) network: StackModule + Trainer vs a plain PyTorch loop.

    python bench/train_throughput.py [--repeats 2] [--batch-size 128 1024] [--accelerator cpu|gpu] [--cuda-graphs]

Same model class, data, loader, batch order, loss (data + l2) and Adam param groups on both sides;
the Trainer runs without logger, progress bar, validation or checkpointing (what is measured is
the loop). With ``--accelerator gpu`` both sides draw their batches from the training split held
on the GPU (a device-side permutation, as ``data.device=auto`` does) and use fused Adam, so the
plain loop is the fastest eager loop this model allows. Each side runs ``--repeats`` epochs,
alternating, and the fastest epoch of each counts. One line per batch size:
``ratio=<lightning/plain> batch=<B>``. ``--cuda-graphs`` (CUDA only): the Lightning side trains
with ``trainer.cuda_graphs=true`` (its first epoch pays the capture; the fastest epoch counts).
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from _common import ROOT, mnist_root, timed

from lightning_stacks.config import load_config, to_container
from lightning_stacks.data import MNISTDataModule, TensorBatchLoader
from lightning_stacks.module import StackModule


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epoch(module: StackModule, loader: TensorBatchLoader, opt) -> None:
    module.train()
    for x, y in loader:
        loss = module.data_loss(module(x), y) + module.l2_penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(loader.x.device)


def lightning_epoch(module: StackModule, dm, accelerator: str) -> None:
    trainer = pl.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    sync(trainer.strategy.root_device)


def measure(batch: int, args, device: torch.device) -> tuple[list[float], list[float], int]:
    extra = ["trainer.cuda_graphs=true", "trainer.accelerator=gpu", "trainer.devices=1"] if args.cuda_graphs else []
    cfg = load_config(ROOT / "configs" / "mnist.yaml", [*extra, f"data.root={mnist_root()}", "trainer.max_epochs=1",
                      f"schedule.batch_start={batch}", f"schedule.batch_end={batch}",
                      "schedule.warmup_epochs=0", "schedule.l2_start=1e-4", "schedule.l2_end=1e-4"])
    pl.seed_everything(0, verbose=False)
    lit = StackModule(to_container(cfg))
    plain = StackModule(to_container(cfg))
    plain.load_state_dict(lit.state_dict())
    plain.apply_schedule(0)  # the same l2 coefficients the Trainer sets at epoch start
    plain.to(device)
    dm = MNISTDataModule(cfg.data, schedule=lit.schedule)
    x, y = (t.to(device) for t in dm.split("train"))
    opt = plain.configure_optimizers()  # fused Adam on CUDA, as the module's own fit uses
    plain_t, lit_t = [], []
    for _ in range(args.repeats):
        loader = TensorBatchLoader(x, y, batch, shuffle=True, seed=0)
        plain_t.append(timed(plain_epoch, plain, loader, opt)[1])
        lit_t.append(timed(lightning_epoch, lit, dm, args.accelerator)[1])
    return plain_t, lit_t, len(TensorBatchLoader(x, y, batch))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--cuda-graphs", action="store_true", help="the Lightning side replays its step as a CUDA graph")
    args = p.parse_args()
    if args.cuda_graphs and args.accelerator != "gpu":
        raise SystemExit("--cuda-graphs needs --accelerator gpu")
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--accelerator gpu but CUDA is not available")
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, threads={torch.get_num_threads()}"
    print(f"device: {name}")
    for batch in args.batch_size:
        plain_t, lit_t, steps = measure(batch, args, device)
        print(f"batch={batch} steps/epoch={steps}")
        print(f"  plain epochs s: {', '.join(f'{t:.3f}' for t in plain_t)}")
        print(f"  lightning epochs s (incl. Trainer construction): {', '.join(f'{t:.3f}' for t in lit_t)}")
        print(f"ratio={min(lit_t) / min(plain_t):.3f} batch={batch}")


if __name__ == "__main__":
    main()
