"""A network as a list of :class:`~.core.StackWeights`: conversion to and from
:class:`DeepStackNetwork`, forward passes, the streamed pre-activation scan, the output change
between two networks and the parameter count."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..batches import Source, iter_pairs
from ..model import DeepStackNetwork
from ..resources import available_bytes
from .core import StackWeights, preactivation_range, scan_block_bytes

Fit = tuple[torch.Tensor, list[torch.Tensor]]  # (checked inputs x, original stack outputs on x)


def stack_weights(net: DeepStackNetwork) -> list[StackWeights]:
    """Detached copies of every stack's parameters."""
    out = []
    for s in net.stacks:
        extra = {}
        if s.skip == "affine":
            extra = {"A1": s.A1.weight.detach().clone(), "A2": s.A2.weight.detach().clone()}
        elif s.skip == "direct":
            extra = {"S": s.S.weight.detach().clone()}
        out.append(StackWeights(s.V.weight.detach().clone(), s.V.bias.detach().clone(), s.W.weight.detach().clone(),
                                s.W.bias.detach().clone(), skip=s.skip, ids=torch.arange(s.n, device=s.V.weight.device), **extra))
    return out


def moved(st: StackWeights, device: torch.device | str, dtype: torch.dtype) -> StackWeights:
    """``st`` on ``device`` in ``dtype`` (``ids`` keep their integer type)."""
    conv = {k: getattr(st, k).to(device=device, dtype=dtype) for k in ("V", "b", "W", "c", "A1", "A2", "S") if getattr(st, k) is not None}
    if st.ids is not None:
        conv["ids"] = st.ids.to(device)
    return replace(st, **conv)


def build_network(stacks: list[StackWeights]) -> DeepStackNetwork:
    """A new network whose parameters are exactly ``stacks`` (same device and dtype)."""
    ref = stacks[0].V
    net = DeepStackNetwork(stacks[0].d_in, [s.n for s in stacks], [s.d_out for s in stacks], [s.skip for s in stacks])
    net = net.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for mod, st in zip(net.stacks, stacks, strict=True):
            mod.V.weight.copy_(st.V), mod.V.bias.copy_(st.b), mod.W.weight.copy_(st.W), mod.W.bias.copy_(st.c)
            if st.skip == "affine":
                mod.A1.weight.copy_(st.A1), mod.A2.weight.copy_(st.A2)
            elif st.skip == "direct":
                mod.S.weight.copy_(st.S)
    return net


