"""Where the time of an `index` run goes: seconds per stage, summed over the run.

A `StageTimer` holds one running total per stage name; `with timer.stage("embed"): ...` adds the block's
wall time to its stage, less the stages timed inside it (so no second is counted twice). It is thread-safe (a read-ahead thread and the main thread may time their stages
into one timer), so the stages of work that overlaps add up to more than the run's wall time: each figure
is the time spent in that stage, not a share of the run. `merge` adds the totals of another process's
timer (`as_dict`), e.g. a Ray actor's.

The stage names the indexer uses (`STAGES`, in pipeline order):

    decode      reading pixels: opening the file, its header, the windowed reads (raster.read_scene)
    radiometry  scale → dB → per-tile percentile stretch (radiometry.to_model_input)
    resize      the stretched tile to the model input size (raster._to_chip)
    model       loading the model (torch) or opening the ONNX session, and exporting the ONNX encoders
    embed       the image encoder on batches of chips (RunModel.encode_images)
    catalog     catalog writes and reads (scene and tile rows, removals, counts)
    faiss       adding vectors, rebuilding, tuning and saving the vector index
    commit      info.json and switching CURRENT to the new generation
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

STAGES: tuple[str, ...] = ("decode", "radiometry", "resize", "model", "embed", "catalog", "faiss", "commit")


class StageTimer:
    """Seconds per stage, summed over the run; safe to share between threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._active = threading.local()  # the stages open in each thread (`stage`)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall time of the `with` block to stage `name` (also when it raises), less the time of the
        other stages timed inside it in the same thread (each second counts in one stage: `decode` around a
        scene's read does not count the `radiometry` inside it). A block inside one of the same stage is
        counted by the outer one."""
        stack: list[list] = self._active.__dict__.setdefault("stack", [])
        if any(frame[0] == name for frame in stack):
            yield
            return
        frame = [name, time.perf_counter(), 0.0]  # name, start, seconds of the stages nested in it
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            elapsed = time.perf_counter() - frame[1]
            self.add(name, elapsed - frame[2])
            if stack:
                stack[-1][2] += elapsed

    def merge(self, seconds: Mapping[str, float]) -> None:
        """Add another timer's totals (`as_dict`), e.g. those a worker process sent back."""
        for name, value in seconds.items():
            self.add(name, float(value))

    def as_dict(self) -> dict[str, float]:
        """{stage: seconds}, the indexer's stages first in pipeline order, then any other, rounded to ms."""
        with self._lock:
            items = dict(self._seconds)
        order = [name for name in STAGES if name in items] + sorted(set(items) - set(STAGES))
        return {name: round(items[name], 3) for name in order}


def format_stages(seconds: Mapping[str, float]) -> str:
    """One line for a log or a summary: 'decode 4.1 s, radiometry 2.0 s, ...' (stages in pipeline order)."""
    return ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
