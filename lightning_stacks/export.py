"""The deployed model as a file: TorchScript (``.pt``/``.ts``), ``torch.export`` (``.pt2``) or ONNX
(``.onnx``, needs the ``[export]`` extra: onnx, onnxscript, onnxruntime), loaded back and
compared with the model on sample inputs."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import LightningStacksError

FORMATS = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "torch.export", ".onnx": "onnx"}


class ExportError(LightningStacksError):
    """The model cannot be exported in the asked format, or the file does not reproduce it."""


@contextlib.contextmanager
def _quiet_exporters():
    # TorchScript is deprecated in recent torch (a DeprecationWarning on every trace); the ONNX
    # exporter logs one warning per torchvision op it cannot register when torchvision is absent,
    # and Lightning-era pytree helpers warn about LeafSpec. None of it concerns the exported model.
    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch._dynamo", "torch.export"]
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def export_model(model: nn.Module, sample: torch.Tensor, path: str | Path, verbose: bool = True) -> float:
    """Write ``model`` (in eval mode) to ``path`` in the format its suffix names, load the file
    back, and return the largest absolute difference between the file's and the model's outputs
    on ``sample`` (B, ...) — and on a batch of another size, since the batch dimension is dynamic.

    Args:
        model: any module whose ``forward`` takes one tensor (a LightningModule with a forward,
            a reduced ``nn.Sequential``...); moved to the CPU for export, then back.
        sample: example inputs (at least 2 rows).
        path: ``.pt``/``.ts`` (TorchScript), ``.pt2`` (``torch.export``) or ``.onnx``.
        verbose: print one line: file, format, max |difference|.

    Raises:
        ExportError: an unknown suffix, a missing ONNX package, or an export that fails.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise ExportError(f"{path}: unknown export format '{path.suffix}'; use one of {', '.join(FORMATS)}")
    if not isinstance(sample, torch.Tensor) or sample.dim() < 2 or sample.shape[0] < 2:
        raise ExportError("sample must be a tensor of at least 2 example inputs (batch first)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval().cpu()
    x, other = sample.detach().cpu(), torch.cat([sample.detach().cpu()] * 2)[:-1]  # a second batch size
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), _quiet_exporters():
            run = _export(model, x, path, fmt)
            diff = max(float((run(t) - model(t)).abs().max()) for t in (x, other))
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - any exporter failure: one line naming the format
        raise ExportError(f"exporting to {fmt} failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:300]}") from None
    finally:
        model.to(device).train(was_training)
    if verbose:
        print(f"[export] {path} ({fmt}): max |output difference| on {x.shape[0]} + {other.shape[0]} sample inputs = {diff:.2e}")
    return diff


def _export(model: nn.Module, x: torch.Tensor, path: Path, fmt: str):
    """Write the file; returns a function running it on a tensor."""
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, x), str(path))
        loaded = torch.jit.load(str(path))
        return lambda t: loaded(t)
    batch = torch.export.Dim("batch", min=1)
    if fmt == "torch.export":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: batch},)), str(path))
        program = torch.export.load(str(path)).module()
        return lambda t: program(t)
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX export needs the [export] extra: pip install -e '.[export]' (onnx, onnxscript, onnxruntime)") from None
    torch.onnx.export(model, (x,), str(path), dynamic_shapes=({0: batch},), verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda t: torch.from_numpy(session.run(None, {name: t.numpy()})[0])