def run_stacks(stacks: list[StackWeights], z: torch.Tensor, start: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Forward z_{start} (N, d) through ``stacks[start:]`` in chunks (default :func:`scan_chunk`:
    blocks that stay in the CPU's cache, ~2x faster than 16k-row blocks at n = 1024)."""
    if not stacks[start:]:
        return z
    chunk = chunk or scan_chunk(stacks[start:])
    outs = []
    for i in range(0, z.shape[0], chunk):
        h = z[i : i + chunk]
        for st in stacks[start:]:
            h = st.forward(h)
        outs.append(h)
    return torch.cat(outs)


def scan_stack(st: StackWeights, Z: torch.Tensor, need_output: bool = True,
               acts: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass over Z (N, d_in): min/max pre-activation per neuron (n,) and, if asked, the stack's
    output (N, d_out) from the same pre-activation blocks (one matmul per block, not two); with
    ``acts``, each block's activations relu(h) (B, n) are appended to it."""
    outs: list[torch.Tensor] = []
    aff = st.affine_matrix().T if st.skip != "none" else None

    def output(H: torch.Tensor, z: torch.Tensor) -> None:
        out = torch.addmm(st.c, H.clamp_min_(0), st.W.T)  # (B, d_out)
        if acts is not None:
            acts.append(H)
        outs.append(out.addmm_(z, aff) if aff is not None else out)

    hmin, hmax = preactivation_range(st.V, st.b, Z, on_block=output if need_output else None)
    return hmin, hmax, (torch.cat(outs) if need_output else None)


def scan_chunk(stacks: list[StackWeights]) -> int:
    """Rows per block of a network-wide scan: keeps the widest stack's (B, n) pre-activations
    under :func:`~.core.scan_block_bytes`."""
    width = max([st.n for st in stacks] + [1])
    return max(1, scan_block_bytes(stacks[0].V.device) // (width * stacks[0].V.element_size()))


Ranges = list[tuple[torch.Tensor, torch.Tensor]]  # (hmin (n_j,), hmax (n_j,)) per stack


def network_ranges(stacks: list[StackWeights], x: Source, chunk: int | None = None) -> tuple[Ranges, int]:
    """Every stack's pre-activation min/max over the checked inputs, in one pass through ``stacks``.

    Stack j's inputs are stack j-1's outputs on the same block, so each block of x travels the
    whole network once and only one block's activations are alive at a time.

    Args:
        stacks: the network, unchanged here.
        x: the checked inputs: a tensor (N, d_0) on any device, or a streamed source of x batches.
        chunk: rows per block (default :func:`scan_chunk`); each block is moved to the stacks' device.

    Returns:
        ([(hmin (n_j,), hmax (n_j,)) per stack], number of rows seen). With no rows: (+inf, -inf).
    """
    return _scan(stacks, _blocks(stacks, x, None, chunk or scan_chunk(stacks), False), None)


def scan_with_outputs(stacks: list[StackWeights], x: Source, cache: list[torch.Tensor] | None = None,
                      task: str | None = None, labels: torch.Tensor | None = None,
                      acts: list[torch.Tensor] | None = None) -> tuple[Ranges, int, float | None]:
    """:func:`network_ranges` that also keeps the network's outputs: one pass gives step 1 its
    ranges, fills ``cache`` (as :func:`output_pass` would, same blocks) and, with ``task``, the
    metric against the labels (``labels`` for a tensor x; a streamed source's own): the report's
    row for the unreduced network costs no pass of its own. With ``acts``, the first stack's
    activations per block are kept there for :func:`output_pass` (see :func:`first_stack_weights`).

    Returns:
        (ranges, rows seen, metric or None).
    """
    from ..evaluation import MetricSum

    total = MetricSum(task) if task is not None else None

    def keep(i: int, out: torch.Tensor, y: torch.Tensor | None) -> None:
        if cache is not None:
            cache.append(out)
        if total is not None:
            total.add(out, y)

    ranges, rows = _scan(stacks, _blocks(stacks, x, labels, scan_chunk(stacks), task is not None), keep, acts)
    return ranges, rows, (total.value() if total is not None else None)


def _blocks(stacks: list[StackWeights], x: Source, labels: torch.Tensor | None, chunk: int, need_labels: bool):
    """(x block on the stacks' device and dtype, its labels or None) pairs of a tensor or a source."""
    ref = stacks[0].V
    if isinstance(x, torch.Tensor):  # checked (shape, finite) by the caller once: slice it, no check per pass
        return ((x[s : s + chunk].to(ref.device, ref.dtype), None if labels is None else labels[s : s + chunk])
                for s in range(0, x.shape[0], chunk))
    return iter_pairs(x, chunk, ref.device, ref.dtype, width=stacks[0].d_in, need_labels=need_labels)


def _scan(stacks: list[StackWeights], blocks, on_output, acts: list[torch.Tensor] | None = None) -> tuple[Ranges, int]:
    """The pass behind :func:`network_ranges` and :func:`scan_with_outputs`: ``on_output(i, out, y)``
    (if given) receives each block's network outputs; ``acts`` the first stack's activations."""
    ref = stacks[0].V
    ranges = [(torch.full((st.n,), math.inf, dtype=ref.dtype, device=ref.device),
               torch.full((st.n,), -math.inf, dtype=ref.dtype, device=ref.device)) for st in stacks]
    rows = 0
    for i, (z, y) in enumerate(blocks):
        rows += z.shape[0]
        for j, st in enumerate(stacks):
            hmin, hmax, z = scan_stack(st, z, need_output=on_output is not None or j < len(stacks) - 1,
                                       acts=acts if j == 0 else None)
            ranges[j] = (torch.minimum(ranges[j][0], hmin), torch.maximum(ranges[j][1], hmax))
        if on_output is not None:
            on_output(i, z, y)
    return ranges, rows


def same_network(a: list[StackWeights], b: list[StackWeights]) -> bool:
    """Whether two networks hold the same tensors (a step that changed nothing)."""
    if len(a) != len(b):
        return False
    names = ("V", "b", "W", "c", "A1", "A2", "S")
    for sa, sb in zip(a, b, strict=True):
        for k in names:
            ta, tb = getattr(sa, k), getattr(sb, k)
            if (ta is None) != (tb is None) or (ta is not None and (ta.shape != tb.shape or not torch.equal(ta, tb))):
                return False
    return True


ACTS_CACHE_BYTES = 2**30  # the first stack's activations on in-memory checked inputs are kept up to this size


def acts_cache_fits(rows: int, stack: StackWeights) -> bool:
    """Whether the first stack's activations on ``rows`` inputs (rows x n) may be kept: at most
    ``ACTS_CACHE_BYTES`` and a quarter of the memory free on the stack's device (unknown: 1 GiB)."""
    need = rows * stack.n * stack.V.element_size()
    device = stack.V.device.type
    free = available_bytes(device) if device in ("cpu", "cuda") else None
    return need <= ACTS_CACHE_BYTES and (free is None or need <= free // 4)


def first_stack_weights(original: StackWeights, current: StackWeights) -> torch.Tensor | None:
    """Outgoing weights (d_out, n_original) with which the original first stack's activations give
    ``current``'s ReLU part, when every neuron of ``current`` is an original neuron with its
    incoming weights unchanged (what steps 1 and 2 leave; a merged neuron is new); else None.

    The current stack's output is then ``relu(h_original) @ W.T + c + skip(z)``, exactly its
    function (removed neurons get weight 0): a d_out-wide product instead of the d_in-deep one.
    """
    ids = current.ids
    if ids is None or original.ids is None or not torch.equal(original.ids, torch.arange(original.n, device=original.ids.device)):
        return None
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= original.n):
        return None
    ids = ids.to(original.V.device)
    if not torch.equal(current.V, original.V.index_select(0, ids)) or not torch.equal(current.b, original.b.index_select(0, ids)):
        return None
    return current.W.new_zeros(current.d_out, original.n).index_add_(1, ids, current.W)


def output_pass(original: list[StackWeights], current: list[StackWeights], x: Source, cache: list[torch.Tensor] | None = None,
                task: str | None = None, labels: torch.Tensor | None = None, chunk: int | None = None,
                acts: list[torch.Tensor] | None = None) -> tuple[float, float | None]:
    """One pass over the checked inputs giving max |current(x) - original(x)| and, with ``task``,
    current's metric against the labels (``labels`` (N, ...) for a tensor x; a streamed source's
    own), from the same outputs: the report's output change and train metric cost one forward
    pass of the current network (the original's outputs come from ``cache`` after the first).

    Args:
        original, current: two networks with the same d_0 and d_J.
        x: the checked inputs, a tensor (N, d_0) or a streamed source.
        cache: a list kept by the caller between calls on the same x: the first call fills it
            with original's outputs per block, later calls reuse them (memory (N, d_J); pass
            None for a streamed source, whose original outputs are recomputed per batch).
        task: ``classification`` or ``regression`` to measure the metric too; None = change only.
        labels: the labels of a tensor ``x``.
        chunk: rows per block (default :func:`scan_chunk` of the original network).
        acts: the original first stack's activations per block (from :func:`scan_with_outputs`, same
            blocks): used for current's first stack where :func:`first_stack_weights` allows.

    Returns:
        (max output change, metric or None).
    """
    from ..evaluation import MetricSum

    if current is original and task is None:
        return 0.0, None
    ref = original[0].V
    worst = torch.zeros((), dtype=ref.dtype, device=ref.device)
    total = MetricSum(task) if task is not None else None
    fill = cache is not None and not cache
    chunk = chunk or scan_chunk(original)  # fixed by the original network: the cache's blocks must not move
    blocks = _blocks(original, x, labels, chunk, task is not None)
    W1 = first_stack_weights(original[0], current[0]) if acts and current is not original else None
    aff1 = current[0].affine_matrix().T if W1 is not None and current[0].skip != "none" else None
    for i, (z, y) in enumerate(blocks):
        if cache is not None and not fill:
            before = cache[i]
        else:
            before = run_stacks(original, z, chunk=chunk)  # (B, d_J)
            if fill:
                cache.append(before)
        if current is original:
            after = before
        elif W1 is not None:
            z1 = torch.addmm(current[0].c, acts[i], W1.T)
            after = run_stacks(current, z1.addmm_(z, aff1) if aff1 is not None else z1, start=1, chunk=chunk)
        else:
            after = run_stacks(current, z, chunk=chunk)
        if after.numel() and current is not original:
            worst = torch.maximum(worst, (after - before).abs().max())  # on the device: no sync per block
        if total is not None:
            total.add(after, y)
    return float(worst), (total.value() if total is not None else None)


def max_output_change(original: list[StackWeights], current: list[StackWeights], x: Source,
                      cache: list[torch.Tensor] | None = None, chunk: int | None = None) -> float:
    """max |current(x) - original(x)| over the checked inputs, one block at a time (see
    :func:`output_pass`, whose ``cache`` it takes: filled by the first call on an in-memory x)."""
    return output_pass(original, current, x, cache, chunk=chunk)[0]



def count_parameters(stacks: list[StackWeights]) -> int:
    """Parameters of the dense network these stacks make (the compression accounting)."""
    total = 0
    for st in stacks:
        total += st.V.numel() + st.b.numel() + st.W.numel() + st.c.numel()
        total += sum(t.numel() for t in (st.A1, st.A2, st.S) if t is not None)
    return total
