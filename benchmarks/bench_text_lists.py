"""Which IVF lists should a text query probe? Centroid ranking vs ranking by sampled list members (issue 17).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_text_lists.py [--db runs/corpus-db] [--n 1000000] [--members 8,32]
        [--subcentroids 2,4] [--lists 4,8,16] [--cache runs/index-bench]

An experiment, not the engine's path. On the real-embedding-seeded set of bench_query_recall (the same cache),
text recall@10 at a given nprobe is all or nothing per text: a few texts find none of their ten neighbours,
because the lists holding them have centroids that rank low for a text (the modality gap). This ranks the lists
instead by the best score among `m` members sampled from each list, or among `m` spherical k-means centroids of
each list's members (`--subcentroids`; m x nlist vectors scored per query; their list order makes the max a
reshape), then scans the top p lists (FAISS `search_preassigned`). It prints, for the tuner's proxy texts and the held-out texts: recall@10 vs exact,
its lower bound (mean - 2 standard errors, what `tune()` certifies), texts at 0.0, and batch q/s with Flat
timed on the same texts in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import faiss
import numpy as np
from bench_query_recall import vectors
from bench_text_recall import K, best_qps, build_index, text_sets

from sarclip_search.index import choose_index_key
from sarclip_search.index.metrics import recall_per_query

from defaults import CORPUS_DB, RUNS


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    """Mean recall@10, its lower bound (mean - 2 standard errors, as `tune()` certifies) and texts at 0.0."""
    per = recall_per_query(found, truth, K)
    return float(per.mean()), float(per.mean() - 2 * per.std() / len(per) ** 0.5), int((per == 0).sum())


class SampledLists:
    """m vectors standing for every IVF list, in list order (nlist * m, d): `members` draws m of the list's own
    vectors (a list with fewer repeats its own), `kmeans` takes m spherical k-means centroids of them."""

    def __init__(self, ivf, xb: np.ndarray, m: int, pick) -> None:
        out = np.zeros((ivf.nlist, m, xb.shape[1]), np.float32)
        self.empty = np.zeros(ivf.nlist, bool)
        for list_no in range(ivf.nlist):
            size = ivf.invlists.list_size(list_no)
            if size == 0:
                self.empty[list_no] = True
                continue
            members = xb[faiss.rev_swig_ptr(ivf.invlists.get_ids(list_no), size).copy()]  # ids are rows of xb here
            out[list_no] = members[np.arange(m) % size] if size <= m else pick(members, m)
        self.vectors = np.ascontiguousarray(out.reshape(-1, xb.shape[1]))
        self.m, self.nlist = m, ivf.nlist

    @classmethod
    def members(cls, ivf, xb: np.ndarray, m: int, seed: int = 0) -> SampledLists:
        rng = np.random.default_rng(seed)
        return cls(ivf, xb, m, lambda members, m: members[rng.choice(len(members), m, replace=False)])

    @classmethod
    def kmeans(cls, ivf, xb: np.ndarray, m: int, seed: int = 0) -> SampledLists:
        def pick(members: np.ndarray, m: int) -> np.ndarray:
            kmeans = faiss.Kmeans(xb.shape[1], m, niter=10, seed=seed, spherical=True, min_points_per_centroid=1)
            kmeans.train(members)
            return kmeans.centroids
        return cls(ivf, xb, m, pick)

    def lists(self, xq: np.ndarray, p: int) -> np.ndarray:
        best = (xq @ self.vectors.T).reshape(len(xq), self.nlist, self.m).max(axis=2)
        best[:, self.empty] = -np.inf
        return np.argpartition(-best, p, axis=1)[:, :p]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=str(CORPUS_DB))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--cache", default=str(RUNS / "index-bench"), help="bench_query_recall's cache")
    parser.add_argument("--members", default="8,32")
    parser.add_argument("--lists", default="4,8,16")
    parser.add_argument("--subcentroids", default="2,4", help="k-means centroids per list ('' : none)")
    args = parser.parse_args()
    real, _, _, proxies, texts = text_sets(Path(args.db))
    xb, _, _ = vectors("real", args.n, real)
    factory = choose_index_key(args.n, xb.shape[1], None)
    index, _ = build_index(xb, Path(args.cache) / f"real-{args.n}-{factory.replace(',', '-')}", False, factory)
    ivf = faiss.extract_index_ivf(index._index)
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    started = time.perf_counter()
    subs = {m: SampledLists.kmeans(ivf, xb, m) for m in map(int, filter(None, args.subcentroids.split(",")))}
    print(f"sub-centroids built in {time.perf_counter() - started:.1f} s")
    print(f"{factory}, n={args.n:,}, {len(proxies)} proxy texts, {len(texts)} held-out texts, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {os.getloadavg()[0]:.2f}")
    for name, xq in (("proxies", proxies), ("held-out", texts)):
        truth, flat_qps = best_qps(lambda q: flat.search(q, K)[1], xq)
        print(f"\n{name}: Flat {flat_qps:,.0f} q/s")
        print(f"  {'ranking':34}{'recall':>8}{'lower':>8}{'at 0':>6}{'q/s':>9}{'xFlat':>7}")
        for nprobe in (16, 32, 64):
            ivf.nprobe = nprobe
            found, qps = best_qps(lambda q: ivf.search(q, K)[1], xq)
            print(f"  {'centroids, nprobe ' + str(nprobe):34}" + "".join(f"{v:>8.3f}" for v in recall(found, truth)[:2])
                  + f"{recall(found, truth)[2]:>6}{qps:>9,.0f}{qps / flat_qps:>7.1f}")
        rankers = [(f"{m} sampled members", SampledLists.members(ivf, xb, m)) for m in map(int, args.members.split(","))]
        rankers += [(f"{m} sub-centroids", subs[m]) for m in map(int, filter(None, args.subcentroids.split(",")))]
        for label, sample in rankers:
            for p in (int(v) for v in args.lists.split(",")):
                def run(q, p=p, sample=sample):
                    lists = sample.lists(q, p)
                    ivf.nprobe = p
                    return ivf.search_preassigned(q, K, lists, np.zeros(lists.shape, np.float32))[1]
                found, qps = best_qps(run, xq)
                r, lower, zeros = recall(found, truth)
                print(f"  {f'{label}, {p} lists':34}{r:>8.3f}{lower:>8.3f}{zeros:>6}{qps:>9,.0f}"
                      f"{qps / flat_qps:>7.1f}")
    print(f"\nload {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
