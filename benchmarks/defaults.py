"""Where the benchmarks find their inputs by default: paths inside this checkout, whatever the working directory.

  DATA       the developer corpus, `../shared/data` next to the checkout (a folder with manifest.csv);
  CORPUS_DB  `runs/corpus-db`: DATA indexed by the shipped model, the same directory the README's
             "Then, by hand" builds (`sarsearch index ../shared/data --db runs/corpus-db`);
             `corpus_index` builds it when it is missing (~3 min on 2 cores);
  RUNS       `runs/`, git-ignored: built indexes and caches;
  RESULTS    `benchmarks/results/`: the JSON records.
A path given on the command line is taken as it is (relative to the working directory).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
RUNS = REPO / "runs"
CORPUS_DB = RUNS / "corpus-db"
RESULTS = REPO / "benchmarks" / "results"


def require_archive(path: str | Path, option: str, manifest: bool = False) -> Path:
    """`path` if it is a folder (holding manifest.csv if `manifest`), else exit 1 with one line naming the fix."""
    folder = Path(path)
    missing = "no such folder" if not folder.is_dir() else (
        "no manifest.csv in it" if manifest and not (folder / "manifest.csv").is_file() else None)
    if missing:
        wanted = "a labelled archive (a folder with manifest.csv)" if manifest else "an archive folder"
        sys.exit(f"error: {option} {folder}: {missing}; pass {option} with {wanted}; the developer corpus is "
                 "../shared/data next to the checkout")
    return folder


def corpus_index(db: str | Path, archive: str | Path, option: str = "--db") -> Path:
    """Index directory `db` (given as `option`), first built from `archive` with `sarsearch index` if it holds
    no committed index."""
    db = Path(db)
    if (db / "CURRENT").is_file():
        return db
    if not Path(archive).is_dir():
        sys.exit(f"error: no index at {db}, and no folder --archive {archive} to build it from; build it with "
                 f"`sarsearch index ARCHIVE --db {db}`, or pass {option} with an index of the corpus")
    print(f"no index at {db}: building it with `sarsearch index {archive} --db {db}` "
          "(the developer corpus: ~3 min on 2 cores)", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "sarclip_search", "index", str(archive), "--db", str(db), "--quiet"]
    code = subprocess.run(command, check=False).returncode
    if code not in (0, 3):  # 3: indexed, some files unreadable (listed by the command)
        sys.exit(f"error: building {db} failed (exit {code}); run `sarsearch index {archive} --db {db}` to see why")
    return db


def write_result(out: str | Path, result: dict) -> Path:
    """Write a benchmark's JSON record (indented, missing folders made); returns the path."""
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out
