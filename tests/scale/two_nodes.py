"""Index an archive on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`), in its own process.

    python tests/scale/two_nodes.py ARCHIVE DB CHECKPOINT OUT.json [TILE_SIZE]

Run by test_ray_index.py in a subprocess so that this cluster (its own GCS and two raylets, 2 CPUs each)
never meets the test session's `ray.init(num_cpus=2)`; benchmarks/bench_ray_index.py runs it too. Writes
to OUT.json the run's report (`nodes`: per node id, files read and tiles embedded there; which node is the
head) and the seconds it took.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    archive, db, checkpoint, out = (Path(arg) for arg in sys.argv[1:5])
    tile_size = int(sys.argv[5]) if len(sys.argv) > 5 else 256
    import ray
    from ray.cluster_utils import Cluster

    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.ingest.ray_pipeline import RayOptions, RayStream
    from sarclip_search.model.sarclip import load_model
    from sarclip_search.store.layout import IndexStore

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, logging_level=logging.ERROR)
        cluster.wait_for_nodes()
        head = ray.get_runtime_context().get_node_id()
        nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        started = time.perf_counter()
        report = index_archive(archive, IndexStore(db), lambda: load_model(checkpoint), model_path=str(checkpoint),
                               tile_size=tile_size, stream=RayStream(RayOptions(), str(checkpoint)))
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    out.write_text(json.dumps({"head": head, "nodes": nodes, "report_nodes": report.nodes,
                               "tiles": report.tiles_added, "files": report.indexed, "seconds": seconds,
                               "failed": report.failed}, indent=1))


if __name__ == "__main__":
    main()
