"""The model of one `index` run (`RunModel`) and the ONNX export of its towers (`ensure_encoders`).

The model is a SarClip, or a loader called only when torch is needed; until then its identity is the
checkpoint file's hash and, when the index was built by that checkpoint, the index's record of it
(`check_compatible`). A run that embeds nothing and finds the export in place loads no model.

**Embedding at index time runs the ONNX image encoder that queries use** (`encoders.py`): given the index
directory (`db_root`), the first call that needs the image tower (`encode_images`, `image_size`) opens
`<db_root>/encoders/<checkpoint_sha256[:16]>/image.onnx`, exporting it first if it is missing (the only time
torch is loaded: `ensure_encoders`, atomic, checked against the torch model at cosine ≥ 0.9999), with
onnxruntime sessions set for throughput on this machine's cores (`OnnxEncoder(threads=...)`). Vectors
equal the torch model's within cosine 0.9999 (`tests/ingest/test_run_model.py`). The torch model embeds
instead when the export is impossible (onnx/onnxruntime missing, a checkpoint that cannot be exported, a
model that is not a SarClip), without a `db_root`, or when `SARSEARCH_EMBEDDER=torch` says so
(`EMBEDDER_ENV`: `auto`, the default, `onnx` or `torch`). `embedder` says which one made the vectors;
the index info records it (`identity["embedder"]`: "onnx", "torch", or "onnx+torch" when the generations of
an index were embedded by both).

Stable API (the indexer's one-process path and the Ray actors, `ray_pipeline`, use only this):

    model = RunModel.for_worker(checkpoint_path, db_root, threads=1)   # or RunModel(source, path, db_root=...)
    vectors = model.encode_images(chips)   # chips: (N, H, W) float32 in [0, 1], H = W = model.image_size
                                           # → (N, D) float32, L2-normalized; D = model.embed_dim
    model.embedder                         # "onnx" or "torch", once something asked for the image tower

A RunModel pickles without its loaded model or sessions (a worker process rebuilds them from the
checkpoint path and index directory); the driver should call `prepare_embedder()` first, so that workers
find the export instead of each exporting it. `stage_seconds` (a `timing.StageTimer`, shared with the
indexer's when given) receives "model" (loading, exporting, opening sessions) and "embed".
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarclip_search._fs import file_sha256
from sarclip_search.errors import InputError, MissingDependencyError, ModelError
from sarclip_search.ingest.timing import StageTimer
from sarclip_search.model.encoders import has_valid_encoders, load_onnx_encoder
from sarclip_search.store.artifacts import check_writer

if TYPE_CHECKING:
    from sarclip_search.model.encoders import OnnxEncoder
    from sarclip_search.model.sarclip import SarClip

log = logging.getLogger(__name__)

EMBEDDER_ENV = "SARSEARCH_EMBEDDER"
EMBEDDERS = ("auto", "onnx", "torch")
# chips per onnxruntime call at index time: 64 measured best on 2 cores (EfficientNet-Lite0, 128 px: ~550
# chips/s at 16-128, 64 the fastest; benchmarks/README.md)
INDEX_BATCH = 64
_IDENTITY_KEYS = ("model_name", "checkpoint_sha256", "embed_dim")


def embedder_choice() -> str:
    """`SARSEARCH_EMBEDDER` (auto, onnx or torch); InputError naming the variable for another value."""
    choice = os.environ.get(EMBEDDER_ENV, "auto").strip().lower() or "auto"
    if choice not in EMBEDDERS:
        raise InputError(f"{EMBEDDER_ENV}={choice!r}: expected one of {', '.join(EMBEDDERS)}; unset it for auto")
    return choice


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _load_checkpoint(model_path: str | None) -> SarClip:
    from sarclip_search.model.sarclip import load_model

    return load_model(model_path)


class RunModel:
    """The model of one run: a SarClip, or a loader called only when torch is needed (see the module docstring).

    Until it is loaded, its identity comes from the checkpoint file's hash (`model_path`) and, when that
    matches the index, from the index's info, or from the ONNX export's manifest: a run that embeds nothing
    loads no model, and one that embeds with an existing export loads no torch.
    """

    def __init__(
        self,
        source: SarClip | Callable[[], SarClip],
        model_path: str | None,
        *,
        db_root: str | Path | None = None,
        timer: StageTimer | None = None,
        threads: int | None = None,
    ) -> None:
        self._loader = source if callable(source) else None
        self._model: SarClip | None = None if callable(source) else source
        self._model_path = model_path
        self._sha256: str | None = None
        self.db_root = Path(db_root) if db_root is not None else None
        self.stage_seconds = timer if timer is not None else StageTimer()
        self.threads = threads  # onnxruntime intra-op threads (None: this machine's cores)
        self.recorded: dict[str, Any] = {}  # the index's model identity, once checked to be this checkpoint
        self._onnx: OnnxEncoder | None = None
        self._embedder: str | None = None  # "onnx" or "torch", decided by the first use of the image tower
        self._lock = threading.RLock()  # read-ahead threads ask for image_size while the main thread embeds

    @classmethod
    def for_worker(cls, model_path: str | None, db_root: str | Path | None, *, threads: int | None = None) -> RunModel:
        """A RunModel of a checkpoint file (None: the shipped one) for a worker process: embeds with the
        index directory's ONNX export when there is one (no torch), else loads the checkpoint."""
        return cls(partial(_load_checkpoint, model_path), model_path, db_root=db_root, threads=threads)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the model, the sessions and the loader (a worker rebuilds them from the paths)."""
        state = self.__dict__.copy()
        if self._model is not None:
            state["_sha256"] = self._model.checkpoint_sha256
        state.update(_model=None, _onnx=None, _embedder=None, _loader=partial(_load_checkpoint, self._model_path),
                     stage_seconds=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stage_seconds = StageTimer()
        self._lock = threading.RLock()

    def get(self) -> SarClip:
        """The torch model, loaded on first use."""
        with self._lock:
            if self._model is None:
                assert self._loader is not None
                with self.stage_seconds.stage("model"):
                    self._model = self._loader()
                log.info("loaded model %s (%s)", self._model.name, self._model.checkpoint_sha256[:12])
            return self._model

    @property
    def checkpoint_sha256(self) -> str:
        if self._model is not None:
            return self._model.checkpoint_sha256
        if self._sha256 is None:
            path = Path(self._model_path) if self._model_path else None
            # a missing file is reported by the loader (one line naming the fix)
            self._sha256 = file_sha256(path) if path and path.is_file() else self.get().checkpoint_sha256
        return self._sha256

    @property
    def identity(self) -> dict[str, Any]:
        """model_name, checkpoint_sha256, embed_dim (see SarClip.identity), and `embedder` once known: what the
        index records."""
        if self.recorded and self._model is None:
            identity = {key: self.recorded[key] for key in _IDENTITY_KEYS}
        elif self._model is None and self.db_root is not None and self.prepare_embedder() == "onnx" and self._onnx:
            identity = {key: self._onnx.manifest[key] for key in _IDENTITY_KEYS}
        else:
            identity = dict(self.get().identity)
        made_by = {part for part in str(self.recorded.get("embedder") or "").split("+") if part}
        if self._embedder is not None:
            made_by.add(self._embedder)
        if made_by:
            identity["embedder"] = "+".join(sorted(made_by))
        return identity

    @property
    def name(self) -> str:
        if self._model is None and not self.recorded and self._model_path:  # naming it needs no loading
            return Path(self._model_path).name
        return str(self.identity["model_name"])

    @property
    def embed_dim(self) -> int:
        return int(self.identity["embed_dim"])

    @property
    def embedder(self) -> str:
        """"onnx" or "torch": what `encode_images` runs (decided, and the export made, on first use)."""
        return self.prepare_embedder()

    @property
    def image_size(self) -> int:
        if self.prepare_embedder() == "onnx":
            assert self._onnx is not None
            return self._onnx.image_size
        return self.get().image_size

    def prepare_embedder(self) -> str:
        """Decide between the ONNX export and torch, exporting the ONNX encoders into `db_root` if they are
        missing; returns "onnx" or "torch". Called by the first use of the image tower (a driver calls it
        before starting workers)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._open_onnx()
                log.info("embedding with %s", "the ONNX image encoder" if self._embedder == "onnx" else "the torch model")
            return self._embedder

    def _open_onnx(self) -> str:
        choice = embedder_choice()
        if choice == "torch" or self.db_root is None:
            return "torch"
        with self.stage_seconds.stage("model"):
            if not has_valid_encoders(self.db_root, self.checkpoint_sha256) and not self._export():
                return "torch"
            encoder = load_onnx_encoder(self.db_root, self.checkpoint_sha256)
            if encoder is None:  # onnxruntime or tokenizers not installed
                if choice == "onnx":
                    raise MissingDependencyError(f"{EMBEDDER_ENV}=onnx needs onnxruntime; run `pip install onnxruntime`")
                return "torch"
            encoder.threads = self.threads or _cores()
            encoder.open_image_session()
        self._onnx = encoder
        return "onnx"

    def _export(self) -> bool:
        """Export the towers into db_root (ensure_encoders); False when that is impossible (torch embeds)."""
        return ensure_encoders(self.db_root, self)  # type: ignore[arg-type]

    def encode_images(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W) float32 chips in [0, 1] (H = W = `image_size`) → (N, D) float32, L2-normalized."""
        embedder = self.prepare_embedder()
        with self.stage_seconds.stage("embed"):
            if embedder == "onnx":
                assert self._onnx is not None
                return self._onnx.encode_images(chips, batch_size=INDEX_BATCH)
            return self.get().encode_images(chips)


    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → (N, D) float32, L2-normalized, by the text tower of the embedder in use (tuning's text proxies)."""
        if self.prepare_embedder() == "onnx":
            assert self._onnx is not None
            return self._onnx.encode_texts(texts)
        return self.get().encode_texts(texts)


