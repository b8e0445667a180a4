"""Crash safety: `sarsearch index` killed with SIGKILL at random moments never loses committed work.

tests/system/crash_driver.py does the killing (see its docstring for why it forks a warm process rather than
cold-starting `python -m sarclip_search index` for each kill); this test builds a 20-file archive,
runs the driver, and checks `sarsearch info --check` on the resumed index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sarclip_search.cli.app import EXIT_OK

from helpers import grown_archive, run

DRIVER = Path(__file__).resolve().parent / "crash_driver.py"


def run_driver(tmp_path: Path, fixture_archive: Path, checkpoint: Path, kills: int, seed: int, copies: int) -> dict:
    archive = grown_archive(fixture_archive, tmp_path / "archive", copies)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(archive), str(tmp_path), str(checkpoint),
         "--kills", str(kills), "--seed", str(seed), "--commit-every", "2"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print("crash figures:", figures)
    assert figures["kills"] == kills
    assert figures["scenes"] == 10 + copies and figures["tiles"] == 10 + copies
    assert figures["max_vector_difference"] < 1e-3

    result = run("info", "--check", "--db", tmp_path / "db")
    assert result.exit_code == EXIT_OK, result.output
    assert "ok" in result.stdout and "same ids" in result.stdout
    return figures


def test_kill_9_at_random_moments_then_resume(tmp_path, fixture_archive, checkpoint):
    figures = run_driver(tmp_path, fixture_archive, checkpoint, kills=20, seed=0, copies=6)
    assert figures["mid_write"] > 0  # some kills did land while a generation was being written


@pytest.mark.slow
def test_kill_9_many_times(tmp_path, fixture_archive, checkpoint):
    run_driver(tmp_path, fixture_archive, checkpoint, kills=100, seed=1, copies=30)
