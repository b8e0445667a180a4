"""The model of one `index` run (`RunModel`): a SarClip, or a loader called only when something must be
embedded or exported, whose identity until then is the checkpoint file's hash and, when the index was built
by that checkpoint, the index's record of it (`check_compatible`); and the ONNX export of its towers that
ends a run (`ensure_encoders`). A run that embeds nothing and finds the export in place loads no model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarclip_search._fs import file_sha256
from sarclip_search.errors import MissingDependencyError, ModelError
from sarclip_search.model.encoders import has_valid_encoders
from sarclip_search.store.artifacts import check_writer

if TYPE_CHECKING:
    from sarclip_search.model.sarclip import SarClip

log = logging.getLogger(__name__)


class RunModel:
    """The model of one run: a SarClip, or a loader called only when something must be embedded.

    Until it is loaded, its identity comes from the checkpoint file's hash (`model_path`) and, when that
    matches the index, from the index's info: a run that embeds nothing loads no model.
    """

    def __init__(self, source: SarClip | Callable[[], SarClip], model_path: str | None) -> None:
        self._loader = source if callable(source) else None
        self._model: SarClip | None = None if callable(source) else source
        self._model_path = model_path
        self._sha256: str | None = None
        self.recorded: dict[str, Any] = {}  # the index's model identity, once checked to be this checkpoint

    def get(self) -> SarClip:
        if self._model is None:
            assert self._loader is not None
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
        """model_name, checkpoint_sha256, embed_dim: what the index records (see SarClip.identity)."""
        return dict(self.recorded) if self._model is None and self.recorded else self.get().identity

    @property
    def name(self) -> str:
        if self._model is None and not self.recorded and self._model_path:  # naming it needs no loading
            return Path(self._model_path).name
        return str(self.identity["model_name"])

    @property
    def embed_dim(self) -> int:
        return int(self.identity["embed_dim"])

    @property
    def image_size(self) -> int:
        return self.get().image_size

    def encode_images(self, chips: np.ndarray) -> np.ndarray:
        return self.get().encode_images(chips)


def check_compatible(info: dict, sarclip: RunModel, archive_root: str, tile_size: int, stride: int) -> None:
    """Refuse an existing index (its info.json) this run cannot extend (`artifacts.check_writer`); when it was
    built by the same checkpoint file, take the model's identity from it, so that nothing loads the model."""
    model = info.get("model", {})
    if model.get("checkpoint_sha256") == sarclip.checkpoint_sha256:
        # the same checkpoint file: the index's identity is this model's, no need to load it
        sarclip.recorded = {k: model.get(k) for k in ("model_name", "checkpoint_sha256", "embed_dim")}
    check_writer(info, sarclip, archive_root, tile_size, stride)


def ensure_encoders(db_root: Path, model: RunModel) -> None:
    """Export the model's towers to ONNX for torch-free queries, unless a complete export is there.

    Not fatal: without an export, queries load the torch model (same results, ~6 s slower to start).
    """
    if has_valid_encoders(db_root, model.checkpoint_sha256):
        return
    try:
        from sarclip_search.model.encoder_export import export_encoders

        export_encoders(model.get(), db_root)
    except (MissingDependencyError, ModelError) as exc:
        log.warning("no ONNX query encoders written (%s); queries will load the torch model", exc)
