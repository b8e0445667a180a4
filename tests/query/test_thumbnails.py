"""Quicklooks and the contact sheet of `query --thumbnails`: captions that say which
tile it is (the id --like/--positive take, the scene), and a folder that holds only the latest result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarclip_search._fs import bytes_sha256
from sarclip_search.cli.app import EXIT_OK
from sarclip_search.errors import ExportError
from sarclip_search.query import quicklook
from sarclip_search.query.quicklook import (
    CAPTION_HEIGHT,
    LINE_HEIGHT,
    MANIFEST_NAME,
    SHEET_NAME,
    THUMBNAIL_SIZE,
    caption,
    contact_sheet,
    write_thumbnails,
)

from helpers import run


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def expected_names(hits) -> set[str]:
    return {f"{rank:03d}_tile{hit.id}.png" for rank, hit in enumerate(hits, start=1)} | {SHEET_NAME, MANIFEST_NAME}


def test_caption_names_rank_score_tile_id_label_date_and_scene(hits):
    dated = next(hit for hit in hits if hit.metadata.get("datetime"))
    first, second, third = caption(3, dated)
    assert first == f"#3  {dated.score:.3f}  id {dated.id}"
    assert second == f"{dated.metadata['label']}  {dated.metadata['datetime'][:10]}"
    assert third == Path(dated.path).stem


def test_every_caption_line_is_drawn_inside_its_cell(hits):
    images = [Image.new("L", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), 0) for _ in hits[:6]]
    long_name = [["#1  0.123  id 1234567", "a_label_much_longer_than_a_cell_is_wide  2021-01-01", "S1A_" + "x" * 80]]
    sheet = np.asarray(contact_sheet(images, long_name * 6).convert("L"))
    assert sheet.shape == (2 * (THUMBNAIL_SIZE + CAPTION_HEIGHT), 5 * THUMBNAIL_SIZE)
    for cell in range(6):
        top, left = (cell // 5) * (THUMBNAIL_SIZE + CAPTION_HEIGHT) + THUMBNAIL_SIZE, (cell % 5) * THUMBNAIL_SIZE
        for line in range(3):  # each of the three lines has text, and none spills into the next cell
            band = sheet[top + 2 + line * LINE_HEIGHT: top + 2 + (line + 1) * LINE_HEIGHT, left: left + THUMBNAIL_SIZE]
            assert (band > 128).any(), (cell, line)
        assert not (sheet[top:top + CAPTION_HEIGHT, left + THUMBNAIL_SIZE - 2: left + THUMBNAIL_SIZE] > 128).any()


def test_a_second_run_leaves_only_its_own_files(hits, tmp_path):
    folder = tmp_path / "thumbs"
    first = write_thumbnails(hits[:7], folder)
    assert names(folder) == expected_names(hits[:7]) and not first.removed
    (folder / "notes.txt").write_text("mine\n")  # the user's file
    later = list(reversed(hits[5:8]))
    second = write_thumbnails(later, folder)
    assert names(folder) == expected_names(later) | {"notes.txt"}
    assert {p.name for p in second.removed} == expected_names(hits[:7]) - expected_names(later)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == expected_names(later) - {MANIFEST_NAME}


def test_files_changed_or_never_written_by_a_run_are_kept(hits, tmp_path):
    folder = tmp_path / "thumbs"
    write_thumbnails(hits[:4], folder)
    edited = folder / f"004_tile{hits[3].id}.png"
    edited.write_bytes(b"edited by hand")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"not ours")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"]["../outside.png"] = [bytes_sha256(b"not ours")]  # a tampered manifest
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    report = write_thumbnails(hits[6:7], folder)
    assert edited.read_bytes() == b"edited by hand" and outside.read_bytes() == b"not ours"
    assert edited not in report.removed and len(report.removed) == 3
    assert names(folder) == expected_names(hits[6:7]) | {edited.name}


def test_a_run_killed_half_way_is_cleaned_up_by_the_next(hits, tmp_path, monkeypatch):
    folder = tmp_path / "thumbs"
    write_thumbnails(hits[:3], folder)
    real_write = quicklook.write_atomic
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 4:  # the union manifest, two quicklooks, then the disk fills
            raise ExportError(f"cannot write {path}")
        return real_write(path, data)

    monkeypatch.setattr(quicklook, "write_atomic", failing_write)
    with pytest.raises(ExportError):
        write_thumbnails(hits[4:9], folder)
    monkeypatch.setattr(quicklook, "write_atomic", real_write)
    assert names(folder) > expected_names(hits[:3])  # the partial run's two quicklooks are there too
    write_thumbnails(hits[9:10], folder)
    assert names(folder) == expected_names(hits[9:10])


def test_cli_thumbnails_twice_into_one_folder(indexed_db, tmp_path):
    db, _, checkpoint = indexed_db
    folder = tmp_path / "th"

    def query(k: int):
        result = run("query", "a ship", "-k", k, "--json", "--db", db, "--model", checkpoint, "--thumbnails", folder)
        assert result.exit_code == EXIT_OK, result.output
        return json.loads(result.stdout), result.stderr

    query(6)
    hits, stderr = query(2)
    assert names(folder) == {f"{rank:03d}_tile{hit['id']}.png" for rank, hit in enumerate(hits, 1)} | {SHEET_NAME, MANIFEST_NAME}
    assert "wrote 2 quicklooks" in stderr and "removed 4 files an earlier query wrote there" in stderr
