"""Dependencies point one way: cli -> training -> core (sarclip_search) -> index.

`index/`, `training/` and `cli/` are the subpackages sarclip_search.index, .training and .cli
(setuptools package-dir); no generic top-level `index`, `training` or `cli` module may be installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {
    "index": ROOT / "index",
    "core": ROOT / "sarclip_search",
    "training": ROOT / "training",
    "cli": ROOT / "cli",
}
PACKAGE_OF = {
    "index": "sarclip_search.index",
    "core": "sarclip_search",
    "training": "sarclip_search.training",
    "cli": "sarclip_search.cli",
}


def modules(layer: str) -> list[Path]:
    return sorted(LAYERS[layer].rglob("*.py"))


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    module_package = ".".join([package, *path.relative_to(LAYERS[_layer_of(package)]).parent.parts])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _layer_of(package: str) -> str:
    return next(layer for layer, name in PACKAGE_OF.items() if name == package)


# `python -m sarclip_search` is an entry point, not library code: it starts the CLI.
ENTRY_POINTS = {ROOT / "sarclip_search" / "__main__.py"}


def _violations(layer: str, forbidden) -> list[str]:
    found = []
    for path in modules(layer):
        if path in ENTRY_POINTS:
            continue
        for name in sorted(imported_modules(path, PACKAGE_OF[layer])):
            if forbidden(name):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_every_layer_has_modules():
    for layer in LAYERS:
        assert modules(layer), layer


def test_index_imports_nothing_else_of_sarclip_search():
    assert not _violations(
        "index", lambda n: _within(n, "sarclip_search") and not _within(n, "sarclip_search.index")
    )


def test_core_does_not_import_training_or_cli():
    assert not _violations(
        "core", lambda n: _within(n, "sarclip_search.training") or _within(n, "sarclip_search.cli")
    )


def test_training_does_not_import_cli():
    assert not _violations("training", lambda n: _within(n, "sarclip_search.cli"))


def test_the_import_checker_sees_relative_and_absolute_imports(tmp_path):
    names = imported_modules(LAYERS["index"] / "__init__.py", "sarclip_search.index")
    assert "sarclip_search.index.vector_index" in names and "os" in names
    names = imported_modules(LAYERS["cli"] / "app.py", "sarclip_search.cli")
    assert "sarclip_search.training.train" in names  # lazily imported inside a command: still seen


def test_query_path_does_not_import_training():
    code = (
        "import sys, sarclip_search.query.engine, sarclip_search.cli.render\n"
        "bad = sorted(m for m in sys.modules if m.startswith('sarclip_search.training'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["index", "cli", "training"])
def test_no_generic_top_level_modules(name):
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd="/", timeout=60
    )
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, (name, result.stderr)
