"""Read an offline WandB run (history, summary, config) from its ``run-*.wandb`` file, without an
account or the network: for plots of the dashboard's curves and for tests.

wandb >= 0.2x no longer ships a Python reader; the file is a LevelDB-style log (a 7-byte
``:W&B`` header, then 32 KiB blocks of records framed as crc32 (4) + length (2, LE) + type (1),
types FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) of protobuf ``Record`` messages.
"""

from __future__ import annotations

import json
from pathlib import Path

BLOCK = 32768
HEADER = 7


def records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file")
    out, buf, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
            buf = b""
    return out


def history(run_file: Path) -> list[dict]:
    """Every logged history row as a dict ``key -> value``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in records(run_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows


def _updates(run_file: Path, kind: str) -> dict:
    from wandb.proto import wandb_internal_pb2

    out = {}
    for raw in records(run_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == kind:
            for item in getattr(rec, kind).update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def summary(run_file: Path) -> dict:
    """The run summary as last written: ``key -> value``."""
    return _updates(run_file, "summary")


def config(run_file: Path) -> dict:
    """The run config: ``key -> value`` (WandB's own ``_wandb`` entry included): the run
    record's initial config, then any later config updates."""
    from wandb.proto import wandb_internal_pb2

    out = {}
    for raw in records(run_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "run":
            out.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.run.config.update})
    return {**out, **_updates(run_file, "config")}


def run_file(run_dir: Path) -> Path:
    """The ``run-*.wandb`` file under a job's out_dir (its newest offline run) or a run folder."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    found = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")) or sorted(run_dir.glob("run-*.wandb"))
    if not found:
        raise FileNotFoundError(f"no offline WandB run under {run_dir} (expected wandb/offline-run-*/run-*.wandb)")
    return found[-1]
