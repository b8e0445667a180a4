"""Plain helpers shared by test modules in several folders; fixtures shared that way live in conftest.py.

Import it as `helpers` (`from helpers import clustered`), like `stac_offline`: tests/ has no __init__.py, so
pytest (import mode "prepend") puts tests/ on sys.path when it loads tests/conftest.py, before any test module
below it. It imports only numpy at module level, so tests/index stays free of the model and the CLI.
"""

from __future__ import annotations

import numpy as np

# --- vectors ------------------------------------------------------------------------------------------------


def clustered(n: int, d: int, *, clusters: int = 100, seed: int = 0, centers_seed: int | None = None) -> np.ndarray:
    """(n, d) float32 seeded L2-normalized Gaussian clusters: the structure IVF and PQ rely on.

    The cluster centers come from `seed` too unless `centers_seed` is given: with `centers_seed=0`, every seed
    draws new points around the same centers (held-out queries from the data's distribution).
    benchmarks/bench_index.py has its own generator (chunked for 1M points, float32 noise: other draws).
    """
    rng = np.random.default_rng(seed)
    centers_rng = rng if centers_seed is None else np.random.default_rng(centers_seed)
    centers = centers_rng.standard_normal((clusters, d)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
