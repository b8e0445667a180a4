"""Plain helpers shared by test modules in several folders; fixtures shared that way live in conftest.py.

Import it as `helpers` (`from helpers import clustered`), like `stac_offline`: tests/ has no __init__.py, so
pytest (import mode "prepend") puts tests/ on sys.path when it loads tests/conftest.py, before any test module
below it. It imports no sarclip_search module at module level (functions import the CLI or the engine when
called), so importing it loads neither the model nor the CLI.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

# --- vectors ------------------------------------------------------------------------------------------------


def clustered(
    n: int, d: int, *, clusters: int = 100, seed: int = 0, centers_seed: int | None = None
) -> np.ndarray:
    """(n, d) float32 seeded L2-normalized Gaussian clusters: the structure IVF and PQ rely on.

    The cluster centers come from `seed` too unless `centers_seed` is given: with `centers_seed=0`, every seed
    draws new points around the same centers (held-out queries from the data's distribution).
    benchmarks/bench_index.py has its own generator (chunked for 1M points, float32 noise: other draws).
    """
    rng = np.random.default_rng(seed)
    centers_rng = rng if centers_seed is None else np.random.default_rng(centers_seed)
    centers = centers_rng.standard_normal((clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- the CLI ------------------------------------------------------------------------------------------------


def run(*args: object, columns: int | None = None):
    """Invoke `sarsearch ARGS...` (each argument str()-ed); result.stdout and result.stderr are separate.

    `columns` sets the terminal width ($COLUMNS) for this call instead of the suite's 250 (conftest.py).
    """
    from typer.testing import CliRunner

    from sarclip_search.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)} if columns else None)


def error_lines(result) -> list[str]:
    """The non-blank lines a CLI run wrote on stderr."""
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_user_error(result, *needles: str) -> str:
    """Exit 1, one non-blank `error:` line on stderr holding every needle, no traceback; returns the line."""
    from sarclip_search.cli.app import EXIT_ERROR

    assert result.exit_code == EXIT_ERROR, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- the fixture archive (tests/data/archive) and copies of it ---------------------------------------------

SHIP_PNG = "chips/chip_ship_0001.png"
FIELD_PNG = "chips/chip_field_0001.png"
K5_NOCRS = "kompsat5/K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif"
# with a STAC sidecar (S1_FIRST + ".json")
S1_FIRST = "sentinel1/S1A_IW_GRDH_1SDV_20210101T054512_20210101T054537_035951_043656_1A2B_tiny.tif"
# the 160 x 96 Sentinel-1 scene (several tiles when indexed with 64 px tiles)
BIG_SCENE = "sentinel1/S1A_IW_GRDH_1SDV_20210310T054510_20210310T054535_036943_043758_2091_tiny.tif"
# three good images: a PNG chip, a uint16 GeoTIFF without CRS, a float32 Sentinel-1 GeoTIFF with CRS, sidecar
GOOD = (SHIP_PNG, K5_NOCRS, S1_FIRST)


def load_make_fixtures() -> ModuleType:
    """Import tests/data/make_fixtures.py as a module (tests/data is not a package)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA_DIR / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def copy_archive(source: Path, target: Path, only: tuple[str, ...] | None = None) -> Path:
    """A copy of the archive (mtimes kept); with `only`, just those files and no manifest."""
    if only is None:
        shutil.copytree(source, target)
        return target
    for rel in only:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)
    return target


def good_archive(fixture_archive: Path, target: Path) -> Path:
    """The three `GOOD` images and the Sentinel-1 sidecar, no manifest."""
    return copy_archive(fixture_archive, target, (*GOOD, S1_FIRST + ".json"))


def grown_archive(source: Path, target: Path, copies: int) -> Path:
    """The fixture archive plus `copies` renamed Sentinel-1 scenes (with manifest rows)."""
    shutil.copytree(source, target)
    with open(target / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scenes = [row for row in rows if row["path"].startswith("sentinel1/")]
    for number in range(copies):
        row = dict(scenes[number % len(scenes)])
        name = f"sentinel1/copy{number:02d}_{Path(row['path']).name}"
        shutil.copy2(target / row["path"], target / name)
        rows.append({**row, "path": name})
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return target


def split_archive(source: Path, target: Path) -> tuple[Path, Path]:
    """Two archives holding alternate manifest rows of `source` (each file with its sidecar and its rows)."""
    with open(source / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    halves = (target / "a", target / "b")
    for number, half in enumerate(halves):
        chosen = rows[number::2]
        for row in chosen:
            for rel in (row["path"], row["path"] + ".json"):
                if (source / rel).is_file():
                    (half / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source / rel, half / rel)
        with open(half / "manifest.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
    return halves


# --- indexing, and what an index holds ----------------------------------------------------------------------


class ModelLoaded(Exception):
    pass


def no_model():
    """A model loader for runs that must embed nothing: it raises if called."""
    raise ModelLoaded("the model was loaded, but nothing needed embedding")


def index(archive: Path, db: Path, checkpoint: Path, *extra: object):
    """`sarsearch index ARCHIVE --db DB --model CHECKPOINT --quiet EXTRA...` through the CLI."""
    return run("index", archive, "--db", db, "--model", checkpoint, "--quiet", *extra)


def reindex(archive: Path, db: Path, checkpoint: Path, **options):
    """`index_archive` with a model loader that raises if called (`no_model`): a run with nothing to embed."""
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    return index_archive(archive, IndexStore(db), no_model, model_path=str(checkpoint), **options)


def link_encoders(source_db: Path, db: Path) -> None:
    """Hard-link an index directory's ONNX query encoders (~100 MB) into `db`, so no run there exports them.

    Exports are never modified in place (encoder_export): a test that damages one must replace the file.
    """
    shutil.copytree(source_db / "encoders", db / "encoders", copy_function=os.link)


def index_halves(archive: Path, root: Path, whole_db: Path, model, checkpoint: Path, **options) -> list[Path]:
    """[root/a, root/b]: the two halves of `archive` (`split_archive`), each indexed on its own with `model`
    (`index_archive` options as given), the ONNX encoders of `whole_db` (same checkpoint) linked in first."""
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    dbs = []
    for half in split_archive(archive, root / "archives"):
        db = root / half.name
        db.mkdir()
        link_encoders(whole_db, db)  # the same checkpoint's export: no second export
        report = index_archive(half, IndexStore(db), model, model_path=str(checkpoint), **options)
        assert report.indexed and not report.failed, report
        dbs.append(db)
    return dbs


def copy_index(source: Path, target: Path) -> Path:
    """A private copy of an index directory that a test may tamper with, its encoders hard-linked
    (`link_encoders`): a copy of them for each test made a run write 4.5 GB."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("encoders"))
    if (source / "encoders").is_dir():
        link_encoders(source, target)
    return target


def scenes(db: Path) -> dict[str, dict]:
    """path -> catalog row of every indexed tile's scene."""
    from sarclip_search.query.engine import Engine

    with Engine.open(db) as engine:
        return {row["path"]: row for row in engine.catalog.fetch_tiles(engine.catalog.tile_ids())}


# the bearer token of the guarded test server (tests/server/conftest.py `guarded`)
SERVER_TOKEN = "s3cret-token"
