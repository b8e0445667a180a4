"""Bad input per command, and `sarsearch info --check`.

Every bad option, query or index directory is one `error:` line on stderr, exit 1, no traceback, and
leaves the catalog byte-for-byte unchanged. `info --check` finds tampered indexes and says how to repair.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.cli.app import EXIT_ERROR, EXIT_OK

from helpers import assert_user_error, copy_index, run


@pytest.fixture
def db(indexed_db, tmp_path) -> Path:
    """A private copy of the session index (tests here may tamper with it; a test that damages an encoder
    replaces the file, as the encoders are hard-linked)."""
    return copy_index(indexed_db[0], tmp_path / "db")


def catalog_digest(db: Path) -> str:
    generation = db / (db / "CURRENT").read_text().strip()
    return hashlib.sha256((generation / "catalog.duckdb").read_bytes()).hexdigest()


# --- query: filters and options -------------------------------------------------------------------------

INJECTIONS = [
    "1=1; DROP TABLE tiles",
    "label = 'ship'; DELETE FROM scenes",
    "1=1; COPY tiles TO '{out}'",
    "1=1; ATTACH '{out}' AS other",
    "label IN (SELECT label FROM scenes)",
    "(SELECT count(*) FROM read_csv_auto('/etc/passwd')) > 0",
    "1=1) UNION SELECT tile_id FROM tiles WHERE (1=1",
    "COPY tiles TO '{out}'",
    "ATTACH '{out}'",
    "-- comment only",
]


@pytest.mark.parametrize("where", INJECTIONS)
def test_where_that_is_not_a_predicate_is_refused_and_changes_nothing(where, db, checkpoint, tmp_path, fast_model):
    out = tmp_path / "leak.csv"
    before = catalog_digest(db)
    result = run("query", "a ship", "--where", where.format(out=out), "--db", db, "--model", checkpoint)
    assert_user_error(result, "--where")
    assert catalog_digest(db) == before
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--bbox", "a,b,c,d"), "4 comma-separated numbers"),
        (("--bbox", "0,0,0,0,0"), "4 comma-separated numbers"),
        (("--bbox", "nan,0,1,1"), "4 comma-separated numbers"),
        (("--bbox", "10,0,5,1"), "min <= max"),
        (("--bbox", "0,-95,1,1"), "latitudes"),
        (("--after", "2021-13-45"), "date"),
        (("--before", ""), "date"),
        (("-k", "0"), "k must be"),
        (("-k", "-3"), "k must be"),
        (("-k", str(10**9)), "k must be"),
        (("--alpha", "1.5"), "alpha"),
        (("--nprobe", "0"), "--nprobe"),
    ],
)
def test_bad_query_option_is_one_line(args, needle, db, checkpoint, fast_model):
    assert_user_error(run("query", "a ship", *args, "--db", db, "--model", checkpoint), needle)


@pytest.mark.parametrize("budget", ["0", "-1G", "abc", "nanM", "infG"])
def test_bad_memory_budget_is_one_line(budget, tmp_path, checkpoint):
    archive = tmp_path / "archive"
    archive.mkdir()
    result = run("index", archive, "--db", tmp_path / "db", "--memory-budget", budget, "--model", checkpoint)
    assert_user_error(result, "--memory-budget", "positive size")
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("content", [b"", b"plain text\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_query_image_that_is_not_an_image(content, db, checkpoint, tmp_path, fast_model):
    image = tmp_path / "query.png"
    image.write_bytes(content)
    assert_user_error(run("query", "--image", image, "--db", db, "--model", checkpoint), "query.png")


def test_query_without_text_or_image(db, checkpoint, fast_model):
    assert_user_error(run("query", "--db", db, "--model", checkpoint), "give a text query")


# --- the index directory --------------------------------------------------------------------------------


def _edit_info(db: Path, **changes: object) -> None:
    info_path = db / (db / "CURRENT").read_text().strip() / "info.json"
    info = json.loads(info_path.read_text())
    info.update(changes)
    info_path.write_text(json.dumps(info))


@pytest.mark.parametrize("command", [("info",), ("query", "a ship", "--model")])
@pytest.mark.parametrize(
    ("changes", "needle"),
    [({"catalog_schema_version": 99}, "schema"), ({"format_version": 99}, "format"),
     ({"format": "something-else"}, "format")],
)
def test_index_of_another_version_is_refused(command, changes, needle, db, checkpoint, fast_model):
    _edit_info(db, **changes)
    args = (*command, checkpoint) if command[-1] == "--model" else command
    assert_user_error(run(*args, "--db", db), needle, "--rebuild")


@pytest.mark.parametrize("command", [("info",), ("info", "--check"), ("query", "a ship")])
def test_missing_index_directory(command, tmp_path, checkpoint):
    assert_user_error(run(*command, "--db", tmp_path / "nowhere"), "no index at")


def test_current_pointing_at_a_missing_generation(db):
    (db / "CURRENT").write_text("gen-999999\n")
    assert_user_error(run("info", "--db", db), "gen-999999", "--rebuild")


def test_vectors_of_another_dimension_are_refused(db, checkpoint, fast_model):
    _edit_info(db, embedding={"dim": 7, "metric": "inner_product", "normalized": "l2", "dtype": "float32"})
    assert_user_error(run("query", "a ship", "--db", db, "--model", checkpoint), "dim")


@pytest.mark.parametrize("pattern", ["vector_ids.*.seg", "vectors_f16.*.seg"])
def test_a_damaged_vector_array_is_one_line(db, checkpoint, fast_model, pattern):
    vectors_dir = db / (db / "CURRENT").read_text().strip() / "vectors"
    path = next(vectors_dir.glob(pattern))
    path.unlink()  # a hard link shared with no other generation here; unlink first so no other name sees it
    path.write_bytes(b"garbage")  # not a segment of this index: its size and trailer disagree
    assert_user_error(run("query", "a ship", "--db", db, "--model", checkpoint), path.name, "--rebuild")


# --- info --check -------------------------------------------------------------------------------------


def test_check_of_a_good_index(db):
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_OK, result.output
    assert "10 tiles = 10 vectors, same ids" in result.stdout and "checkpoint hash checked" in result.stdout
    assert "ONNX query encoders ok" in result.stdout


def test_check_finds_damaged_query_encoders(db):
    [encoders] = (db / "encoders").iterdir()
    text_model = encoders / "text.onnx"
    truncated = text_model.read_bytes()[:1000]  # as by a full disk
    text_model.unlink()  # a new file, not the session index's (hard-linked) one written in place
    text_model.write_bytes(truncated)
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_ERROR
    assert "ONNX query encoders" in result.stderr and "text.onnx" in result.stderr
    assert "Traceback" not in result.output
    shutil.rmtree(encoders)  # absent is not a problem: queries load the torch model
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_OK and "no ONNX query encoders" in result.stdout


def _drop_vector(db: Path) -> int:
    from sarclip_search.index import VectorIndex

    vectors_dir = db / (db / "CURRENT").read_text().strip() / "vectors"
    vectors = VectorIndex.load(vectors_dir)
    dropped = int(vectors.ids()[0])
    vectors.remove(np.array([dropped]))
    vectors.save(vectors_dir)
    return dropped


def test_check_finds_a_missing_vector(db):
    dropped = _drop_vector(db)
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_ERROR
    assert f"tiles in the catalog without a vector: 1 ({dropped})" in result.stderr
    assert "--rebuild" in result.stderr and "Traceback" not in result.output


def test_check_finds_counts_that_disagree_with_info(db):
    _edit_info(db, counts={"scenes": 10, "tiles": 11, "vectors": 10})
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_ERROR
    assert "info.json records 11 tiles, the index holds 10" in result.stderr


def test_check_finds_a_changed_checkpoint(db, checkpoint, tmp_path):
    changed = tmp_path / "changed.pt"
    changed.write_bytes(checkpoint.read_bytes() + b"\0")
    info_path = db / (db / "CURRENT").read_text().strip() / "info.json"
    info = json.loads(info_path.read_text())
    info["model"]["checkpoint_path"] = str(changed)
    info_path.write_text(json.dumps(info))
    result = run("info", "--check", "--db", db)
    assert result.exit_code == EXIT_ERROR
    assert "changed since indexing" in result.stderr


def test_rebuild_repairs_what_check_found(db, indexed_db, checkpoint, fast_model):
    _, archive, _ = indexed_db
    _drop_vector(db)
    assert run("info", "--check", "--db", db).exit_code == EXIT_ERROR
    result = run("index", archive, "--db", db, "--model", checkpoint, "--quiet", "--rebuild")
    assert result.exit_code == EXIT_OK, result.output
    assert run("info", "--check", "--db", db).exit_code == EXIT_OK


def test_index_of_a_folder_without_images_is_refused_and_changes_nothing(db, checkpoint, tmp_path, fast_model):
    empty = tmp_path / "unmounted"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    before = catalog_digest(db)
    result = run("index", empty, "--db", db, "--model", checkpoint, "--quiet")
    assert_user_error(result, "no images found", str(empty))
    assert catalog_digest(db) == before  # an existing index is not wiped by an empty or unmounted folder
    fresh = tmp_path / "fresh-db"
    assert_user_error(run("index", empty, "--db", fresh, "--model", checkpoint, "--quiet"), "no images found")
    assert not (fresh / "CURRENT").exists()
