"""Dependencies point one way: cli -> training -> core (sarclip_search) -> index.

`index/`, `training/` and `cli/` are the subpackages sarclip_search.index, .training and .cli
(setuptools package-dir); no generic top-level `index`, `training` or `cli` module may be installed.

Inside the core too (`CORE_IMPORTS`): ingest and query use store and model; store and model use neither
ingest nor query, and model does not use store; errors.py and _fs.py use nothing of sarclip_search.
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
    return _imported_names(path, module_package)


def _imported_names(path: Path, module_package: str) -> set[str]:
    """Absolute names `path` imports, relative imports resolved against `module_package` (its package)."""
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


def test_index_keeps_the_same_rebuild_hint_as_the_core():
    """index/ cannot import sarclip_search.errors, so it has its own copy of the hint: the same text."""
    from sarclip_search.errors import REBUILD
    from sarclip_search.index.errors import REBUILD as INDEX_REBUILD

    assert INDEX_REBUILD == REBUILD and "--rebuild" in REBUILD


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


# Inside the core: what each part may import of sarclip_search (besides itself and the package root, for
# __version__). query also reads query images the way ingest reads the archive (ingest.raster, tiling).
# store/check.py reads the ONNX export's manifest (model.encoders); model never reads store.
CORE_IMPORTS = {
    "errors": set(),
    "_fs": set(),
    "model": {"errors", "_fs"},
    "store": {"model", "index", "errors", "_fs"},
    "ingest": {"store", "model", "index", "errors", "_fs"},
    "query": {"ingest", "store", "model", "index", "errors", "_fs"},
}


def _core_part(name: str, core: Path) -> str | None:
    """The part of the core (a folder or module of sarclip_search, or index/training/cli) `name` lies in."""
    parts = name.split(".")
    if parts[0] != "sarclip_search" or len(parts) < 2:
        return None
    part = parts[1]
    if part in ("index", "training", "cli") or (core / part).is_dir() or (core / f"{part}.py").is_file():
        return part
    return None  # a name of the package root (`from sarclip_search import __version__`)


def core_violations(core: Path) -> list[str]:
    """Imports of a core part (`CORE_IMPORTS`) that its row does not allow, under the folder `core`."""
    found = []
    for part, allowed in CORE_IMPORTS.items():
        paths = sorted((core / part).rglob("*.py")) if (core / part).is_dir() else [core / f"{part}.py"]
        for path in paths:
            if not path.is_file():
                continue
            package = ".".join(["sarclip_search", *path.relative_to(core).parent.parts])
            for name in sorted(_imported_names(path, package)):
                target = _core_part(name, core)
                if target is not None and target != part and target not in allowed:
                    found.append(f"{path.relative_to(core.parent)} imports {name}")
    return found


def test_core_parts_import_downwards_only():
    assert not core_violations(LAYERS["core"])


def test_the_core_checker_finds_an_upward_import(tmp_path):
    core = tmp_path / "sarclip_search"
    (core / "model").mkdir(parents=True)
    (core / "store").mkdir()
    (core / "_fs.py").write_text("import os\n")
    (core / "model" / "sarclip.py").write_text(
        "from sarclip_search._fs import file_sha256\n"
        "from sarclip_search import __version__\n"
        "def f():\n    from ..store.layout import IndexStore\n"  # relative, inside a function: still seen
    )
    (core / "store" / "catalog.py").write_text("from sarclip_search.ingest.metadata import parse_datetime\n")
    (core / "ingest").mkdir()
    assert core_violations(core) == [
        "sarclip_search/model/sarclip.py imports sarclip_search.store.layout",
        "sarclip_search/model/sarclip.py imports sarclip_search.store.layout.IndexStore",
        "sarclip_search/store/catalog.py imports sarclip_search.ingest.metadata",
        "sarclip_search/store/catalog.py imports sarclip_search.ingest.metadata.parse_datetime",
    ]


def test_query_path_does_not_import_training():
    code = (
        "import sys, sarclip_search.query.engine, sarclip_search.server.app, sarclip_search.cli.render\n"
        "bad = sorted(m for m in sys.modules if m.startswith('sarclip_search.training'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["index", "cli", "training"])
def test_no_generic_top_level_modules(name):
    result = subprocess.run(
        [sys.executable, "-c", f"import {name}"], check=False, capture_output=True, text=True, cwd="/", timeout=60
    )
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, (name, result.stderr)
