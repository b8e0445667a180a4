"""The commands in README/docs and the benchmarks' defaults work from a fresh clone: no machine paths, no
placeholder files, the corpus indexed into its own directory, benchmark inputs found or built in the repo."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# what a user reads or runs: the results JSON files are records of past runs and are left out
TEXTS = [REPO / "README.md", REPO / "Makefile", REPO / "benchmarks" / "README.md",
         *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.py"))]
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|Users|root|mnt|scratch|data)/")


def load_defaults():
    spec = importlib.util.spec_from_file_location("bench_defaults", REPO / "benchmarks" / "defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_lines(text: str) -> list[str]:
    """Lines of fenced ```bash/``` blocks and of 4-space indented blocks (where the docs show commands)."""
    fenced = [line for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL) for line in block.splitlines()]
    return fenced + [line for line in text.splitlines() if line.startswith("    ")]


def test_docs_and_benchmarks_name_no_machine_paths():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in TEXTS for number, line in enumerate(path.read_text().splitlines(), 1)
             if MACHINE_PATH.search(line)]
    assert not found, "absolute paths of one machine:\n" + "\n".join(found)


def test_every_example_file_a_doc_names_exists():
    missing = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines = code_lines(path.read_text())
        variables = dict(re.findall(r"^\s*(\w+)=(\S+)\s*$", "\n".join(lines), flags=re.MULTILINE))
        for line in lines:
            for name, value in variables.items():  # shell variables the block sets, e.g. S=examples/...
                line = line.replace("$" + name, value)
            for name in re.findall(r"examples/[\w./-]+", line):
                if not (REPO / name.rstrip(".")).exists():
                    missing.append(f"{path.name}: {name}")
    assert not missing, "example files the docs name but the repository lacks:\n" + "\n".join(missing)


def test_readme_by_hand_indexes_the_corpus_into_its_own_directory():
    """`make demo` leaves the sample archive in ./.sarsearch: a corpus `index` without --db is refused there."""
    text = (REPO / "README.md").read_text()
    section = text.split("Then, by hand", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0] for line in code_lines(section) if "sarsearch " in line]
    index = [c for c in commands if re.search(r"sarsearch index ", c)]
    assert index, "the by-hand section indexes nothing"
    for command in index:
        db = re.search(r"--db (\S+)", command)
        assert db and db.group(1).strip("./") != ".sarsearch", command
        later = [c for c in commands[commands.index(command) + 1 :] if "../shared/data" not in c and "query" in c]
        assert any(f"--db {db.group(1)}" in c for c in later), "no query of the corpus index follows"
    assert not [c for c in commands if "path/to" in c], "placeholder paths"


def test_benchmark_defaults_live_in_the_checkout():
    defaults = load_defaults()
    assert defaults.REPO == REPO
    for path in (defaults.CORPUS_DB, defaults.RUNS, defaults.RESULTS):
        assert path.is_relative_to(REPO), path
    assert defaults.CORPUS_DB.is_relative_to(defaults.RUNS)
    assert "/runs/" in (REPO / ".gitignore").read_text().split()  # built indexes are never committed
    assert defaults.DATA == REPO.parent / "shared" / "data"


def test_corpus_index_present_is_used_as_is(tmp_path, monkeypatch):
    defaults = load_defaults()
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "CURRENT").write_text("gen-000001\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("built an index that exists"))
    assert defaults.corpus_index(tmp_path / "db", tmp_path / "no-archive") == tmp_path / "db"


def test_corpus_index_missing_without_archive_is_one_line(tmp_path):
    defaults = load_defaults()
    with pytest.raises(SystemExit) as exit_info:
        defaults.corpus_index(tmp_path / "db", tmp_path / "no-archive", "--real-db")
    message = str(exit_info.value.code)
    assert "--archive" in message and "no-archive" in message and "\n" not in message
    assert f"sarsearch index ARCHIVE --db {tmp_path / 'db'}" in message and "--real-db" in message
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(("code", "built"), [(0, True), (3, True), (1, False)])
def test_corpus_index_missing_is_built_with_sarsearch_index(tmp_path, monkeypatch, code, built):
    defaults = load_defaults()
    archive = tmp_path / "archive"
    archive.mkdir()
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **k: calls.append(command) or
                        subprocess.CompletedProcess(command, code))
    if built:
        assert defaults.corpus_index(tmp_path / "db", archive) == tmp_path / "db"
    else:
        with pytest.raises(SystemExit) as exit_info:
            defaults.corpus_index(tmp_path / "db", archive)
        assert f"sarsearch index {archive} --db {tmp_path / 'db'}" in str(exit_info.value.code)
    assert calls == [[sys.executable, "-m", "sarclip_search", "index", str(archive), "--db", str(tmp_path / "db"),
                      "--quiet"]]


def test_require_archive_needs_a_manifest_when_asked(tmp_path):
    defaults = load_defaults()
    assert defaults.require_archive(tmp_path, "--data") == tmp_path
    with pytest.raises(SystemExit) as exit_info:
        defaults.require_archive(tmp_path, "--data", manifest=True)
    assert "manifest.csv" in str(exit_info.value.code) and "--data" in str(exit_info.value.code)
