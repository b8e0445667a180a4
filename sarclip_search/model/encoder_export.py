"""Export a SARCLIP checkpoint's towers to ONNX for the torch-free query path (`encoders.py`).

Runs at index time, at the first embedding of a run whose index has no export (`run_model.RunModel`): the
only time `index` loads the torch model, since it then embeds with the exported image tower too. The export is
checked against the torch model on probe texts and chips (cosine ≥ `MIN_COSINE`) before it is written, and
written atomically (a temporary folder renamed into place, `_fs.publish_dir`), so a query never sees half an export.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarclip_search._fs import publish_dir
from sarclip_search.errors import MissingDependencyError, ModelError
from sarclip_search.model.encoders import (
    ENCODER_FILES,
    ENCODER_FORMAT,
    ENCODER_FORMAT_VERSION,
    ENCODERS_DIR,
    IMAGE_FILE,
    MANIFEST_FILE,
    TEXT_CLEAN,
    TEXT_FILE,
    TOKENIZER_FILE,
    OnnxEncoder,
    encoder_dir,
    has_valid_encoders,
    standardize_chips,
)
from sarclip_search.model.sarclip import SarClip

log = logging.getLogger(__name__)

# 17: the first opset with LayerNormalization (one node per MiniLM layer norm instead of ~8).
OPSET = 17
# An export whose embeddings differ more than this from the torch model's is not written.
MIN_COSINE = 0.9999
PROBE_TEXTS = ("T72 tank", "a cargo ship at sea near a harbor with cranes and containers " * 4, "Überschwemmung")
PROBE_SEED = 0
# checkpoint sha256 → the last folder this process exported it to. Exporting and verifying take seconds,
# so a second index directory of the same checkpoint (tests, benchmarks) gets hard links of those files.
_EXPORTED: dict[str, Path] = {}


class _Tower(torch.nn.Module):
    """One tower of the open_clip model (`encode_text` or `encode_image`) as the module to trace.

    The text tower takes token ids only: open_clip derives the attention mask from them (id != pad).
    """

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(inputs)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _hf_tokenizer(sarclip: SarClip) -> Any:
    """The transformers fast tokenizer inside open_clip's HFTokenizer; refuse modes we do not reproduce."""
    wrapper = sarclip.tokenizer
    tokenizer = getattr(wrapper, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    clean = getattr(getattr(wrapper, "clean_fn", None), "__name__", "")
    if backend is None or clean != f"_clean_{TEXT_CLEAN}" or wrapper.strip_sep_token or wrapper.tokenizer_mode:
        raise ModelError(f"{sarclip.name}: only open_clip HFTokenizer with a fast tokenizer and {TEXT_CLEAN!r} cleaning "
                         "can be exported; queries use the torch model")
    return tokenizer


def _export(sarclip: SarClip, folder: Path) -> dict[str, Any]:
    """Write text.onnx, image.onnx and tokenizer.json into `folder`; returns the manifest (not yet written)."""
    model = sarclip.model.eval()
    tokenizer = _hf_tokenizer(sarclip)
    size = sarclip.image_size
    ids = sarclip.tokenizer(["T72 tank", "a ship"])
    pixels = torch.from_numpy(standardize_chips(np.zeros((2, size, size), np.float32)))
    # the tracer warns about shape-dependent Python branches in transformers' mask code: they are fixed
    # by the dynamic axes below (a mask is always as long as its ids) and checked by `_verify`
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Tower(model, "encode_text"), (ids,), str(folder / TEXT_FILE), input_names=["input_ids"],
                          output_names=["embedding"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
        torch.onnx.export(_Tower(model, "encode_image"), (pixels,), str(folder / IMAGE_FILE), input_names=["pixels"],
                          output_names=["embedding"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
    (folder / TOKENIZER_FILE).write_text(tokenizer.backend_tokenizer.to_str())
    return {
        "format": ENCODER_FORMAT,
        "format_version": ENCODER_FORMAT_VERSION,
        "checkpoint_sha256": sarclip.checkpoint_sha256,
        "model_name": sarclip.name,
        "embed_dim": sarclip.embed_dim,
        "image_size": size,
        "context_length": int(sarclip.tokenizer.context_length),
        "pad_token_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "text_clean": TEXT_CLEAN,
        "opset": OPSET,
        "files": {name: (folder / name).stat().st_size for name in ENCODER_FILES},
        "versions": {name: _version(name) for name in
                     ("torch", "open_clip_torch", "transformers", "onnx", "onnxruntime", "tokenizers")},
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _verify(sarclip: SarClip, encoder: OnnxEncoder) -> dict[str, float]:
    """Smallest cosine between torch and ONNX embeddings of probe texts and seeded chips."""
    chips = np.random.default_rng(PROBE_SEED).random((3, sarclip.image_size, sarclip.image_size), dtype=np.float32)
    cosines = {
        "text": float((sarclip.encode_texts(PROBE_TEXTS) * encoder.encode_texts(PROBE_TEXTS)).sum(axis=1).min()),
        "image": float((sarclip.encode_images(chips) * encoder.encode_images(chips)).sum(axis=1).min()),
    }
    if min(cosines.values()) < MIN_COSINE:
        raise ModelError(f"ONNX export of {sarclip.name} disagrees with the torch model (cosine {cosines}); not written")
    return {f"{tower}_cosine_min": round(value, 7) for tower, value in cosines.items()}


def export_encoders(sarclip: SarClip, db_root: str | Path) -> Path:
    """Export `sarclip` into `<db_root>/encoders/<sha[:16]>/`, replacing what is there; returns the folder.

    MissingDependencyError when onnx or onnxruntime is not installed.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401  (the export is verified by running it)
    except ImportError as exc:
        raise MissingDependencyError(f"exporting ONNX encoders needs onnx and onnxruntime ({exc.name} missing); "
                                     "run `pip install onnx onnxruntime`") from exc
    target = encoder_dir(db_root, sarclip.checkpoint_sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the index directory is readable by its readers
        if not _link_previous_export(sarclip.checkpoint_sha256, staging):
            manifest = _export(sarclip, staging)
            manifest["verified"] = _verify(sarclip, OnnxEncoder(staging, manifest))
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        publish_dir(staging, target)  # replaces a damaged or stale export
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported ONNX encoders of %s to %s", sarclip.name, target)
    _EXPORTED[sarclip.checkpoint_sha256] = target
    remove_other_encoders(db_root, sarclip.checkpoint_sha256)
    return target


def _link_previous_export(checkpoint_sha256: str, staging: Path) -> bool:
    """Hard-link (or copy, across file systems) this process's last complete export of the checkpoint."""
    previous = _EXPORTED.get(checkpoint_sha256)
    if previous is None or not has_valid_encoders(previous.parent.parent, checkpoint_sha256):
        return False
    for name in (*ENCODER_FILES, MANIFEST_FILE):
        try:
            os.link(previous / name, staging / name)  # safe: exports are never modified in place
        except OSError:
            shutil.copy2(previous / name, staging / name)
    return True


def remove_other_encoders(db_root: str | Path, keep_sha256: str) -> None:
    """Delete exports of other checkpoints (after a --rebuild with another model) and leftover temporaries."""
    root = Path(db_root) / ENCODERS_DIR
    for path in root.glob("*") if root.is_dir() else ():
        if path.name != keep_sha256[:16]:
            shutil.rmtree(path, ignore_errors=True)
