"""``StackModule``: the LightningModule that trains a :class:`DeepStackNetwork` the paper's way.

- explicit l2 in the loss: ``l2 * (|V|^2 + |b|^2 + |W|^2) + l2_affine * (|A1|^2 + |A2|^2 or |S|^2)``,
  nothing on the bottleneck biases c;
- Adam with three param groups (non-linear weights, bottleneck biases, affine weights at
  ``affine_lr_mult`` x LR);
- per-epoch l2 / LR / batch size from :class:`Schedule` (the DataModule reads the batch size);
- optionally (``distill.weight`` > 0) a teacher term: the outputs of a frozen teacher network
  (the full network, when fine-tuning a reduced one) as soft targets;
- optionally (``trainer.cuda_graphs``) the whole step replayed as one CUDA graph under manual
  optimization (:mod:`.graphed_step`), with the same result as the eager step.

Checkpoints carry the architecture (all widths and skip kinds), the reduction history and the
input layer (``self.inputs``: the standardization a CSV/NPZ fit used, as buffers), so
``StackModule.load_from_checkpoint(path)(raw_rows)`` is right with no other input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics

from . import names
from .augment import image_layout, random_shift
from .checkpoint import CheckpointError, check_finite_weights, read_checkpoint
from .config import ConfigError, from_container
from .errors import LightningStacksError
from .evaluation import targets_for
from .graphed_step import GraphedStep, carry_step_count, check_trainer, set_lr
from .model import DeepStackNetwork
from .preprocess import has_statistics, input_layer
from .schedule import Schedule

ARCH_KEY = "architecture"
DATA_KEY = "data_info"
TASKS = ("classification", "regression")


class TrainingDiverged(LightningStacksError):
    """The training loss stopped being finite."""


def builtin_data_info(name: str) -> dict | None:
    """Task and widths of a built-in data set (``sine``, ``mnist``, ``digits``), known without
    loading it; None for data sets whose shapes come from the data (csv, npz, a user module)."""
    from .data import DATAMODULES

    cls = DATAMODULES.get(name)
    if cls is None:
        return None
    info = {"task": cls.task, "input_dim": cls.input_dim, "output_dim": cls.output_dim}
    if cls.image_shape is not None:
        info["image_shape"] = list(cls.image_shape)
    return info


def _sum_of_squares(params: list[torch.Tensor]) -> torch.Tensor | float:
    """``sum_p |p|^2`` over ``params`` (empty ones count 0), differentiable."""
    if not params:
        return 0.0
    return torch.stack(torch._foreach_norm(params)).square().sum()


class StackModule(pl.LightningModule):
    """The paper's training of a :class:`DeepStackNetwork` held as ``self.net``, behind the input
    layer ``self.inputs`` (the data's standardization, or the identity): ``module(raw_x)`` is
    ``net(inputs(raw_x))``, and :meth:`network_inputs` gives what ``net`` itself takes.

    Args:
        config: the job's config as a plain dict (see :mod:`lightning_stacks.config`).
        architecture: shapes to build instead of ``config.model`` (set for reduced networks).
        history: the reduction history (a list of JSON-able reports), carried in checkpoints.
    """

    reduces_whole_network = True  # ``net`` maps the module's inputs to its outputs (the reduction needs no hooks)
    logs_neuron_counts = True  # training_step logs neurons/* itself

    def __init__(self, config: dict, architecture: dict | None = None, history: list | None = None,
                 data_info: dict | None = None):
        super().__init__()
        self.cfg = from_container(config)
        info = dict(data_info) if data_info is not None else builtin_data_info(self.cfg.data.name)
        if info is None:
            raise ValueError(
                f"data.name='{self.cfg.data.name}' takes its input/output widths and task from the data: build the "
                "DataModule first and pass data_info=describe_data(dm) (or use StackModule.for_data(config, dm))"
            )
        if info.get("task") not in TASKS:
            raise ValueError(f"data_info task={info.get('task')!r} is not one of: {', '.join(TASKS)}")
        self.task = info["task"]
        self._check_memory(info, architecture)
        if architecture is None:
            m = self.cfg.model
            self.net = DeepStackNetwork.from_variant(info["input_dim"], m.widths, m.bottleneck, info["output_dim"], m.variant)
        else:
            self.net = DeepStackNetwork.from_architecture(architecture)
            want = (info.get("input_dim", self.net.input_dim), info.get("output_dim", self.net.output_dim))
            if (self.net.input_dim, self.net.output_dim) != want:
                raise ValueError(
                    f"architecture maps {self.net.input_dim} -> {self.net.output_dim} but data "
                    f"'{self.cfg.data.name}' needs {want[0]} -> {want[1]}"
                )
        info.update(input_dim=self.net.input_dim, output_dim=self.net.output_dim)
        self.inputs = input_layer(info)  # buffers in the state_dict: the checkpoint takes raw rows
        if has_statistics(self.inputs) and self.inputs.input_dim != self.net.input_dim:
            raise ValueError(f"data_info standardizes {self.inputs.input_dim} features, the network takes {self.net.input_dim}")
        self.data_info = info
        self.history: list = list(history or [])
        # logger=False: the job's config goes to the logger once, flat (loggers.build_logger),
        # not nested under hyper-parameters with the initial architecture
        self.save_hyperparameters({"config": config, ARCH_KEY: self.net.architecture(), "history": self.history,
                                   DATA_KEY: info}, logger=False)
        self.schedule = Schedule(self.cfg.schedule, self.cfg.trainer.max_epochs)
        self.l2_coef = 0.0
        self.l2_affine_coef = 0.0
        self.pending_optimizer_state: dict = {}  # set by ReductionCallback for the next fit
        self._nonfinite = torch.zeros((), dtype=torch.bool)
        self._shift_layout: tuple[int, int, int] | None = None  # augment.shift's image layout, set per fit
        self._graphed: GraphedStep | None = None  # trainer.cuda_graphs: set per fit (setup)
        self._l2_feed: tuple[torch.Tensor, torch.Tensor] | None = None  # the l2 coefficients a graph reads
        self.set_teacher(None)
        if self.task == "classification":
            n_cls = self.net.output_dim
            self.val_metric = torchmetrics.Accuracy(task="multiclass", num_classes=n_cls)
            self.test_metric = torchmetrics.Accuracy(task="multiclass", num_classes=n_cls)
        else:
            # Per-sample squared error summed over outputs, averaged over samples (the paper's MSE);
            # torchmetrics' MeanSquaredError would average over outputs too.
            self.val_metric = torchmetrics.MeanMetric()
            self.test_metric = torchmetrics.MeanMetric()

    def _check_memory(self, info: dict, architecture: dict | None) -> None:
        """Refuse a network that cannot fit before allocating it (training needs 4 copies of the
        weights: weights, gradients and Adam's two moments; a checkpoint's network 2)."""
        from .model import VARIANT_SKIP, parameter_count
        from .resources import check_fits

        t = self.cfg.trainer
        if architecture is None:
            m = self.cfg.model
            n = parameter_count(info["input_dim"], m.widths, list(m.bottleneck) + [info["output_dim"]], VARIANT_SKIP.get(m.variant, "affine"))
            check_fits(n, t.precision, 4, f"model.widths={list(m.widths)}", t.accelerator)
        elif all(k in architecture for k in ("input_dim", "widths", "dims", "skips")):
            n = parameter_count(architecture["input_dim"], architecture["widths"], architecture["dims"], architecture["skips"])
            check_fits(n, t.precision, 2, f"the stored architecture (widths {list(architecture['widths'])})", t.accelerator)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, config: dict | None = None, **unused) -> StackModule:
        """Rebuild a module from one of our checkpoints: its architecture, weights, history and data
        widths, with no other input (the data file is not needed). The file is read with
        ``weights_only=True``, so a checkpoint whose pickle would run code is refused.

        Args:
            checkpoint_path: the ``.ckpt`` file.
            map_location: optional device to move the module to.
            config: a plain config dict replacing the stored one (e.g. another ``data.root``).
        """
        if unused:
            raise TypeError(f"StackModule.load_from_checkpoint got unexpected arguments {sorted(unused)}")
        module = load_module(checkpoint_path, config)
        return module.to(map_location) if map_location is not None else module

    @classmethod
    def for_data(cls, config, datamodule) -> StackModule:
        """A fresh module whose input/output widths and task are read from ``datamodule`` (any
        LightningDataModule, see :func:`~lightning_stacks.data.describe_data`); ``config`` is a
        config (``load_config(...)``) or a plain dict of one."""
        from omegaconf import DictConfig

        from .config import to_container
        from .data import describe_data

        if isinstance(config, DictConfig):
            config = to_container(config)
        return cls(config, data_info=describe_data(datamodule))

    # ------------------------------------------------------------------ model and loss
    def network_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What ``self.net`` takes for raw rows x (B, d_0): the input layer applied (x itself when
        the data is not standardized). The reduction and every evaluation of ``net`` use it."""
        return self.inputs(x)

    @property
    def classes(self) -> list[str] | None:
        """The class names (classification on data that names them), in output order."""
        classes = self.data_info.get("classes")
        return [str(c) for c in classes] if classes else None

    @torch.no_grad()
    def predict_classes(self, x: torch.Tensor) -> list[str]:
        """Class names predicted for raw rows x (B, d_0) (class indices as text without names)."""
        if self.task != "classification":
            raise ValueError("predict_classes is for classification; call the module for regression outputs")
        names_ = self.classes or [str(i) for i in range(self.net.output_dim)]
        return [names_[i] for i in self(x).argmax(1).tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, d_0) raw rows -> (B, d_J)
        x = self.inputs(x)
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            return self.net(x)
        if self.__dict__.get("_compile_checked"):
            return compiled(x)
        # torch.compile is lazy: a missing compiler or an unsupported op shows on the first call.
        try:
            out = compiled(x)
        except Exception as err:  # noqa: BLE001 - any compiler failure: fall back to eager
            self._drop_compiled(err)
            return self.net(x)
        object.__setattr__(self, "_compile_checked", True)
        return out

    def compile_network(self, mode: str | None = None) -> bool:
        """``torch.compile`` the network for this module's forward (``mode``: ``none``,
        ``default`` or ``reduce-overhead``; default ``trainer.compile``). The compiled wrapper shares
        the network's parameters and is not a submodule: checkpoints and ``state_dict`` are those
        of the network. Call again after the network is replaced (``replace_network`` does).

        Returns:
            Whether a compiled forward is in use (False for ``none`` or when compiling failed).
        """
        mode = str(mode if mode is not None else getattr(self.cfg.trainer, "compile", "none"))
        object.__setattr__(self, "_compiled", None)
        object.__setattr__(self, "_compile_checked", False)
        if mode == "none":
            return False
        try:
            compiled = torch.compile(self.net, mode=None if mode == "default" else mode)
        except Exception as err:  # noqa: BLE001 - e.g. no dynamo on this platform
            self._drop_compiled(err)
            return False
        object.__setattr__(self, "_compiled", compiled)
        return True

    def _drop_compiled(self, err: BaseException) -> None:
        object.__setattr__(self, "_compiled", None)
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        print(f"[train] trainer.compile={self.cfg.trainer.compile}: torch.compile failed ({type(err).__name__}: {reason}); "
              "training runs eagerly", flush=True)

    def data_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, or the per-sample summed squared error averaged over the batch."""
        y = targets_for(out, y, self.task)
        if self.task == "classification":
            return F.cross_entropy(out, y)
        return (out - y).pow(2).sum(1).mean()

    def set_teacher(self, teacher) -> None:
        """The frozen network that ``distill`` trains toward: a :class:`StackModule` (its own input
        layer turns the raw rows into its network's inputs) or a :class:`DeepStackNetwork` (fed this
        module's network inputs). It is kept out of the module's submodules: not in checkpoints,
        not in the optimizer, not wrapped by DDP."""
        teacher_inputs = None
        if isinstance(teacher, StackModule):
            teacher_inputs, teacher = teacher.inputs.eval(), teacher.net
        object.__setattr__(self, "teacher_inputs", teacher_inputs)
        if teacher is not None:
            if (teacher.input_dim, teacher.output_dim) != (self.net.input_dim, self.net.output_dim):
                raise ValueError(f"teacher maps {teacher.input_dim} -> {teacher.output_dim}, the network {self.net.input_dim} -> {self.net.output_dim}")
            teacher = teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)
        if self._graphed is not None:  # a captured step reads the old teacher
            self._graphed.reset()

    def teacher_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Distance of ``out`` to the teacher's outputs on ``x``: KL between the class
        distributions softened by the temperature (times T^2, Hinton et al.), or the per-sample
        summed squared difference for regression."""
        t = self.teacher
        if t is None:
            raise RuntimeError("distill.weight > 0 but no teacher network was set (StackModule.set_teacher)")
        if t.stacks[0].W.weight.device != x.device:
            t.to(x.device)
        with torch.no_grad():
            target = t(self.network_inputs(x) if self.teacher_inputs is None else self.teacher_inputs(x))
        if self.task == "classification":
            T = float(self.cfg.distill.temperature)
            return F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(target / T, 1), log_target=True, reduction="batchmean") * T * T
        return (out - target).pow(2).sum(1).mean()

    def l2_penalty(self) -> torch.Tensor:
        """The explicit l2 term at the current epoch's coefficients (bottleneck biases excluded):
        ``l2 * sum |p|^2`` over the non-linear parameters plus ``l2_affine * sum |p|^2`` over the
        skip paths' parameters. Each group's squared norms come from one multi-tensor
        ``_foreach_norm`` (one kernel on CUDA instead of two per parameter). In a graphed fit the
        coefficients are device tensors (both terms always computed: the graph reads the tensors)."""
        total = self.net.stacks[0].W.bias.new_zeros(())
        stacks = self.net.stacks
        l2, l2_affine = self._l2_feed or (self.l2_coef, self.l2_affine_coef)
        if torch.is_tensor(l2) or l2:
            total = total + l2 * _sum_of_squares([p for s in stacks for p in s.nonlinear_parameters()])
        if torch.is_tensor(l2_affine) or l2_affine:
            total = total + l2_affine * _sum_of_squares([p for s in stacks if s.skip != "none" for p in s.affine_parameters()])
        return total

    # ------------------------------------------------------------------ optimizer and schedule
    def param_groups(self) -> list[dict[str, Any]]:
        """Adam param groups: name, params, base LR and which l2 coefficient applies."""
        lr, mult = self.cfg.optim.lr, self.cfg.optim.affine_lr_mult
        stacks = self.net.stacks
        groups = [
            {"name": "nonlinear", "params": [p for s in stacks for p in s.nonlinear_parameters()], "base_lr": lr, "l2": "nonlinear"},
            {"name": "bottleneck_bias", "params": [p for s in stacks for p in s.bias_parameters()], "base_lr": lr, "l2": "none"},
            {"name": "affine", "params": [p for s in stacks for p in s.affine_parameters()], "base_lr": lr * mult, "l2": "affine"},
        ]
        groups = [g for g in groups if g["params"]]
        for g in groups:
            g["lr"] = g["base_lr"]
        return groups

    def configure_optimizers(self):
        o = self.cfg.optim
        groups = self.param_groups()
        # Fused Adam (one kernel for all parameters) where every parameter is on CUDA; the CPU keeps
        # torch's default implementation. Not under a grad scaler with clipping: fused Adam
        # unscales internally, which Lightning's clipping refuses.
        t = self._trainer
        scaled_clip = t is not None and bool(t.gradient_clip_val) and "16-mixed" in str(t.precision)
        on_cuda = bool(groups) and all(p.is_cuda for g in groups for p in g["params"])
        fused = {"fused": True} if on_cuda and not scaled_clip else {}
        if self._graphed is not None:
            fused = self._graphed.optimizer_options()  # fused and capturable
        opt = torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, **fused)
        if self.pending_optimizer_state:  # carried over a reduction (reduce.optimizer_state=carry)
            for name, p in self.net.named_parameters():
                if name in self.pending_optimizer_state:
                    opt.state[p] = {k: (v.to(p.device) if torch.is_tensor(v) else v) for k, v in self.pending_optimizer_state[name].items()}
            self.pending_optimizer_state = {}
        if self._graphed is not None:
            self._graphed.prepare(opt)  # learning rates as device tensors the graph reads; a new graph
        return opt

    def apply_schedule(self, epoch: int) -> None:
        """Set this epoch's l2 coefficients and LRs (batch size is the DataModule's job)."""
        s = self.schedule.at(epoch)
        self.l2_coef, self.l2_affine_coef = s.l2, s.l2_affine
        if self._l2_feed is not None:  # a graphed fit: the tensors the graph reads, filled in place
            for t, value in zip(self._l2_feed, (s.l2, s.l2_affine), strict=True):
                t.fill_(value)
        if self._trainer is not None:
            for opt in self.trainer.optimizers:
                for g in opt.param_groups:
                    set_lr(g, g.get("base_lr", g["lr"]) * s.lr_mult)

    def setup(self, stage: str) -> None:
        """Before a fit: ``trainer.cuda_graphs`` checked against the Trainer (ConfigError naming the
        fix, before training) and the optimization mode it takes (manual for a graphed step)."""
        if stage != "fit":
            return
        graphs = bool(self.cfg.trainer.cuda_graphs)
        if graphs:
            check_trainer(self.trainer, str(self.cfg.trainer.compile))
        self._graphed = GraphedStep() if graphs else None
        self.automatic_optimization = not graphs

    def teardown(self, stage: str) -> None:
        if stage == "fit" and self._graphed is not None:
            self._graphed.reset()  # the graph's memory goes with the fit
            self._l2_feed = None

    def on_fit_start(self) -> None:
        # resolved once per fit (a shift without images fails here, before the first step), not per step
        self._shift_layout = self.image_layout() if self.cfg.augment.shift > 0 else None
        if self._graphed is not None:  # what the graph reads besides the optimizer's tensors, on the device
            self._l2_feed = (self.net.stacks[0].W.bias.new_zeros(()), self.net.stacks[0].W.bias.new_zeros(()))
            for part in (self.teacher, self.teacher_inputs):
                if part is not None:
                    part.to(self.device)
            self._graphed.reset()
        if self.__dict__.get("_compiled_net") is not self.net:  # compiled after the move to the device
            self.compile_network()
            object.__setattr__(self, "_compiled_net", self.net)
        # A plain Trainer may run a different number of epochs than the config says: the schedule
        # (l2 / LR / batch ramps) spans the epochs this fit really runs.
        # The DataModule may hold this same Schedule (batch sizes), so it is updated in place.
        if self._trainer is not None and (self.trainer.max_epochs or 0) > 0:
            self.schedule.total_epochs = int(self.trainer.max_epochs)

    def check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if a training loss of this epoch was NaN or infinite, or a
        weight or a validation output is now (validation runs before this check at the end of an epoch;
        the checkpoint callback asks before it writes, so the last good checkpoint is kept)."""
        # the weights too: the last step of an epoch can turn them non-finite after a finite loss
        bad_weights = not bool(torch.stack([torch.isfinite(p).all() for p in self.net.parameters()]).all())  # one sync
        if bool(self._nonfinite) or bad_weights:
            self._nonfinite.zero_()
            raise TrainingDiverged(
                f"the training loss, the weights or the validation outputs became NaN or infinite in epoch {self.current_epoch}: training stopped (the last good "
                "checkpoint, if any, is kept); lower optim.lr, check the data for NaN/Inf, or check init_from")

    def on_train_start(self) -> None:
        if self._trainer is not None:  # resumed from a checkpoint of the other optimization mode
            carry_step_count(self.trainer, manual=not self.automatic_optimization)

    def on_train_epoch_end(self) -> None:
        self.check_finite()

    def on_train_epoch_start(self) -> None:
        if self._nonfinite.device != self.device:
            self._nonfinite = self._nonfinite.to(self.device)
        epoch = self.current_epoch
        self.apply_schedule(epoch)
        s = self.schedule.at(epoch)
        # Epoch-level values are reduced across ranks when the epoch ends; these are the same on
        # every rank (the schedule's), so the mean is the value itself. Without sync_dist,
        # Lightning cannot know that and warns once per key under DDP.
        self.log_dict(
            {names.TRAIN_LAMBDA: s.l2, names.TRAIN_LR: self.cfg.optim.lr * s.lr_mult, names.TRAIN_BATCH_SIZE: float(s.batch_size)},
            on_step=False, on_epoch=True, sync_dist=True,
        )

    # ------------------------------------------------------------------ steps
    def image_layout(self, cfg=None) -> tuple[int, int, int]:
        """(C, H, W) that ``augment.shift`` moves under ``cfg`` (default: the module's config):
        ``augment.image_shape``, else the data set's. ConfigError when neither gives one, or
        when it does not hold the network's inputs."""
        cfg = self.cfg if cfg is None else cfg
        builtin = builtin_data_info(cfg.data.name) or {}  # also for checkpoints saved before data sets had shapes
        shape = list(cfg.augment.image_shape) or self.data_info.get("image_shape") or builtin.get("image_shape")
        if not shape:
            raise ConfigError(f"augment.shift={cfg.augment.shift} moves images, but data '{cfg.data.name}' has no image "
                              "shape: set augment.image_shape=[H, W] (or [C, H, W]) or augment.shift=0")
        return image_layout(shape, self.net.input_dim)

    def augment_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch's inputs after ``augment.*`` (themselves when it is off)."""
        a = self.cfg.augment
        if a.shift <= 0:
            return x
        layout = self._shift_layout or self.image_layout()  # outside a fit: resolved here
        return random_shift(x, layout, int(a.shift), float(a.fill))

    def loss_parts(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch's ``loss`` (the data loss, mixed with the distillation term when
        ``distill.weight`` > 0, plus the l2 term) and its parts: ``out`` (the outputs), ``l2``,
        ``distill`` (with a teacher). ``x`` is the batch as trained on (after ``augment``)."""
        out = self(x)
        data = self.data_loss(out, y)
        parts = {"out": out}
        w = self.distill_weight
        if w > 0:
            parts["distill"] = self.teacher_loss(out, x)  # the teacher sees the same moved images
            data = (1 - w) * data + w * parts["distill"]
        parts["l2"] = self.l2_penalty()
        parts["loss"] = data + parts["l2"]
        return parts

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = self.augment_inputs(x)  # outside a graph: a random shift is drawn per step
        logging = self._is_logging_step()  # before the step: it counts the step being taken
        parts = None
        if self._graphed is not None:  # replayed (None: this batch runs eagerly, e.g. an epoch's last, smaller one)
            parts = self._graphed.step(self.optimizers(), self.loss_parts, x, y, first=batch_idx == 0)
        if parts is None:
            parts = self.loss_parts(x, y)
            if self._graphed is not None:
                self._graphed.eager_step(self.optimizers(), parts["loss"], self.manual_backward)
        loss, out = parts["loss"], parts["out"]
        self._nonfinite |= ~torch.isfinite(loss.detach())  # checked once per epoch: no host sync per step
        if logging:
            logged = {names.TRAIN_DISTILL: parts["distill"]} if "distill" in parts else {}
            with torch.no_grad():
                if self.task == "classification":
                    logged[names.TRAIN_ACC] = (out.argmax(1) == y).float().mean()
                else:
                    logged[names.TRAIN_MSE] = (out - targets_for(out, y, self.task)).pow(2).sum(1).mean()
            logged.update(names.neuron_metrics(self.net.widths))
            self.log(names.TRAIN_LOSS, loss, on_step=True, on_epoch=False, prog_bar=True)
            self.log_dict({names.TRAIN_L2: parts["l2"], **logged}, on_step=True, on_epoch=False)
        return loss

    def _is_logging_step(self) -> bool:
        """True on the steps whose values Lightning sends to the logger (every
        ``log_every_n_steps``-th optimizer step). ``self.log`` costs ~0.7 ms per call on CPU, so
        calling it on the other steps (whose values are discarded) slows an epoch by ~10%."""
        if self._trainer is None:
            return True
        return (self.trainer.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def _eval_step(self, batch, metric, name: str) -> None:
        x, y = batch
        out = self(x)
        if metric is self.val_metric and self._trainer is not None and self.trainer.state.fn == "fit":
            # validation inside a fit (sanity check included): checked at the epoch end, no host sync here
            self._nonfinite = self._nonfinite.to(out.device) | ~torch.isfinite(out.detach()).all()
        y = targets_for(out, y, self.task)
        if self.task == "classification":
            metric.update(out, y)
        else:
            metric.update((out - y).pow(2).sum(1))
        self.log(name, metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_metric, names.metric_name("val", self.task))

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_metric, names.metric_name("test", self.task))

    # ------------------------------------------------------------------ rounds
    def set_round_config(self, cfg) -> None:
        """Train the next fit with ``cfg``'s optimizer and schedule (a round's config)."""
        self.cfg = cfg
        self.schedule = Schedule(cfg.schedule, cfg.trainer.max_epochs)
        self._shift_layout = None  # the next fit resolves it for this config

    @property
    def distill_weight(self) -> float:
        return float(self.cfg.distill.weight)

    def replace_network(self, net: DeepStackNetwork, report: dict | None = None) -> None:
        """Swap in a reduced network (between fits: the next fit builds a fresh optimizer that
        holds exactly its parameters) and append the reduction report to the history."""
        if net.input_dim != self.net.input_dim or net.output_dim != self.net.output_dim:
            raise ValueError(f"replacement maps {net.input_dim} -> {net.output_dim}, expected {self.net.input_dim} -> {self.net.output_dim}")
        self.net = net
        if report is not None:
            self.history.append(report)
        self.hparams[ARCH_KEY] = net.architecture()
        if self._graphed is not None:  # a captured step holds the old parameters
            self._graphed.reset()
        if self.__dict__.get("_compiled") is not None:  # a compiled forward holds the old network
            self.compile_network()
            object.__setattr__(self, "_compiled_net", net)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The network may have been reduced in place since __init__: save what it is now.
        hp = checkpoint.setdefault("hyper_parameters", {})
        hp[ARCH_KEY] = self.net.architecture()
        hp["history"] = self.history
        hp[DATA_KEY] = self.data_info

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming a fit whose network was reduced after this module was built: take the
        # checkpoint's shapes (its weights are loaded right after this hook) and history.
        hp = checkpoint.get("hyper_parameters") or {}
        arch = hp.get(ARCH_KEY)
        if arch and arch != self.net.architecture():
            p = next(self.net.parameters())
            self.net = DeepStackNetwork.from_architecture(arch).to(device=p.device, dtype=p.dtype)
            self.hparams[ARCH_KEY] = arch
        if "history" in hp:
            self.history = list(hp["history"] or [])
        fill_input_layer(self, checkpoint.get("state_dict"))


def fill_input_layer(module: StackModule, state_dict: dict | None) -> None:
    """A checkpoint written before modules held their input layer lacks its buffers: they are
    the module's own, built from the same ``data_info`` statistics (filled in place)."""
    if isinstance(state_dict, dict) and any(k.startswith("net.") for k in state_dict):
        for name, value in module.inputs.state_dict().items():
            state_dict.setdefault(f"inputs.{name}", value)


def load_module(path: str | Path, config: dict | None = None):
    """A :class:`StackModule` from ``path``; ``config`` (a plain dict) replaces the stored config
    (e.g. to point ``data.root`` elsewhere) while the architecture stays the checkpoint's."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path} is not a lightning_stacks checkpoint: its state_dict is not a mapping")
    check_finite_weights(ckpt["state_dict"], path)
    try:
        info = hp.get("data_info")
        if config is not None and config.get("data", {}).get("name") != hp["config"].get("data", {}).get("name"):
            info = builtin_data_info(config["data"]["name"]) or info  # another built-in data set: check its widths
        module = StackModule(config if config is not None else hp["config"], architecture=hp["architecture"],
                             history=hp.get("history"), data_info=info)
        fill_input_layer(module, ckpt["state_dict"])
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:  # a damaged or hand-made checkpoint
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({err})") from None
    except ValueError as err:  # e.g. the data set named in the config does not fit the network, or memory
        raise CheckpointError(f"{path}: {err}") from None
    return module
