"""Fixtures of the scale-out tests (issue 15): ONE Ray session for the whole test run.

`ray_cluster` starts `ray.init(num_cpus=2)` the first time a test asks for it and shuts it down when the test
session ends; every Ray test (indexing, shards, several indexes) uses it rather than starting its own, since
a Ray start costs seconds and two would compete for the same 2 cores. Tests that need another topology (the
two-node `ray.cluster_utils.Cluster` of test_ray_index.py) run it in a subprocess, which leaves this session
alone. Without Ray installed (`pip install 'sarclip-search[ray]'`) every test using it is skipped.
"""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """The test run's Ray session (2 CPUs, local); the `ray` module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sarclip-search[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'sarclip-search[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    if started:
        ray.shutdown()
