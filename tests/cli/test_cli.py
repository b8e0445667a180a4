"""The `sarsearch` CLI through typer's CliRunner: help, index/info/query, filters, incremental runs, errors.

Every test passes --db and --model explicitly, so $SARSEARCH_DB and the shipped default checkpoint
never matter. Tests that change an archive or an index build their own (copies of the fixture archive).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarclip_search.cli.app import EXIT_OK, EXIT_PARTIAL

from helpers import FIELD_PNG, SHIP_PNG, assert_user_error, copy_archive, error_lines, run

COMMANDS = ("index", "query", "info", "columns", "train", "eval", "serve", "locate")
README = Path(__file__).resolve().parents[2] / "README.md"
# The EPSG:32631 ship scenes off the Dutch coast; this box holds two of the four (the 20210113 and 20210125 ones).
SHIP_BOX = (3.0, 52.2, 3.2, 52.3)

def report_counts(result) -> dict[str, int]:
    """The numbers of the `index` report line 'files: N embedded, N unchanged, N removed, N failed'."""
    match = re.search(r"files: (\d+) embedded, (\d+) unchanged, (\d+) removed, (\d+) failed", result.stderr)
    assert match, result.stderr
    return dict(zip(("embedded", "unchanged", "removed", "failed"), map(int, match.groups())))


def info_json(db: Path) -> dict:
    result = run("info", "--db", db, "--json")
    assert result.exit_code == EXIT_OK, result.output
    return json.loads(result.stdout)


def query_json(db: Path, checkpoint: Path, *args: object) -> list[dict]:
    result = run("query", *args, "--json", "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory, fixture_archive: Path, checkpoint: Path):
    """(db, archive, first `index` result): the fixture archive indexed through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    archive = copy_archive(fixture_archive, root / "archive")
    db = root / "db"
    result = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    return db, archive, result


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """A second checkpoint of the same architecture with different image weights (hence another sha256)."""
    import torch

    from sarclip_search.model.sarclip import load_model, save_checkpoint

    model = load_model(checkpoint)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if name.startswith("visual.head"):
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    path = tmp_path_factory.mktemp("model2") / "other.pt"
    save_checkpoint(model, path, run_config={"test": "other"})
    return path


# --- help and docs --------------------------------------------------------------------------------------


