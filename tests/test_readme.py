"""The README's examples run as written.

Every code block in README.md preceded by a line ``<!-- test: NAME -->`` is run here: a python
block as a script in a fresh subprocess whose working directory is a temporary folder; a bash
block line by line (only its ``python train.py`` / ``python reduce.py`` commands, run with this
interpreter on the repository's scripts, ``configs/`` linked into the folder). Each example's
stdout must hold what the README says it prints (``EXPECT``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUDGET_S = 240  # per example; each takes seconds, most of it importing Lightning

MARKED = re.compile(r"^<!-- test: ([\w-]+) -->\n```(\w+)\n(.*?)^```", re.S | re.M)

# what each example's output must contain (regular expressions over stdout)
EXPECT = {
    "quickstart": [r"\[data\] sine: 1 inputs -> regression, 7 outputs", r"neurons per stack: 16/16/8 \(total 40\)",
                   r"\nval_mse=[\d.]+\n", r"\[reduce\] cluster", r"neurons 40 -> \d+",
                   r"reduced checkpoint: run/final_reduced\.ckpt"],
    "reload": [r"regression \[16, 16, 8\] -> \[\d+, \d+, \d+\]", r"torch\.Size\(\[5, 7\]\)"],
    "own-datamodule": [r"\[reduce\] weak", r"widths: \[\d+, \d+\] reductions: 2"],
    "own-module": [r"\[reduce\] mlp cluster", r"BatchNorm1d 1 folded into Linear 0", r"\(1\): Identity\(\)",
                   r"\(3\): Dropout\(p=0\.1",
                   r"\nLinear\(in_features=8, out_features=(\d|[1-9]\d|1[01]\d|12[0-7]), bias=True\)\n"],
    "retrain": [r"wrote weekly/week4_missing\.csv", r"\[data\] input scaling: refitted on the training split of data\.path=weekly/week2\.csv",
                r"previous -> new network on week2\.csv's validation/test split: val mse [\d.e+]+ -> 0\.\d+, test mse",
                r"\[data\] input scaling: kept from runs/w2/final\.ckpt \(data\.scaling=keep\)",
                r"previous -> new network on week3\.csv's validation/test split"],
    "cnn-head": [r"\[reduce\] head cluster", r"Linear\(in_features=128, out_features=(\d|[1-9]\d|1[01]\d|12[0-7]),",
                 r"\) 17882 -> \d+\n"],
}


def blocks() -> dict[str, tuple[str, str]]:
    """{name: (language, code)} of the marked blocks, in README order."""
    found = {}
    for name, lang, code in MARKED.findall(README.read_text()):
        assert name not in found, f"two README blocks are marked {name!r}"
        found[name] = (lang, code)
    return found


def env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "example.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=BUDGET_S)


def run_bash(code: str, cwd: Path) -> str:
    """Run the block's ``python <script>.py ...`` lines in order; return their stdout joined."""
    (cwd / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    out = []
    for line in code.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:1] != ["python"] or not argv[1:2] or not argv[1].endswith(".py"):
            continue
        proc = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], cwd=cwd, env=env(),
                              capture_output=True, text=True, timeout=BUDGET_S)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        out.append(proc.stdout)
    assert out, "the block holds no python commands"
    return "".join(out)


def check(name: str, stdout: str) -> None:
    for pattern in EXPECT[name]:
        assert re.search(pattern, stdout), f"README example {name!r}: output lacks {pattern!r}:\n{stdout[-3000:]}"


def test_every_marked_block_is_tested():
    assert set(blocks()) == set(EXPECT), "mark README blocks with <!-- test: NAME --> and list NAME in EXPECT"


def test_python_examples_are_short():
    for name, (lang, code) in blocks().items():
        if lang == "python":
            assert len(code.splitlines()) <= 20, f"README example {name!r} has more than 20 lines"


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    """The quick-start commands run in a fresh folder (the reload example reads what they write)."""
    cwd = tmp_path_factory.mktemp("quickstart")
    lang, code = blocks()["quickstart"]
    assert lang == "bash"
    return cwd, run_bash(code, cwd)


def test_quickstart_commands(quickstart_dir):
    cwd, stdout = quickstart_dir
    check("quickstart", stdout)
    assert stdout.rstrip().splitlines()[-1].startswith("reduced checkpoint:")
    assert (cwd / "run" / "final.ckpt").is_file() and (cwd / "run" / "final_reduced.ckpt").is_file()


def test_retrain_commands(tmp_path):
    lang, code = blocks()["retrain"]
    assert lang == "bash"
    check("retrain", run_bash(code, tmp_path))
    assert (tmp_path / "runs" / "w3" / "final.ckpt").is_file()


def test_reload_example(quickstart_dir):
    cwd, _ = quickstart_dir
    proc = run_python(blocks()["reload"][1], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check("reload", proc.stdout)


@pytest.mark.parametrize("name", ["own-datamodule", "own-module", "cnn-head"])
def test_python_example(name, tmp_path):
    lang, code = blocks()[name]
    assert lang == "python"
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check(name, proc.stdout)
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()} - {"example.py"}
    allowed = {"reduction_report.json", "reduction_report.txt", "small.ckpt"}
    written = {n for n in written if not n.endswith(".ckpt") or n == "small.ckpt"}  # Lightning's own epoch checkpoints
    assert written <= allowed, f"unexpected files: {written}"
