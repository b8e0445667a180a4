"""Nothing outside the archive folder is indexed unless asked.

A manifest row whose path leaves the archive (``../x.png``, an absolute path) and a symbolic link whose
real path leaves it (to a file or a folder) are each listed on one `warning:` line and skipped; every
other file is indexed and the exit code is 3, as for an unreadable file. `--strict` stops at the first
one with exit 1 and commits nothing. `--follow-symlinks` indexes what links lead to. Links that stay
inside the archive are followed as before (folder links now too), and link loops are never entered.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sarclip_search.cli.app import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL
from sarclip_search.errors import InputError
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.ingest.walk import iter_rasters, walk_archive
from sarclip_search.store.layout import IndexStore

from helpers import FIELD_PNG, GOOD, SHIP_PNG, good_archive, index, scenes


@pytest.fixture
def outside(tmp_path: Path, fixture_archive: Path) -> Path:
    """A folder next to the archive: secret.png, and folder/inner.png."""
    folder = tmp_path / "outside"
    (folder / "folder").mkdir(parents=True)
    shutil.copy2(fixture_archive / FIELD_PNG, folder / "secret.png")
    shutil.copy2(fixture_archive / FIELD_PNG, folder / "folder" / "inner.png")
    return folder


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def write_manifest(archive: Path, *paths: str) -> None:
    (archive / "manifest.csv").write_text("path,label\n" + "".join(f"{p},x\n" for p in paths))


# --- manifest rows leaving the archive --------------------------------------------------------------------


def test_manifest_rows_outside_the_archive_are_listed_and_the_rest_indexed(tmp_path, fixture_archive, checkpoint,
                                                                             fast_model, outside):
    archive = good_archive(fixture_archive, tmp_path / "archive")
    shutil.copy2(fixture_archive / FIELD_PNG, tmp_path / "outside.png")  # what `../outside.png` names: it exists
    write_manifest(archive, *GOOD, "../outside.png", str(outside / "secret.png"))

    result = index(archive, tmp_path / "db", checkpoint)

    assert result.exit_code == EXIT_PARTIAL, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert warnings_of(result) == [
        f"warning: manifest.csv row {row}: path {path!r} is outside the archive, not indexed; give the file's path "
        "relative to the archive folder, inside it, or remove the row"
        for row, path in ((5, "../outside.png"), (6, str(outside / "secret.png")))
    ]
    assert "3 embedded" in result.stderr and "2 failed" in result.stderr
    rows = scenes(tmp_path / "db")
    assert sorted(rows) == sorted(GOOD)
    assert all(row["label"] == "x" for row in rows.values())  # the manifest's other rows were read


def test_manifest_row_outside_with_strict_commits_nothing(tmp_path, fixture_archive, checkpoint, fast_model):
    archive = good_archive(fixture_archive, tmp_path / "archive")
    db = tmp_path / "db"
    assert index(archive, db, checkpoint).exit_code == EXIT_OK
    before = (db / "CURRENT").read_text()
    shutil.copy2(fixture_archive / FIELD_PNG, archive / "chips" / "new.png")
    write_manifest(archive, *GOOD, "chips/new.png", "/etc/passwd.png")

    result = index(archive, db, checkpoint, "--strict")

    assert result.exit_code == EXIT_ERROR, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: manifest.csv row 6: path '/etc/passwd.png'"), lines
    assert "--strict" in lines[0]
    assert (db / "CURRENT").read_text() == before and sorted(scenes(db)) == sorted(GOOD)  # chips/new.png neither


def test_manifest_rows_outside_through_the_library(tmp_path, fixture_archive, sarclip):
    archive = good_archive(fixture_archive, tmp_path / "archive")
    write_manifest(archive, SHIP_PNG, "a/../../up.png", "", "chips/../" + FIELD_PNG)
    shutil.copy2(fixture_archive / FIELD_PNG, archive / FIELD_PNG)

    report = index_archive(archive, IndexStore(tmp_path / "db"), sarclip)

    assert [row for row, _ in report.failed] == ["manifest.csv row 3", "manifest.csv row 4"]
    assert "'a/../../up.png' is outside the archive" in report.failed[0][1]
    assert "'' is empty" in report.failed[1][1]
    assert report.indexed == 2 and sorted(scenes(tmp_path / "db")) == sorted([SHIP_PNG, FIELD_PNG])
    with pytest.raises(InputError, match="manifest.csv row 3: .*--strict"):
        index_archive(archive, IndexStore(tmp_path / "db2"), sarclip, strict=True)
    assert not (tmp_path / "db2" / "CURRENT").exists()


# --- symbolic links leading outside the archive ----------------------------------------------------------


def linked_archive(tmp_path: Path, fixture_archive: Path, outside: Path) -> Path:
    """The three good files, plus links: two leading outside (a file, a folder), two inside, one loop."""
    archive = good_archive(fixture_archive, tmp_path / "archive")
    (archive / "secret_link.png").symlink_to(outside / "secret.png")
    (archive / "ext").symlink_to(outside / "folder")
    (archive / "alias.png").symlink_to(Path("chips") / "chip_ship_0001.png")  # relative, inside
    (archive / "chips_again").symlink_to(archive / "chips")  # a folder link inside the archive
    (archive / "chips" / "up").symlink_to(archive)  # a loop: never entered
    return archive


INSIDE = sorted([*GOOD, "alias.png", "chips_again/chip_ship_0001.png"])


def test_links_leaving_the_archive_are_listed_not_followed(tmp_path, fixture_archive, checkpoint, fast_model, outside):
    archive = linked_archive(tmp_path, fixture_archive, outside)

    result = index(archive, tmp_path / "db", checkpoint)

    assert result.exit_code == EXIT_PARTIAL, (result.output, result.exception)
    assert warnings_of(result) == [
        (f"warning: ext: symbolic link to a folder outside the archive ({outside / 'folder'}); not entered, its "
         "images are not indexed; pass --follow-symlinks to index them, or copy them into the archive"),
        (f"warning: secret_link.png: symbolic link to a file outside the archive ({outside / 'secret.png'}); "
         "not indexed; pass --follow-symlinks to index it, or copy the file into the archive"),
    ]
    rows = scenes(tmp_path / "db")
    assert sorted(rows) == INSIDE  # links inside the archive work, under their own path
    assert not any(str(outside) in str(row["abs_path"]) for row in rows.values())


def test_follow_symlinks_indexes_them_and_a_default_run_drops_them_again(tmp_path, fixture_archive, checkpoint,
                                                                         fast_model, outside):
    archive = linked_archive(tmp_path, fixture_archive, outside)
    db = tmp_path / "db"

    followed = index(archive, db, checkpoint, "--follow-symlinks")

    assert followed.exit_code == EXIT_OK, followed.output
    rows = scenes(db)
    assert sorted(rows) == sorted([*INSIDE, "ext/inner.png", "secret_link.png"])
    assert rows["ext/inner.png"]["abs_path"] == str((outside / "folder" / "inner.png").resolve())

    again = index(archive, db, checkpoint)  # without the flag: the outside files leave the index
    assert again.exit_code == EXIT_PARTIAL and len(warnings_of(again)) == 2, again.output
    assert "2 removed" in again.stderr
    assert sorted(scenes(db)) == INSIDE


def test_link_outside_with_strict_commits_nothing(tmp_path, fixture_archive, checkpoint, fast_model, outside):
    archive = linked_archive(tmp_path, fixture_archive, outside)
    result = index(archive, tmp_path / "db", checkpoint, "--strict")
    assert result.exit_code == EXIT_ERROR, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ext: symbolic link") and "--strict" in lines[0]
    assert not (tmp_path / "db" / "CURRENT").exists()


def test_links_with_a_manifest_are_listed_once_when_it_lists_them(tmp_path, fixture_archive, checkpoint, fast_model,
                                                                  outside):
    """A listed link gets its link line (not "not found"), also for rows under a folder link; an unlisted
    link is just a file the manifest does not list."""
    archive = linked_archive(tmp_path, fixture_archive, outside)
    write_manifest(archive, *GOOD, "ext/inner.png", "ext/other.png", "alias.png")

    result = index(archive, tmp_path / "db", checkpoint)

    assert result.exit_code == EXIT_PARTIAL, result.output
    listed = warnings_of(result)
    assert len(listed) == 1 and listed[0].startswith("warning: ext: symbolic link to a folder outside"), listed
    assert sorted(scenes(tmp_path / "db")) == sorted([*GOOD, "alias.png"])


def test_an_archive_of_outside_links_only_is_refused(tmp_path, checkpoint, fast_model, outside):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "ext").symlink_to(outside)
    result = index(archive, tmp_path / "db", checkpoint)
    assert result.exit_code == EXIT_ERROR, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no images found" in lines[0] and "--follow-symlinks" in lines[0], lines
    assert index(archive, tmp_path / "db", checkpoint, "--follow-symlinks").exit_code == EXIT_OK
    assert sorted(scenes(tmp_path / "db")) == ["ext/folder/inner.png", "ext/secret.png"]


def test_walk_archive_judges_links_by_their_real_path(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    for folder in (root / "a", elsewhere / "b"):
        folder.mkdir(parents=True)
    for name in ("a/x.tif", "y.png", "notes.txt"):
        (root / name).write_bytes(b"x")
    (elsewhere / "b" / "z.tif").write_bytes(b"x")
    (elsewhere / "w.jpg").write_bytes(b"x")
    (root / "file_out.jpg").symlink_to(elsewhere / "w.jpg")
    (root / "dir_out").symlink_to(elsewhere / "b")
    (root / "dir_up").symlink_to(tmp_path)  # the archive's parent: outside (and holding the archive)
    (root / "a" / "in.tif").symlink_to(root / "y.png")
    (root / "a" / "dir_in").symlink_to(Path(".."))  # the root itself: a loop
    (root / "a" / "sibling").symlink_to(root / "a")  # itself: a loop
    (root / "dangling.tif").symlink_to(root / "gone.tif")
    (root / "text_out.txt").symlink_to(elsewhere / "w.jpg")  # not an image name: not looked at

    walk = walk_archive(root)
    rel = lambda paths: [p.relative_to(root).as_posix() for p in paths]
    assert rel(walk.files) == ["a/in.tif", "a/x.tif", "dangling.tif", "y.png"]
    assert [(link.path.name, link.target, link.is_dir) for link in walk.outside_links] == [
        ("dir_out", str(elsewhere / "b"), True), ("dir_up", str(tmp_path), True),
        ("file_out.jpg", str(elsewhere / "w.jpg"), False)]
    assert list(iter_rasters(root)) == walk.files

    followed = walk_archive(root, follow_symlinks=True)
    assert followed.outside_links == []
    assert rel(followed.files) == ["a/in.tif", "a/x.tif", "dangling.tif", "dir_out/z.tif", "dir_up/elsewhere/b/z.tif",
                                   "dir_up/elsewhere/w.jpg", "file_out.jpg", "y.png"]  # dir_up/root: a loop


def test_walk_archive_on_a_linked_root_is_inside(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "x.tif").write_bytes(b"x")
    (real / "alias.tif").symlink_to(real / "x.tif")  # absolute target through the real path
    (tmp_path / "root").symlink_to(real)
    walk = walk_archive(tmp_path / "root")
    assert [p.name for p in walk.files] == ["alias.tif", "x.tif"] and walk.outside_links == []
    assert all(p.parent == tmp_path / "root" for p in walk.files)


def test_walk_archive_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        walk_archive(tmp_path / "absent")
