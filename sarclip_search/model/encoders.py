"""Torch-free query encoders: a SARCLIP checkpoint's two towers exported to ONNX, run with onnxruntime.

Importing torch, torchvision and open_clip and building the model costs ~6 s per process on a small
CPU, more than the rest of a `sarsearch query`. `sarsearch index` therefore exports the model it
embedded with (`sarclip_search.model.encoder_export`) into the index directory, and `Engine` serves queries
from it with onnxruntime and the Rust `tokenizers` library:

    <db>/encoders/<checkpoint_sha256[:16]>/
      text.onnx        token ids (N, L ≤ context length) → text embedding (N, D), not normalized
      image.onnx       standardized chips (N, 3, S, S) → image embedding (N, D), not normalized
      tokenizer.json   the text tower's fast tokenizer, as transformers loads it
      encoder.json     what made it: checkpoint sha256, model, dims, opset, versions, file sizes

Both paths share what is not the network: `standardize_chips` (chip → model input), `clean_text`
(open_clip's text cleaning) and `vectors.l2_normalize`. Text is padded to the longest text of a batch
rather than to the context length: padding is masked out of attention and mean pooling, so the
embedding is the same (tests check cosine ≥ 0.9999 against the torch model) and short queries run
several times faster.

`index` embeds its tiles with the same `image.onnx` (`ingest/run_model.py`), with as many intra-op threads as
the machine has cores (`OnnxEncoder.threads`); queries use `ONNX_THREADS`.

`load_onnx_encoder` returns None when there is nothing to load (no export, or onnxruntime not
installed): the caller falls back to the torch model. An export that is there but made from another
checkpoint, or damaged, is refused with ArtifactMismatchError.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sarclip_search.errors import ArtifactMismatchError
from sarclip_search.model.vectors import l2_normalize

log = logging.getLogger(__name__)

# Single-channel SAR (values in [0, 1]) is replicated to 3 channels and standardized like ImageNet input,
# which is what the pretrained image tower expects.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

ENCODERS_DIR = "encoders"
ENCODER_FORMAT = "sarclip-onnx-encoder"
ENCODER_FORMAT_VERSION = 1
MANIFEST_FILE = "encoder.json"
TEXT_FILE = "text.onnx"
IMAGE_FILE = "image.onnx"
TOKENIZER_FILE = "tokenizer.json"
ENCODER_FILES = (TEXT_FILE, IMAGE_FILE, TOKENIZER_FILE)
# open_clip's HFTokenizer cleaning mode our configs use (ftfy, HTML unescape, whitespace collapse).
TEXT_CLEAN = "whitespace"
# onnxruntime threads per session: the 2 cores of the target machine. No spinning: idle threads
# that busy-wait take the cores from the other processes of a shared machine (and from faiss).
ONNX_THREADS = 2
IMAGE_BATCH = 64
TEXT_BATCH = 256


class Encoder(Protocol):
    """What the query path needs of a model: `SarClip` (torch) and `OnnxEncoder` both provide it."""

    checkpoint_sha256: str

    @property
    def image_size(self) -> int: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, chips: np.ndarray) -> np.ndarray: ...


def standardize_chips(chips: np.ndarray) -> np.ndarray:
    """(N, H, W) or (H, W) float32 chips in [0, 1] → (N, 3, H, W) float32 standardized model input."""
    values = np.asarray(chips, dtype=np.float32)
    if values.ndim == 2:
        values = values[None]
    mean = np.asarray(IMAGE_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGE_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((values[:, None] - mean) / std, dtype=np.float32)


def clean_text(text: str) -> str:
    """open_clip's "whitespace" cleaning, as its HFTokenizer applies it before tokenizing.

    ftfy fixes mojibake, HTML entities are unescaped twice, runs of whitespace become one space.
    """
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip()


def encoder_dir(db_root: str | Path, checkpoint_sha256: str) -> Path:
    """Where the ONNX export of a checkpoint lives inside an index directory."""
    return Path(db_root) / ENCODERS_DIR / checkpoint_sha256[:16]


def read_manifest(path: Path, checkpoint_sha256: str) -> dict[str, Any]:
    """encoder.json of the export in `path`, checked against the checkpoint and the files beside it.

    Raises ArtifactMismatchError (one line naming the fix) when it belongs to another checkpoint or
    format version, or a file is missing or of another size than when it was written.
    """
    fix = f"re-export it with `sarsearch index ARCHIVE --db {path.parent.parent}` (or delete {path} to use torch)"
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactMismatchError(f"{path / MANIFEST_FILE}: unreadable ({type(exc).__name__}); {fix}") from exc
    if manifest.get("format") != ENCODER_FORMAT or manifest.get("format_version") != ENCODER_FORMAT_VERSION:
        raise ArtifactMismatchError(
            f"{path}: encoder format {manifest.get('format')} v{manifest.get('format_version')}, this version reads "
            f"{ENCODER_FORMAT} v{ENCODER_FORMAT_VERSION}; {fix}"
        )
    if manifest.get("checkpoint_sha256") != checkpoint_sha256:
        raise ArtifactMismatchError(
            f"{path}: exported from checkpoint {str(manifest.get('checkpoint_sha256'))[:12]}, but the index was "
            f"built with {checkpoint_sha256[:12]}; {fix}"
        )
    for name in ENCODER_FILES:
        file = path / name
        expected = manifest.get("files", {}).get(name)
        size = file.stat().st_size if file.is_file() else None
        if size is None or size != expected:
            found = "missing" if size is None else f"{size} bytes, expected {expected}"
            raise ArtifactMismatchError(f"{file}: {found}; {fix}")
    return manifest


def has_valid_encoders(db_root: str | Path, checkpoint_sha256: str) -> bool:
    """True when the index directory holds a complete export of this checkpoint (no onnxruntime needed)."""
    path = encoder_dir(db_root, checkpoint_sha256)
    if not path.is_dir():
        return False
    try:
        read_manifest(path, checkpoint_sha256)
    except ArtifactMismatchError as exc:
        log.info("replacing the ONNX encoders: %s", exc)
        return False
    return True


class OnnxEncoder:
    """Text and image towers of one checkpoint, run with onnxruntime (sessions created on first use)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.checkpoint_sha256: str = manifest["checkpoint_sha256"]
        self.name: str = manifest["model_name"]
        self.embed_dim = int(manifest["embed_dim"])
        self.context_length = int(manifest["context_length"])
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self.threads = ONNX_THREADS  # intra-op threads of sessions created from now on (index: the machine's cores)

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    def _session(self, file: str) -> Any:
        with self._lock:
            if file not in self._sessions:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                # every graph optimization (the default, stated): with only the basic ones the image tower runs
                # ~2.8x slower on 2 cores (its convolutions stay in NCHW instead of onnxruntime's blocked layout)
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.log_severity_level = 3  # errors only: library code never prints
                try:
                    self._sessions[file] = onnxruntime.InferenceSession(
                        str(self.path / file), options, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
                    raise ArtifactMismatchError(
                        f"{self.path / file}: not a loadable ONNX graph ({type(exc).__name__}); re-export it with "
                        f"`sarsearch index ARCHIVE --db {self.path.parent.parent}` (or delete {self.path})"
                    ) from exc
            return self._sessions[file]

    def open_image_session(self) -> None:
        """Create the image tower's session now (ArtifactMismatchError for a graph that does not load)."""
        self._session(IMAGE_FILE)

    def _tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) int64 token ids: truncated to the context length, padded to the longest text."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.path / TOKENIZER_FILE))
            tokenizer.enable_truncation(max_length=self.context_length)
            tokenizer.enable_padding(pad_id=int(self.manifest["pad_token_id"]), pad_token=self.manifest["pad_token"])
            self._tokenizer = tokenizer
        encodings = self._tokenizer.encode_batch([clean_text(text) for text in texts])
        return np.asarray([encoding.ids for encoding in encodings], dtype=np.int64)

    def encode_texts(self, texts: Sequence[str], batch_size: int = TEXT_BATCH) -> np.ndarray:
        """Embed texts → (N, D) float32, L2-normalized."""
        session = self._session(TEXT_FILE)
        out = [
            session.run(None, {"input_ids": self._tokenize(list(texts[start : start + batch_size]))})[0]
            for start in range(0, len(texts), batch_size)
        ]
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.embed_dim), np.float32)

    def encode_images(self, chips: np.ndarray, batch_size: int = IMAGE_BATCH) -> np.ndarray:
        """Embed (N, S, S) chips in [0, 1] (already model size) → (N, D) float32, L2-normalized."""
        session = self._session(IMAGE_FILE)
        out = [
            session.run(None, {"pixels": standardize_chips(chips[start : start + batch_size])})[0]
            for start in range(0, len(chips), batch_size)
        ]
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.embed_dim), np.float32)


def load_onnx_encoder(db_root: str | Path, checkpoint_sha256: str) -> OnnxEncoder | None:
    """The ONNX export of `checkpoint_sha256` in an index directory, or None when there is none to use.

    None (logged at info level) when the index has no export for that checkpoint (built before exports
    existed, or the export failed) or onnxruntime is not installed: the caller uses the torch model.
    ArtifactMismatchError when an export is there but does not match (see `read_manifest`).
    """
    path = encoder_dir(db_root, checkpoint_sha256)
    if not path.is_dir():
        log.info("no ONNX encoders in %s; queries use the torch model (re-index to export them)", path.parent)
        return None
    manifest = read_manifest(path, checkpoint_sha256)
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        log.info("onnxruntime or tokenizers is not installed; queries use the torch model (pip install onnxruntime)")
        return None
    return OnnxEncoder(path, manifest)
