"""The CLI's progress bar: tiles/s from the indexer and an ETA from the whole run's mean rate."""

from __future__ import annotations

import pytest

from sarclip_search.cli import render


def test_eta_waits_for_data_then_follows_the_mean_rate():
    assert render.eta_seconds(0, 100, 10.0) is None  # nothing done yet
    assert render.eta_seconds(5, 100, render.ETA_AFTER_SECONDS / 2) is None  # too early to say
    assert render.eta_seconds(25, 100, 10.0) == pytest.approx(30.0)  # 2.5 files/s, 75 left
    assert render.eta_seconds(100, 100, 1.0) == 0.0  # finished: nothing left, however early


def test_eta_converges_after_a_slow_start():
    """A run whose first 10 s load a model and then does 1 file/s: the mean-rate ETA overestimates by
    startup x left/done, an error that only shrinks, to none at the end."""
    total, startup = 100, 10.0
    estimates = []
    for done in range(1, total + 1):
        elapsed = startup + done  # 1 s per file after the start-up
        estimates.append((render.eta_seconds(done, total, elapsed), total - done))
    errors = [estimate - left for estimate, left in estimates]
    assert all(error >= 0 for error in errors)  # the start-up inflates it, never deflates it
    assert errors == sorted(errors, reverse=True)  # and its share shrinks with every file
    assert errors[-1] == 0.0 and errors[49] == pytest.approx(startup) and errors[79] < startup / 3


def test_progress_bar_shows_tiles_per_second_when_the_library_reports_tiles(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    with render.progress_bar("indexing") as update:
        update("embed", 0, 40, 0)  # the indexer counts tiles: done and total, and the tiles read (the rate)
        update("embed", 40, 40, 38)
    with render.progress_bar("training") as update:
        update("steps", 3, 3)
    err = capsys.readouterr().err
    assert "indexing (embed)" in err and "40/40 tiles," in err and "tiles/s" in err
    assert "eta 0:00" in err
    steps_line = next(line for line in err.splitlines() if "training (steps)" in line)
    assert "3/3" in steps_line and "/s" in steps_line and "tiles" not in steps_line