def test_app_lists_every_command():
    result = run("--help")
    assert result.exit_code == EXIT_OK
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == EXIT_OK, result.output
    assert "Example" in result.output


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_shows_types_of_values_only_and_plain_argument_names(command):
    result = run(*([command] if command else []), "--help", columns=120)
    assert result.exit_code == EXIT_OK, result.output
    assert "<bool>" not in result.output  # flags take no value
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage
    help_line = next(line for line in result.output.splitlines() if "--help" in line)
    assert "<" not in help_line
    if command == "index":
        assert "sarsearch index [OPTIONS] [ARCHIVE]" in usage  # optional: --from-shards DIR instead
        assert any("--strict" in line and "<" not in line for line in result.output.splitlines())
    if command == "locate":
        assert usage.split("Usage:")[1].split() == ["sarsearch", "locate", "[OPTIONS]", "[TEXT]", "SCENE"]
    if command == "query":
        assert "sarsearch query [OPTIONS] [TEXT]" in usage
        options = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
        assert "<" not in options["--dedup"] and "<" not in options["--json"]
        assert "<path>" in options["--image"] and "<id>" in options["--like"] and "<int>" in options["--k"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme(command):
    text = README.read_text() if README.is_file() else ""
    match = re.search(r"^## CLI\b.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        pytest.skip("README.md has no '## CLI' section yet")
    assert re.search(rf"sarsearch {command}\b", match.group(0)), f"`sarsearch {command}` is not documented"


# --- index, info, query ---------------------------------------------------------------------------------


def test_index_then_info_shows_every_scene(cli_index):
    db, _, result = cli_index
    assert result.exit_code == EXIT_OK, (result.output, result.exception)
    assert report_counts(result) == {"embedded": 10, "unchanged": 0, "removed": 0, "failed": 0}
    summary = info_json(db)
    assert summary["catalog"]["scenes"] == 10
    assert summary["catalog"]["tiles"] == summary["index"]["ntotal"] == 10
    assert summary["catalog"]["label"] == {"ship": 5, "field": 5}
    table = run("info", "--db", db)
    assert table.exit_code == EXIT_OK
    assert "scenes: 10" in table.stdout


def test_query_json_hits(cli_index, checkpoint):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 3)
    assert isinstance(hits, list) and len(hits) == 3
    for hit in hits:
        assert {"id", "score", "path", "scene_id", "window", "bbox", "label"} <= set(hit)
        assert isinstance(hit["id"], int) and isinstance(hit["scene_id"], int)
        assert len(hit["window"]) == 4 and all(isinstance(v, int) for v in hit["window"])
        assert hit["bbox"] is None or (len(hit["bbox"]) == 4 and all(isinstance(v, float) for v in hit["bbox"]))
        assert hit["label"] in ("ship", "field")
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({hit["id"] for hit in hits}) == 3


def test_query_table_output(cli_index, checkpoint):
    db, _, _ = cli_index
    result = run("query", "a ship", "-k", 2, "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, result.output
    assert "top 2" in result.stdout and "score" in result.stdout


def table_rows(stdout: str) -> tuple[list[str], list[str]]:
    """(header cells, row lines) of a results table: the lines between the rule under the header and the end."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    return lines[rule - 1].split(), [line for line in lines[rule + 1:] if line.strip()]


def test_query_table_shows_what_an_analyst_needs_using_the_width(cli_index, checkpoint):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 10)
    result = run("query", "a ship", "-k", 10, "--db", db, "--model", checkpoint, columns=200)
    assert result.exit_code == EXIT_OK, result.output
    header, rows = table_rows(result.stdout)
    assert header == ["#", "score", "id", "date", "dataset", "label", "split", "sensor", "pol", "path", "window"]
    assert len(rows) == len(hits) and all(len(line) <= 200 for line in result.stdout.splitlines())
    for rank, (hit, row) in enumerate(zip(hits, rows), start=1):
        cells = row.split()
        # the JSON score is rounded to 6 digits, the table's to 3: compare within the table's rounding
        assert [cells[0], cells[2]] == [str(rank), str(hit["id"])] and abs(float(cells[1]) - hit["score"]) <= 5.1e-4
        assert hit["path"] in row  # whole, product folder included, at 200 columns
        assert (hit["datetime"] or "")[:10] in row and hit["label"] in cells and hit["split"] in cells
        assert hit["sar:polarizations"] in cells and ",".join(map(str, hit["window"])) in cells


def test_query_table_fits_a_narrow_terminal(cli_index, checkpoint):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 10)
    result = run("query", "a ship", "-k", 10, "--db", db, "--model", checkpoint, columns=100)
    assert result.exit_code == EXIT_OK, result.output
    assert all(len(line) <= 100 for line in result.stdout.splitlines())
    header, rows = table_rows(result.stdout)
    assert {"#", "score", "id", "date", "label", "path"} <= set(header) and "window" not in header
    for hit, row in zip(hits, rows):
        assert hit["path"][-10:] in row and hit["label"] in row.split()  # the file name's end survives


def test_query_columns_option_chooses_the_columns(cli_index, checkpoint):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 4)
    result = run("query", "a ship", "-k", 4, "--columns", "id, label,scene_width,polarization",
                 "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, result.output
    header, rows = table_rows(result.stdout)
    assert header == ["id", "label", "scene_width", "pol"]
    assert [row.split() for row in rows] == [
        [str(hit["id"]), hit["label"], str(hit["scene_width"]), hit["sar:polarizations"]] for hit in hits]


@pytest.mark.parametrize(("spec", "needles"), [
    ("rank,lable", ("--columns", "'lable'", "did you mean label?", "valid: rank, score, id")),
    ("rank,,id", ("--columns", "separated by commas")),
    ("id,id", ("--columns", "id is named twice")),
])
def test_query_columns_option_errors(cli_index, checkpoint, spec, needles):
    db, _, _ = cli_index
    assert_user_error(run("query", "a ship", "--columns", spec, "--db", db, "--model", checkpoint), *needles)


def test_empty_result_hints_at_values_that_exist(cli_index, checkpoint):
    db, _, _ = cli_index
    result = run("query", "a ship", "--label", "Ship", "--polarization", "XX", "--json", "--db", db, "--model", checkpoint)
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout) == []
    assert error_lines(result) == [
        "hint: no tile has label 'Ship'; did you mean 'ship'? (sarsearch columns)",
        ("hint: no tile has a polarization containing 'XX'; sar:polarizations holds 'VV+VH', 'VV', 'HH' "
         "(sarsearch columns)"),
    ]
    table = run("query", "a ship", "--split", "tset", "--db", db, "--model", checkpoint)
    assert table.exit_code == EXIT_OK and "no tile matches the filters" in table.stdout
    assert error_lines(table) == ["hint: no tile has split 'tset'; did you mean 'test'? (sarsearch columns)"]
    combined = run("query", "a ship", "--label", "ship", "--dataset", "synthetic-K5", "--db", db, "--model", checkpoint)
    assert combined.exit_code == EXIT_OK and "no tile matches" in combined.stdout and not error_lines(combined)


def test_columns_command_lists_filterable_columns_with_value_counts(cli_index, checkpoint):
    from collections import Counter

    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 10)  # every tile of the index
    result = run("columns", "--db", db, "--json")
    assert result.exit_code == EXIT_OK, result.output
    columns = {column["name"]: column for column in json.loads(result.stdout)}
    assert {"label", "dataset", "split", "sensor", "sar:polarizations", "datetime", "path"} <= set(columns)
    assert not {"tile_id", "scene_id", "content_hash", "metadata_hash", "mtime", "abs_path", "bbox_minlon"} & set(columns)
    for name in ("label", "dataset", "split", "sar:polarizations"):
        counted = Counter(hit[name] for hit in hits)
        assert {v["value"]: v["tiles"] for v in columns[name]["values"]} == counted
        assert columns[name]["type"] == "VARCHAR" and columns[name]["tiles"] == len(hits)
    dates = sorted(hit["datetime"] for hit in hits if hit["datetime"])
    assert (columns["datetime"]["min"], columns["datetime"]["max"]) == (dates[0], dates[-1])
    every = {column["name"]: column for column in json.loads(run("columns", "--db", db, "--json", "--all").stdout)}
    assert every["content_hash"]["internal"] and not every["label"]["internal"] and set(columns) < set(every)
    table = run("columns", "--db", db)
    assert table.exit_code == EXIT_OK
    label_line = next(line for line in table.stdout.splitlines() if line.startswith("label "))
    assert "'ship' (5)" in label_line and "'field' (5)" in label_line
    assert '"sar:polarizations"' in table.stdout and "content_hash" not in table.stdout


def test_where_with_an_unknown_column_suggests_one(cli_index, checkpoint):
    db, _, _ = cli_index
    result = run("query", "a ship", "--where", "polarization = 'VV'", "--db", db, "--model", checkpoint)
    assert_user_error(result, 'no column "polarization"; did you mean "sar:polarizations"?', "sarsearch columns")
    assert "content_hash" not in result.stderr


def test_index_progress_reports_tiles_per_second(tmp_path, fixture_archive, checkpoint):
    archive = copy_archive(fixture_archive, tmp_path / "archive", only=(SHIP_PNG, FIELD_PNG))
    result = run("index", archive, "--db", tmp_path / "db", "--model", checkpoint, "--tile-size", 32)
    assert result.exit_code == EXIT_OK, result.output
    # the bar counts tiles, not files: two 48 px chips are 4 tiles of 32 px each
    assert re.search(r"indexing \(embed\).* 8/8 tiles, [\d.]+ tiles/s .* eta ", result.stderr), result.stderr


def test_reindex_without_changes_embeds_nothing(cli_index, checkpoint):
    db, archive, _ = cli_index
    result = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    assert result.exit_code == EXIT_OK, result.output
    assert report_counts(result) == {"embedded": 0, "unchanged": 10, "removed": 0, "failed": 0}
    assert "tiles added: 0" in result.stderr
    assert info_json(db)["catalog"]["tiles"] == 10


# --- filters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "column", "value"),
    [
        (("--label", "ship"), "label", "ship"),
        (("--split", "test"), "split", "test"),
        (("--where", "label = 'field'"), "label", "field"),
    ],
)
def test_filters_keep_only_matching_rows(cli_index, checkpoint, options, column, value):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "a ship", "-k", 10, *options)
    assert hits, "the filter matches fixture rows"
    assert all(hit[column] == value for hit in hits), [(h["path"], h[column]) for h in hits]
    everything = query_json(db, checkpoint, "a ship", "-k", 10)
    assert len(hits) == sum(hit[column] == value for hit in everything)


def _intersects(bbox, box) -> bool:
    return bbox is not None and bbox[0] <= box[2] and bbox[2] >= box[0] and bbox[1] <= box[3] and bbox[3] >= box[1]


def test_bbox_filter_returns_exactly_the_intersecting_tiles(cli_index, checkpoint):
    db, _, _ = cli_index
    everything = query_json(db, checkpoint, "a ship", "-k", 10)
    expected = {hit["id"] for hit in everything if _intersects(hit["bbox"], SHIP_BOX)}
    assert len(expected) == 2  # the two ship scenes inside SHIP_BOX
    hits = query_json(db, checkpoint, "a ship", "-k", 10, "--bbox", ",".join(map(str, SHIP_BOX)))
    assert len(hits) == 2  # k=10, but only two tiles match: exactly two come back
    assert {hit["id"] for hit in hits} == expected
    assert all(hit["label"] == "ship" and _intersects(hit["bbox"], SHIP_BOX) for hit in hits)


def test_filter_with_fewer_matches_than_k(cli_index, checkpoint):
    db, _, _ = cli_index
    hits = query_json(db, checkpoint, "farmland", "-k", 10, "--split", "test", "--label", "field")
    assert len(hits) == 2
    assert all(hit["split"] == "test" and hit["label"] == "field" for hit in hits)


def test_filter_matching_nothing_is_empty_not_an_error(cli_index, checkpoint):
    db, _, _ = cli_index
    assert query_json(db, checkpoint, "a ship", "--label", "no-such-label") == []


# --- user errors: exit 1, one line, no traceback --------------------------------------------------------


def test_query_missing_db(tmp_path, checkpoint):
    assert_user_error(run("query", "a ship", "--db", tmp_path / "nope", "--model", checkpoint), "no index at")


def test_where_with_a_second_statement_is_refused(cli_index, checkpoint):
    db, _, _ = cli_index
    result = run("query", "a ship", "--where", "1=1; DROP TABLE tiles", "--db", db, "--model", checkpoint)
    assert_user_error(result, "--where")
    summary = info_json(db)
    assert summary["catalog"]["tiles"] == summary["catalog"]["scenes"] == 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--bbox", "1,2,3"), "4 comma-separated numbers"),
        (("-k", "0"), "k must be"),
        (("--where", "no_such_column = 1"), "columns"),
        (("--after", "yesterday"), "date"),
    ],
)
def test_bad_query_options(cli_index, checkpoint, args, needle):
    db, _, _ = cli_index
    assert_user_error(run("query", "a ship", *args, "--db", db, "--model", checkpoint), needle)


def test_query_image_that_is_not_an_image(cli_index, checkpoint, tmp_path):
    db, _, _ = cli_index
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a PNG\n")
    assert_user_error(run("query", "--image", fake, "--db", db, "--model", checkpoint), "fake.png")


def test_query_image_that_does_not_exist(cli_index, checkpoint, tmp_path):
    db, _, _ = cli_index
    assert_user_error(run("query", "--image", tmp_path / "none.png", "--db", db, "--model", checkpoint), "none.png")


def test_index_missing_folder(tmp_path, checkpoint):
    result = run("index", tmp_path / "no-archive", "--db", tmp_path / "db", "--model", checkpoint, "--quiet")
    assert_user_error(result, "no-archive")
    assert not (tmp_path / "db" / "CURRENT").exists()


def test_train_unknown_config():
    assert_user_error(run("train", "--config", "nope"), "no such training config")


def test_train_unknown_setting():
    assert_user_error(run("train", "--config", "smoke", "--no_such_key=1"), "no_such_key")


def test_info_without_index(tmp_path):
    assert_user_error(run("info", "--db", tmp_path / "empty"), "no index at")


# --- incremental runs, model changes, bad files -----------------------------------------------------------


def test_incremental_index_changed_and_deleted_files(tmp_path, fixture_archive, checkpoint):
    archive = copy_archive(fixture_archive, tmp_path / "archive")
    db = tmp_path / "db"
    first = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    assert first.exit_code == EXIT_OK, first.output
    before = query_json(db, checkpoint, "--image", archive / SHIP_PNG, "-k", 1)[0]

    # change the pixels of one chip, delete another file (and its manifest row)
    pixels = np.asarray(Image.open(archive / SHIP_PNG))
    Image.fromarray((255 - pixels).astype(np.uint8)).save(archive / SHIP_PNG)
    (archive / FIELD_PNG).unlink()
    manifest = archive / "manifest.csv"
    manifest.write_text("".join(line for line in manifest.read_text().splitlines(keepends=True) if FIELD_PNG not in line))

    second = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    assert second.exit_code == EXIT_OK, second.output
    assert report_counts(second) == {"embedded": 1, "unchanged": 8, "removed": 1, "failed": 0}
    summary = info_json(db)
    assert summary["catalog"]["scenes"] == summary["catalog"]["tiles"] == summary["index"]["ntotal"] == 9
    hits = query_json(db, checkpoint, "a field", "-k", 10)
    assert len(hits) == 9 and FIELD_PNG not in {hit["path"] for hit in hits}
    after = query_json(db, checkpoint, "--image", archive / SHIP_PNG, "-k", 1)[0]
    assert after["path"] == before["path"] == SHIP_PNG
    assert after["id"] != before["id"]  # re-embedded under a fresh id, the old vector removed


def test_deleted_file_still_in_manifest_is_reported(tmp_path, fixture_archive, checkpoint):
    archive = copy_archive(fixture_archive, tmp_path / "archive")
    db = tmp_path / "db"
    assert run("index", archive, "--db", db, "--model", checkpoint, "--quiet").exit_code == EXIT_OK
    (archive / FIELD_PNG).unlink()
    result = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert FIELD_PNG in result.stderr and "manifest" in result.stderr
    assert info_json(db)["catalog"]["tiles"] == 9


def test_other_checkpoint_needs_rebuild(tmp_path, fixture_archive, checkpoint, other_checkpoint):
    archive = copy_archive(fixture_archive, tmp_path / "archive", only=(SHIP_PNG, FIELD_PNG))
    db = tmp_path / "db"
    assert run("index", archive, "--db", db, "--model", checkpoint, "--quiet").exit_code == EXIT_OK

    refused = run("index", archive, "--db", db, "--model", other_checkpoint, "--quiet")
    assert_user_error(refused, "--rebuild")
    assert info_json(db)["model"]["checkpoint_path"] == str(checkpoint.resolve())

    rebuilt = run("index", archive, "--db", db, "--model", other_checkpoint, "--quiet", "--rebuild")
    assert rebuilt.exit_code == EXIT_OK, rebuilt.output
    assert report_counts(rebuilt)["embedded"] == 2
    assert info_json(db)["catalog"]["tiles"] == 2

    assert_user_error(run("query", "a ship", "--db", db, "--model", checkpoint), "--model")
    assert len(query_json(db, other_checkpoint, "a ship")) == 2
    # without --model the engine uses the checkpoint recorded in the index
    result = run("query", "a ship", "--json", "--db", db)
    assert result.exit_code == EXIT_OK, result.output
    assert len(json.loads(result.stdout)) == 2


def test_bad_files_give_partial_exit_and_the_rest_is_indexed(tmp_path, fixture_archive, checkpoint):
    good = (SHIP_PNG, FIELD_PNG, "kompsat5/K5_ES_GTC_HH_20150603T171436_nocrs_tiny.tif")
    archive = copy_archive(fixture_archive, tmp_path / "archive", only=good)  # no manifest: every image is indexed
    (archive / "broken.tif").write_bytes(b"")
    (archive / "notes.png").write_text("not an image, just notes\n")
    db = tmp_path / "db"

    result = run("index", archive, "--db", db, "--model", checkpoint, "--quiet")
    assert result.exit_code == EXIT_PARTIAL, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert report_counts(result) == {"embedded": 3, "unchanged": 0, "removed": 0, "failed": 2}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert any("broken.tif" in line for line in warnings) and any("notes.png" in line for line in warnings)

    assert info_json(db)["catalog"]["scenes"] == 3
    hits = query_json(db, checkpoint, "a ship", "-k", 10)
    assert sorted(hit["path"] for hit in hits) == sorted(good)
