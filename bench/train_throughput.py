"""One epoch of the MNIST 3x1024 (d=16) network: StackModule + Trainer vs a plain PyTorch loop.

    python bench/train_throughput.py [--repeats 3] [--batch-size 128 1024] [--accelerator cpu|gpu] [--cuda-graphs]

Same model class, data, loader, loss (data + l2) and Adam param groups on both sides; the Trainer
runs without logger, progress bar, validation or checkpointing (what is measured is the loop). With ``--accelerator gpu`` both sides draw their batches from the training split held
on the GPU (a device-side permutation, as ``data.device=auto`` does) and use fused Adam, so the
plain loop is the fastest eager loop this model allows. The Lightning side is one fit of
``--repeats`` epochs, each epoch timed from its start to the next one's (the Trainer's
construction, set-up and tear-down, paid once per fit, are printed apart); a plain epoch runs
before each of them and one after the fit, so both sides see the machine's drifting load alike.
The fastest epoch of each side counts. One line per batch size: ``ratio=<lightning/plain> batch=<B>``. ``--cuda-graphs`` (CUDA only): the Lightning side trains
with ``trainer.cuda_graphs=true`` (its first epoch pays the capture; the fastest epoch counts).
"""

from __future__ import annotations

import argparse
import time

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


class EpochClock(pl.Callback):
    """Wall time of each epoch of a fit, from one epoch's start to the next one's (the last one
    ends at ``on_train_end``), so every per-epoch hook of the module and the loop is inside; before
    each epoch ``between()`` runs (a plain epoch, timed by itself, outside the marks)."""

    def __init__(self, between):
        self.between, self.epochs, self.start = between, [], None

    def _lap(self, trainer) -> None:
        sync(trainer.strategy.root_device)
        if self.start is not None:
            self.epochs.append(time.perf_counter() - self.start)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._lap(trainer)
        self.between()
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._lap(trainer)


def measure(batch: int, args, device: torch.device) -> tuple[list[float], list[float], float, int]:
    """Plain and Lightning epochs interleaved (plain, Lightning, plain, ..., plain): the machine's
    load drifts, so both sides see the same conditions. Returns (plain epoch seconds, Lightning
    epoch seconds, seconds of the fit outside its epochs, steps per epoch)."""
    extra = ["trainer.cuda_graphs=true", "trainer.accelerator=gpu", "trainer.devices=1"] if args.cuda_graphs else []
    cfg = load_config(ROOT / "configs" / "mnist.yaml", [*extra, f"data.root={mnist_root()}", f"trainer.max_epochs={args.repeats}",
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
    loader = TensorBatchLoader(x, y, batch, shuffle=True, seed=0)
    plain_t: list[float] = []
    clock = EpochClock(lambda: plain_t.append(timed(plain_epoch, plain, loader, opt)[1]))
    t0 = time.perf_counter()
    trainer = pl.Trainer(max_epochs=args.repeats, accelerator=args.accelerator, devices=1, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False, callbacks=[clock])
    trainer.fit(lit, datamodule=dm)
    sync(trainer.strategy.root_device)
    rest = time.perf_counter() - t0 - sum(clock.epochs) - sum(plain_t)
    plain_t.append(timed(plain_epoch, plain, loader, opt)[1])
    return plain_t, clock.epochs, rest, len(loader)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="epochs of the fit (the plain loop runs one more)")
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
        plain_t, lit_t, rest, steps = measure(batch, args, device)
        print(f"batch={batch} steps/epoch={steps}")
        print(f"  plain epochs s: {', '.join(f'{t:.3f}' for t in plain_t)}")
        print(f"  lightning epochs s (one fit, each after a plain one): {', '.join(f'{t:.3f}' for t in lit_t)}; "
              f"Trainer construction, set-up and tear-down once per fit: {rest:.3f} s")
        print(f"ratio={min(lit_t) / min(plain_t):.3f} batch={batch}")


if __name__ == "__main__":
    main()
