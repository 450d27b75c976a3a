"""The package's shape, as docs/LAYOUT.md states it: every module in one layer, imports only
downward (module-level and in-function imports alike), no import circles, and the size limits
that keep one concern per file."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_stacks"
LAYOUT = ROOT / "docs" / "LAYOUT.md"
MAX_UPWARD = 0  # imports from a lower layer to a higher one that the layout tolerates
FILE_LIMIT = 600
DRIVER_LIMIT = 350  # reduction/pipeline.py: the driver runs a list of steps
CALLBACK_CLASS_LIMIT = 250


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif target in modules:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
    found.discard(name)
    return found


def layers() -> list[tuple[int, list[str]]]:
    """(layer, module patterns) from the layers table of docs/LAYOUT.md (first column a number,
    second the modules in backticks, relative to the package)."""
    out = []
    for line in LAYOUT.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            out.append((int(m.group(1)), re.findall(r"`([^`]+)`", m.group(2))))
    return out


def layer_of(modules: dict[str, Path]) -> dict[str, int]:
    table = layers()
    out: dict[str, int] = {}
    for name in modules:
        short = name.removeprefix("lightning_stacks").lstrip(".") or "lightning_stacks"
        hits = [n for n, patterns in table if any(fnmatch.fnmatchcase(short, p) for p in patterns)]
        assert len(hits) == 1, f"{short} is in {len(hits)} layers of docs/LAYOUT.md (must be exactly one)"
        out[name] = hits[0]
    return out


def test_the_layout_table_names_every_module_once():
    table = layers()
    assert len(table) >= 5, "docs/LAYOUT.md lost its layers table"
    assert [n for n, _ in table] == sorted(n for n, _ in table)
    layer_of(package_modules())


def test_imports_only_go_down_the_layers():
    modules = package_modules()
    layer = layer_of(modules)
    upward = [f"{a} ({layer[a]}) -> {b} ({layer[b]})" for a, p in modules.items()
              for b in imports_of(a, p, modules) if layer[b] > layer[a]]
    assert len(upward) <= MAX_UPWARD, "imports from a lower layer up:\n" + "\n".join(upward)


def test_no_import_circles():
    modules = package_modules()
    packages = {n for n, p in modules.items() if p.name == "__init__.py"}  # re-exports only
    graph = {n: imports_of(n, p, modules) - packages for n, p in modules.items() if n not in packages}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_stay_small(path):
    limit = DRIVER_LIMIT if path == PACKAGE / "reduction" / "pipeline.py" else FILE_LIMIT
    lines = len(path.read_text().splitlines())
    assert lines <= limit, f"{path.relative_to(ROOT)} has {lines} lines (limit {limit}): split it by concern"


def test_every_module_says_what_it_owns():
    for name, path in package_modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip(), f"{name} has no module docstring"


def test_the_reduction_callback_class_stays_thin():
    tree = ast.parse((PACKAGE / "callbacks.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ReductionCallback")
    lines = cls.end_lineno - cls.lineno + 1
    assert lines <= CALLBACK_CLASS_LIMIT, (f"ReductionCallback is {lines} lines (limit {CALLBACK_CLASS_LIMIT}): "
                                          "move the work into helpers it calls")


def test_the_checks_can_fail(tmp_path):
    """The import parser sees in-function imports and resolves relative ones."""
    pkg = tmp_path / "lightning_stacks"
    (pkg / "sub").mkdir(parents=True)
    low, high = pkg / "sub" / "low.py", pkg / "high.py"
    low.write_text('"""low"""\ndef f():\n    from ..high import g\n')
    high.write_text('"""high"""\nfrom .sub import low\n')
    modules = {"lightning_stacks.sub.low": low, "lightning_stacks.high": high, "lightning_stacks.sub": pkg / "sub"}
    assert imports_of("lightning_stacks.sub.low", low, modules) == {"lightning_stacks.high"}
    assert imports_of("lightning_stacks.high", high, modules) == {"lightning_stacks.sub.low"}
