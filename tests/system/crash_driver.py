"""Kill `sarsearch index` with SIGKILL at random moments and check the index after every kill.

Run by tests/system/test_crash.py as a subprocess:

    python tests/system/crash_driver.py ARCHIVE WORKDIR CHECKPOINT --kills 20 --seed 0 --commit-every 2

Why a driver and not `python -m sarclip_search index` per kill: a cold start costs ~8 s on 2 cores
(imports, then 5-6 s to load the model), so 20 cold kills would take minutes. The driver imports
everything and loads the model once, then for each run forks a child that executes the real CLI entry
point (`sarclip_search.cli.app`, `index ARCHIVE --db DB --model CKPT --quiet --commit-every N`) with
`load_model` answering from memory. The child is a separate process writing to disk, and SIGKILL
gives it no chance to clean up, exactly like a kill -9 of the command. OMP_NUM_THREADS=1 (set by the
caller) keeps torch and FAISS free of thread pools, so forking is safe.

Every other kill is aimed at a commit (the driver polls for a staged `gen-*.tmp` generation every 0.5 ms and
kills as soon as it sees one): an intermediate commit lasts milliseconds, so random kills can all miss them.
After each kill the driver checks the committed state: it opens with `Engine.open`, `check_index`
finds no problem (catalog ids == vector ids, counts and dims as info.json says), a vector query
returns hits whose ids are all in the catalog, and no committed scene was lost since the last check.
At the end it resumes to completion and compares with a clean run into another directory (same scenes,
tiles and vectors). Prints one JSON line of figures on stdout; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np


def run_index(argv: list[str], log_path: Path) -> int:
    """Fork a child that runs `sarsearch ARGV`; return its pid."""
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            from sarclip_search.cli.app import app

            app(args=argv, standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    return pid


def staged(db: Path) -> set[tuple[str, int, int]]:
    """The staged generations (gen-*.tmp) in DB, each as (name, inode, creation time): one re-created under
    the same name by a later run counts as new."""
    found = set()
    for path in db.glob("gen-*.tmp"):
        try:
            info = path.stat()
        except FileNotFoundError:  # deleted meanwhile
            continue
        found.add((path.name, info.st_ino, info.st_ctime_ns))
    return found


def wait_for_staging(db: Path, pid: int, leftovers: set, deadline: float) -> int | None:
    """Wait until a new staged generation (gen-*.tmp, not one of `leftovers`) exists in DB or DEADLINE passes:
    None; or the child's wait status if it exited first (it is reaped then)."""
    while time.perf_counter() < deadline:
        if staged(db) - leftovers:
            return None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.0005)
    return None


def index_argv(archive: Path, db: Path, checkpoint: Path, commit_every: int) -> list[str]:
    return ["index", str(archive), "--db", str(db), "--model", str(checkpoint), "--quiet",
            "--commit-every", str(commit_every)]


