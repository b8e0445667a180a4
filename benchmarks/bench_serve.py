"""`sarsearch serve` under load, over loopback HTTP, next to the engine called in-process, in one run.

    python benchmarks/bench_serve.py [--db runs/corpus-db] [--data ../shared/data] [--requests 200]

1. Text queries (`GET /search?q=...&limit=10`, 24 different texts in turn) against a real uvicorn
   (`sarsearch serve` as a subprocess on 127.0.0.1) with 1, 4 and 8 concurrent clients (keep-alive
   connections, one thread each): queries/s, p50, p99. Side by side, in this process: `Engine.query` for
   the same texts, sequentially, and from 8 threads through the server's own engine pool (what the HTTP
   layer adds is the difference).
2. Thumbnails (`/items/{id}/thumbnail.png`) of 100 tiles: cold (first request, read from the archive)
   then warm (the server's cache), one client.
3. 8 clients x 200 mixed requests (text, filtered, metadata-only and more-like-this searches, items,
   thumbnails, queryables, health) against a server on a scratch index that `sarsearch index` runs keep
   growing meanwhile (files added in batches, a commit every 40 files): errors (any status but 200, or no
   answer), generations seen, and responses whose generation is wrong: the body's and the header's differ,
   or a client sees an older generation after a newer one.

Only loopback traffic; every loop is bounded. Writes benchmarks/results/serve.json and prints a table.
Part 3 builds its scratch index (a few hundred files of the corpus, hard-linked) under a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads

from defaults import CORPUS_DB, DATA, REPO, RESULTS, corpus_index, require_archive

TEXTS = [
    "T72 tank", "BMP2 infantry fighting vehicle", "a cargo ship at sea", "a small fishing boat", "oil spill on the sea",
    "flooded fields near a river", "land with lakes and rivers", "a harbor with ships", "military vehicle on the ground",
    "an armored personnel carrier", "a tanker ship", "calm sea surface", "urban area with buildings",
    "farmland and fields", "a bridge over a river", "a container ship near the coast", "a truck", "ZSU-23-4 anti-aircraft gun",
    "a self-propelled howitzer", "dark slick on water", "forest", "mountains", "a ship wake", "coastline",
]
CLIENTS = (1, 4, 8)
THUMBNAILS = 100
MIXED_CLIENTS, MIXED_REQUESTS = 8, 200
SCRATCH_START = 240  # files in the scratch index before part 3 starts
SCRATCH_BATCH = 160  # files added before each `index` run of part 3
SCRATCH_COMMIT_EVERY = 40
SCRATCH_RUNS = 6  # at most this many `index` runs during part 3


def stats(seconds: list[float], wall: float | None = None) -> dict[str, float]:
    ordered = sorted(seconds)
    result = {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
              "p99_ms": 1000 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
              "mean_ms": 1000 * statistics.fmean(ordered)}
    if wall is not None:
        result["qps"] = len(ordered) / wall
    return result


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes, float]:
        start = time.perf_counter()
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body, time.perf_counter() - start

    def close(self) -> None:
        self.connection.close()


def start_server(db: Path) -> tuple[subprocess.Popen, int]:
    """`sarsearch serve --db DB --port 0` as a subprocess; (process, port) once it listens."""
    command = [sys.executable, "-m", "sarclip_search", "serve", "--db", str(db), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "COLUMNS": "200"})
    line = process.stderr.readline()
    if "serving" not in line:
        process.kill()
        sys.exit(f"error: `{' '.join(command)}` did not start: {line}{process.stderr.read()[-2000:]}")
    port = int(line.split(" at ")[1].split("/")[2].split(":")[1])
    threading.Thread(target=process.stderr.read, daemon=True).start()  # drain it
    return process, port


def stop_server(process: subprocess.Popen) -> int:
    process.send_signal(2)  # SIGINT, as Ctrl-C
    return process.wait(timeout=60)


def in_clients(port: int, clients: int, per_client: int, request: Callable[[Client, int, random.Random], None]) -> float:
    """Run `clients` threads, each with its own connection, `per_client` requests each; wall seconds."""
    barrier = threading.Barrier(clients + 1)

    def work(number: int) -> None:
        client, rng = Client(port), random.Random(number)
        barrier.wait()
        try:
            for i in range(per_client):
                request(client, number * per_client + i, rng)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def text_load(port: int, clients: int, per_client: int) -> dict:
    """`clients` clients sending `per_client` text queries each (after 5 each to warm up): stats and errors."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def request(client: Client, i: int, _: random.Random) -> None:
        status, _, _, seconds = client.get("/search?" + urlencode({"q": TEXTS[i % len(TEXTS)], "limit": 10}))
        with lock:
            latencies.append(seconds)
            if status != 200:
                failures.append(status)

    in_clients(port, clients, 5, request)  # warm-up: connections, the engines' first queries
    latencies.clear()
    wall = in_clients(port, clients, per_client, request)
    return {**stats(latencies, wall), "errors": len(failures)}