def check_compatible(info: dict, sarclip: RunModel, archive_root: str, tile_size: int, stride: int) -> None:
    """Refuse an existing index (its info.json) this run cannot extend (`artifacts.check_writer`); when it was
    built by the same checkpoint file, take the model's identity from it, so that nothing loads the model."""
    model = info.get("model", {})
    if model.get("checkpoint_sha256") == sarclip.checkpoint_sha256:
        # the same checkpoint file: the index's identity is this model's, no need to load it
        sarclip.recorded = {k: model.get(k) for k in (*_IDENTITY_KEYS, "embedder")}
    check_writer(info, sarclip, archive_root, tile_size, stride)


def ensure_encoders(db_root: Path, model: RunModel) -> bool:
    """Export the model's towers to ONNX for torch-free queries (and embedding), unless a complete export is
    there; True when one is there afterwards.

    Not fatal: without an export, queries load the torch model (same results, ~6 s slower to start) and
    `index` embeds with torch.
    """
    if has_valid_encoders(db_root, model.checkpoint_sha256):
        return True
    from sarclip_search.model.sarclip import SarClip

    if not isinstance(model.get(), SarClip):  # a stand-in model (tests): nothing to export
        return False
    try:
        from sarclip_search.model.encoder_export import export_encoders

        with model.stage_seconds.stage("model"):
            export_encoders(model.get(), db_root)
    except (MissingDependencyError, ModelError) as exc:
        log.warning("no ONNX query encoders written (%s); queries will load the torch model", exc)
        return False
    return True