def run_to_end(argv: list[str], log_path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    _, status = os.waitpid(run_index(argv, log_path), 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started


def snapshot(db: Path) -> dict[str, object]:
    """The committed state: scene paths, tile windows per path and vectors per (path, window)."""
    from sarclip_search.query.engine import Engine

    with Engine.open(db) as engine:
        ids = engine.catalog.tile_ids()
        rows = engine.catalog.fetch_tiles(ids)
        vectors = engine.vectors.vectors(ids) if len(ids) else np.zeros((0, engine.vectors.dim))
        keys = [(r["path"], r["col_off"], r["row_off"], r["width"], r["height"]) for r in rows]
        return {"scenes": sorted({r["path"] for r in rows}), "tiles": dict(zip(keys, np.asarray(vectors)))}


def check_committed(db: Path, rng: random.Random) -> int:
    """Assert the committed state is consistent and queryable; return its scene count (0: none yet)."""
    from sarclip_search.query.engine import Engine
    from sarclip_search.store.check import check_index
    from sarclip_search.store.layout import IndexStore

    if IndexStore(db).current() is None:
        return 0  # killed before the first commit: there is nothing, as before the run
    report = check_index(db)
    if not report.ok:
        raise SystemExit(f"inconsistent index after a kill: {report.problems}")
    with Engine.open(db) as engine:
        tile_ids = engine.catalog.tile_ids()
        if len(tile_ids) != engine.vectors.ntotal or engine.info["counts"]["tiles"] != len(tile_ids):
            raise SystemExit(f"catalog {len(tile_ids)} tiles, vectors {engine.vectors.ntotal}, info {engine.info['counts']}")
        query = np.array([rng.gauss(0, 1) for _ in range(engine.vectors.dim)], dtype=np.float32)
        query /= np.linalg.norm(query)
        _, ids = engine.vectors.search(query[None], 5)
        found = [int(i) for i in ids[0] if i >= 0]
        if len(found) != min(5, len(tile_ids)) or len(engine.catalog.fetch_tiles(found)) != len(found):
            raise SystemExit(f"query returned ids {found} not all in the catalog")
        return engine.catalog.counts()["scenes"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archive", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commit-every", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    import sarclip_search.model.sarclip as model_module
    from sarclip_search.cli import app as _cli  # noqa: F401  (import before forking)

    sarclip = model_module.load_model(args.checkpoint)
    model_module.load_model = lambda *_, **__: sarclip  # the child CLI reuses the loaded model
    # Export the ONNX encoders once here: forked children then hard-link this export instead of spending
    # seconds re-exporting in every run, which would leave few kills landing while a generation is written.
    from sarclip_search.model.encoder_export import export_encoders

    export_encoders(sarclip, args.workdir / "warm-export")
    rng = random.Random(args.seed)
    log_path = args.workdir / "children.log"
    started = time.perf_counter()

    reference = args.workdir / "reference"
    code, clean_seconds = run_to_end(index_argv(args.archive, reference, args.checkpoint, args.commit_every), log_path)
    if code != 0:
        raise SystemExit(f"clean run exited {code}; see {log_path}")

    db = args.workdir / "db"
    figures = {"kills": 0, "mid_write": 0, "before_first_commit": 0, "finished_before_kill": 0,
               "series": 1, "clean_run_seconds": round(clean_seconds, 2)}
    total = len(snapshot(reference)["scenes"])
    committed = 0
    while figures["kills"] < args.kills:
        leftovers = staged(db)  # staging left by an earlier kill (the next writer deletes it) does not count
        pid = run_index(index_argv(args.archive, db, args.checkpoint, args.commit_every), log_path)
        span = clean_seconds * max(0.2, 1 - committed / total)  # the clean run's time scaled to the work left
        if figures["kills"] % 2:
            # Every other kill is aimed at a commit: wait until a generation is being staged, then kill.
            # Commits are short (milliseconds), so purely random kills can all miss them.
            # No short deadline here: a run near the end spends longer than `span` on its last commit (filter
            # columns), and random kills alone can then keep landing before it, run after run.
            status = wait_for_staging(db, pid, leftovers, deadline=time.perf_counter() + 10 * clean_seconds + 10)
        else:
            status = None
            time.sleep(rng.uniform(0.0, span))  # anywhere in the run's expected span
        if status is None:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):  # the run finished before the kill: start a new series from nothing
            figures["finished_before_kill"] += 1
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"index exited {os.waitstatus_to_exitcode(status)}; see {log_path}")
            shutil.rmtree(db)
            figures["series"] += 1
            committed = 0
            continue
        figures["kills"] += 1
        if staged(db) - leftovers:
            figures["mid_write"] += 1  # a staged generation was being written when the kill landed
        scenes = check_committed(db, rng)
        if scenes == 0 and not (db / "CURRENT").exists():
            figures["before_first_commit"] += 1
        if scenes < committed:
            raise SystemExit(f"committed scenes went from {committed} to {scenes} after a kill")
        committed = scenes

    code, _ = run_to_end(index_argv(args.archive, db, args.checkpoint, args.commit_every), log_path)
    if code != 0:
        raise SystemExit(f"resumed run exited {code}; see {log_path}")
    check_committed(db, rng)
    expected, resumed = snapshot(reference), snapshot(db)
    if expected["scenes"] != resumed["scenes"] or expected["tiles"].keys() != resumed["tiles"].keys():
        raise SystemExit(f"resumed index differs from a clean run: {len(resumed['tiles'])} vs {len(expected['tiles'])} tiles")
    worst = max(float(np.abs(expected["tiles"][k] - resumed["tiles"][k]).max()) for k in expected["tiles"])
    figures.update(scenes=len(resumed["scenes"]), tiles=len(resumed["tiles"]), max_vector_difference=worst,
                   seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