def text_queries(port: int, requests: int) -> dict:
    results = {}
    for clients in CLIENTS:
        results[f"http_{clients}_clients"] = text_load(port, clients, max(1, requests // clients))
        print(f"  http, {clients} client(s): {results[f'http_{clients}_clients']}", flush=True)
    return results


def in_process(db: Path, requests: int) -> dict:
    from sarclip_search.query.engine import Engine
    from sarclip_search.server.engines import Generations

    with Engine.open(db) as engine:
        for text in TEXTS[:5]:
            engine.query(text, k=10)
        latencies = []
        start = time.perf_counter()
        for i in range(requests):
            began = time.perf_counter()
            engine.query(TEXTS[i % len(TEXTS)], k=10)
            latencies.append(time.perf_counter() - began)
        sequential = stats(latencies, time.perf_counter() - start)
    print(f"  in-process, 1 thread: {sequential}", flush=True)
    generations = Generations(db)  # the server's pool: 2 engines of one generation
    latencies, lock = [], threading.Lock()

    def work(number: int, count: int) -> None:
        for i in range(count):
            began = time.perf_counter()
            with generations.lease() as snapshot, snapshot.engine() as engine:
                engine.query(TEXTS[(number * count + i) % len(TEXTS)], k=10)
            with lock:
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=work, args=(n, requests // 8)) for n in range(8)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pooled = stats(latencies, time.perf_counter() - start)
    generations.close()
    print(f"  in-process, 8 threads, the server's engine pool: {pooled}", flush=True)
    return {"in_process_1_thread": sequential, "in_process_8_threads_pool": pooled}


def thumbnails(port: int) -> dict:
    client = Client(port)
    ids: list[str] = []
    for text in TEXTS:
        _, _, body, _ = client.get("/search?" + urlencode({"q": text, "limit": 10}))
        ids += [f["id"] for f in json.loads(body)["features"] if f["id"] not in ids]
    ids = ids[:THUMBNAILS]
    result = {}
    for state in ("cold", "warm"):
        latencies, misses = [], 0
        for tile in ids:
            status, headers, _, seconds = client.get(f"/items/{tile}/thumbnail.png")
            assert status == 200, (tile, status)
            latencies.append(seconds)
            misses += headers.get("x-sarsearch-cache") == "miss"
        result[f"thumbnail_{state}"] = {**stats(latencies), "cache_misses": misses}
        print(f"  thumbnails {state}: {result[f'thumbnail_{state}']}", flush=True)
    client.close()
    return result


# ---------------------------------------------------------------- part 3: serving while `index` commits


def scratch_archive(data: Path, folder: Path) -> tuple[Path, list[dict], list[str]]:
    """A scratch archive of corpus files (hard links): (its folder, manifest rows still to add, header)."""
    with open(data / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if not row["path"].startswith("mstar_scenes/")]  # chips: fast to embed
    random.Random(0).shuffle(rows)
    archive = folder / "archive"
    archive.mkdir(parents=True)
    return archive, rows, header


def add_files(data: Path, archive: Path, rows: list[dict], header: list[str], added: list[dict], count: int) -> None:
    for row in rows[len(added):len(added) + count]:
        target = archive / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(data / row["path"], target)
        except OSError:
            shutil.copy2(data / row["path"], target)
        added.append(row)
    with open(archive / "manifest.csv.tmp", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(added)
    os.replace(archive / "manifest.csv.tmp", archive / "manifest.csv")


def index_run(archive: Path, db: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sarclip_search", "index", str(archive), "--db", str(db), "--quiet",
               "--commit-every", str(SCRATCH_COMMIT_EVERY)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)


def mixed_while_indexing(data: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        archive, rows, header = scratch_archive(data, folder)
        db, added = folder / "db", []
        add_files(data, archive, rows, header, added, SCRATCH_START)
        started = time.perf_counter()
        first = index_run(archive, db)
        if first.returncode not in (0, 3):
            sys.exit(f"error: indexing the scratch archive failed: {first.stderr[-2000:]}")
        print(f"  scratch index: {len(added)} files in {time.perf_counter() - started:.0f} s", flush=True)
        process, port = start_server(db)
        done = threading.Event()
        runs: list[dict] = []

        def writer() -> None:
            for _ in range(SCRATCH_RUNS):
                if done.is_set() or len(added) >= len(rows):
                    break
                add_files(data, archive, rows, header, added, SCRATCH_BATCH)
                began = time.perf_counter()
                result = index_run(archive, db)
                runs.append({"files": len(added), "exit": result.returncode, "seconds": time.perf_counter() - began})

        writing = threading.Thread(target=writer)
        lock = threading.Lock()
        outcome = {"requests": 0, "errors": 0, "error_samples": [], "mixed": 0, "went_back": 0}
        generations: set[str] = set()
        kinds: dict[str, list[float]] = {}

        def request(client: Client, i: int, rng: random.Random, state: dict) -> None:
            kind = rng.choices(["text", "filtered", "metadata", "like", "item", "thumbnail", "queryables", "healthz"],
                               [40, 15, 10, 10, 5, 10, 5, 5])[0]
            known = state.get("ids") or ["1"]
            path = {
                "text": lambda: "/search?" + urlencode({"q": rng.choice(TEXTS), "limit": 10}),
                "filtered": lambda: "/search?" + urlencode({"q": rng.choice(TEXTS), "limit": 10,
                                                            "filter": "label <> 'ship' AND split = 'test'"}),
                "metadata": lambda: "/search?" + urlencode({"filter": "split = 'train'", "limit": 20}),
                "like": lambda: "/search?" + urlencode({"like": rng.choice(known), "limit": 10}),
                "item": lambda: f"/items/{rng.choice(known)}",
                "thumbnail": lambda: f"/items/{rng.choice(known)}/thumbnail.png",
                "queryables": lambda: "/queryables",
                "healthz": lambda: "/healthz",
            }[kind]()
            try:
                status, headers, body, seconds = client.get(path)
            except (OSError, http.client.HTTPException) as exc:
                status, headers, body, seconds = 0, {}, str(exc).encode(), 0.0
            generation = headers.get("x-sarsearch-generation")
            with lock:
                outcome["requests"] += 1
                kinds.setdefault(kind, []).append(seconds)
                if status != 200:
                    outcome["errors"] += 1
                    if len(outcome["error_samples"]) < 5:
                        outcome["error_samples"].append(f"{path} -> {status} {body[:200]!r}")
                    return
                generations.add(str(generation))
            if headers.get("content-type", "").startswith("application/"):
                payload = json.loads(body)
                stated = payload.get("sarsearch:generation") or payload.get("generation")
                if stated is not None and stated != generation:
                    with lock:
                        outcome["mixed"] += 1
                if kind in ("text", "filtered") and payload.get("features"):
                    state["ids"] = [f["id"] for f in payload["features"]]
            if state.get("generation") and generation < state["generation"]:
                with lock:
                    outcome["went_back"] += 1
            state["generation"] = max(state.get("generation") or "", generation or "")

        states: list[dict] = [{} for _ in range(MIXED_CLIENTS)]
        writing.start()
        time.sleep(8)  # the first run loads the model before its first commit
        wall = in_clients(port, MIXED_CLIENTS, MIXED_REQUESTS, lambda c, i, r: request(c, i, r, states[i // MIXED_REQUESTS]))
        done.set()
        writing.join()
        code = stop_server(process)
        outcome.update({"wall_s": wall, "qps": outcome["requests"] / wall, "generations_seen": sorted(generations),
                        "index_runs": runs, "server_exit": code,
                        "latency_by_kind": {kind: stats(values) for kind, values in sorted(kinds.items())}})
        print(f"  mixed: {outcome['requests']} requests, {outcome['errors']} errors, {len(generations)} generations "
              f"seen, {outcome['mixed']} mixed, {outcome['went_back']} went back, {outcome['qps']:.1f} q/s", flush=True)
        return outcome
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shown(path: Path) -> str:
    """`path` relative to the checkout when inside it (records name no machine's folders)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=CORPUS_DB, help="index of the corpus (built when missing)")
    parser.add_argument("--data", type=Path, default=DATA, help="the developer corpus (part 3's scratch archive)")
    parser.add_argument("--requests", type=int, default=200, help="text queries per concurrency level")
    parser.add_argument("--skip-mixed", action="store_true", help="leave part 3 out")
    args = parser.parse_args()
    data = require_archive(args.data, "--data", manifest=True)
    db = corpus_index(args.db, data)
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "load_before": os.getloadavg()},
        "commit": git_commit(), "db": shown(db), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, commit {result['commit'][:10]}, {shown(db)}",
          flush=True)
    print("1. text queries", flush=True)
    result.update(in_process(db, args.requests))
    process, port = start_server(db)
    try:
        result.update(text_queries(port, args.requests))
        print("2. thumbnails", flush=True)
        result.update(thumbnails(port))
    finally:
        result["server_exit"] = stop_server(process)
    if not args.skip_mixed:
        print("3. mixed requests while `index` commits", flush=True)
        result["mixed_while_indexing"] = mixed_while_indexing(data)
    result["machine"]["load_after"] = os.getloadavg()
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'measure':44} {'q/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for key in ("in_process_1_thread", "in_process_8_threads_pool", *(f"http_{c}_clients" for c in CLIENTS),
                "thumbnail_cold", "thumbnail_warm"):
        row = result[key]
        print(f"{key:44} {row.get('qps', float('nan')):7.1f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f}")
    if "mixed_while_indexing" in result:
        mixed = result["mixed_while_indexing"]
        print(f"mixed while indexing: {mixed['requests']} requests, {mixed['errors']} errors, "
              f"{len(mixed['generations_seen'])} generations, {mixed['mixed']} mixing, {mixed['went_back']} going back")
    print(f"wrote {RESULTS / 'serve.json'}")


if __name__ == "__main__":
    main()
