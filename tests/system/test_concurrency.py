"""Readers during a write see one committed generation, whole; a second writer is refused.

A reader process opens the index over and over (`Engine.open`, as `sarsearch query` does) while this
process indexes 10 more files committing after every file. Each time it checks that the catalog and the
vectors it opened hold the same ids, as many as info.json says, and that a search returns only ids the
catalog knows. Meanwhile `sarsearch index` on the same directory must refuse with the lock message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from sarclip_search.cli.app import EXIT_ERROR

from helpers import grown_archive, index

READER = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from sarclip_search.query.engine import Engine

db, stop = Path(sys.argv[1]), Path(sys.argv[2])
query = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
seen, problems, opens = [], [], 0
print("ready", flush=True)
finished = False
while not finished:
    finished = stop.exists() and opens >= 20  # one more open after the writer is done
    with Engine.open(db) as engine:
        opens += 1
        tiles = engine.catalog.tile_ids()
        vector_ids = np.sort(engine.vectors.ids())
        if not np.array_equal(tiles, vector_ids) or engine.info["counts"]["tiles"] != len(tiles):
            problems.append([engine.generation.path.name, len(tiles), len(vector_ids), engine.info["counts"]])
        q = query[:, : engine.vectors.dim]
        q /= np.linalg.norm(q)
        _, ids = engine.vectors.search(q, 5)
        found = [int(i) for i in ids[0] if i >= 0]
        if len(engine.catalog.fetch_tiles(found)) != len(found):
            problems.append(["unknown ids in hits", found])
        seen.append([engine.generation.number, len(tiles)])
print(json.dumps({"opens": opens, "seen": seen, "problems": problems}))
"""


def test_query_during_index_sees_whole_generations_and_a_second_writer_is_refused(
    tmp_path, fixture_archive, checkpoint, sarclip, monkeypatch
):
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    archive = grown_archive(fixture_archive, tmp_path / "archive", copies=10)
    manifest = (archive / "manifest.csv").read_text().splitlines()
    (archive / "manifest.csv").write_text("\n".join(manifest[:11]) + "\n")  # first run: the 10 original files
    store = IndexStore(tmp_path / "db")
    assert index_archive(archive, store, sarclip).indexed == 10
    (archive / "manifest.csv").write_text("\n".join(manifest) + "\n")

    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.root), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert reader.stdout.readline().strip() == "ready"

    outcome: dict[str, object] = {}

    def write() -> None:
        outcome["report"] = index_archive(archive, store, sarclip, commit_every=1)

    writer = threading.Thread(target=write)
    started = time.perf_counter()
    writer.start()
    time.sleep(0.5)
    monkeypatch.setattr("sarclip_search.model.sarclip.load_model", lambda *_, **__: sarclip)
    second = index(archive, store.root, checkpoint)
    writer.join(timeout=120)
    write_seconds = time.perf_counter() - started
    stop.touch()
    out, err = reader.communicate(timeout=120)

    assert outcome["report"].indexed == 10
    assert second.exit_code == EXIT_ERROR, second.output
    assert "being written by another `sarsearch index`" in second.stderr and "Traceback" not in second.output
    assert reader.returncode == 0, err[-3000:]
    figures = json.loads(out.strip().splitlines()[-1])
    generations = sorted({number for number, _ in figures["seen"]})
    print(f"reader: {figures['opens']} opens over {write_seconds:.1f} s of writing, "
          f"{len(generations)} generations seen, {len(figures['problems'])} problems")
    assert figures["problems"] == [], figures["problems"]
    assert len(generations) >= 3, generations  # the reader really ran across several commits
    tiles_seen = [tiles for _, tiles in figures["seen"]]
    assert tiles_seen == sorted(tiles_seen) and tiles_seen[-1] == 20  # never backwards, ends complete
    for number, tiles in figures["seen"]:
        assert tiles == 10 + (number - 1), (number, tiles)  # generation n holds exactly its n-1 committed files
