"""Can this version, and this model, use what an index directory holds? Every such check of the core.

- `check_info_format`: info.json's format and version (`Generation.read_info`);
- `check_catalog_schema`: the schema version a catalog file records (`Catalog`, when it opens one);
- `check_recorded_schema`: the catalog schema version info.json records (`Engine.open`, `info --check`);
- `check_query_checkpoint`: the checkpoint a query would embed with is the one the vectors came from;
- `check_recorded_checkpoint`: the checkpoint file info.json names still has the recorded hash (`info --check`);
- `check_writer`: an `index` run's model, archive and tiling are the index's (else `--rebuild`).

Each raises ArtifactMismatchError (InputError for an `index` run's own options) naming what differs and
the fix. Checked elsewhere, on purpose: the model's own files (a checkpoint's format and text weights in
model/sarclip.py; an ONNX export's manifest in model/encoders.py), by the model package, which imports
nothing of store; the FAISS files (format, metric, dimension in index/storage.py), by
sarclip_search.index, which imports nothing of the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarclip_search._fs import file_sha256
from sarclip_search.errors import REBUILD, ArtifactMismatchError, InputError
from sarclip_search.store.schema import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

INFO_FORMAT = "sarsearch-index"
INFO_FORMAT_VERSION = 1


def check_info_format(info: dict[str, Any], path: Path) -> None:
    """info.json (at `path`) of the index format this version reads."""
    if info.get("format") != INFO_FORMAT or info.get("format_version") != INFO_FORMAT_VERSION:
        raise ArtifactMismatchError(
            f"{path}: index format {info.get('format')} v{info.get('format_version')}, this version "
            f"reads {INFO_FORMAT} v{INFO_FORMAT_VERSION}; {REBUILD}"
        )


def check_catalog_schema(found: str | None, where: object) -> int:
    """The schema version a catalog's meta table records (`found`), if this version reads it."""
    if found not in {str(version) for version in READABLE_SCHEMA_VERSIONS}:
        raise ArtifactMismatchError(
            f"catalog {where} has schema version {found}, this sarclip-search expects {SCHEMA_VERSION}; {REBUILD}"
        )
    return int(found)


def check_recorded_schema(info: dict[str, Any], where: object) -> None:
    """The catalog schema version info.json (of the generation `where`) records, if this version reads it."""
    if info.get("catalog_schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise ArtifactMismatchError(
            f"{where}: catalog schema v{info.get('catalog_schema_version')}, this version reads "
            f"v{SCHEMA_VERSION}; {REBUILD}"
        )


def check_query_checkpoint(info: dict[str, Any], sha256: str, db: object, checkpoint: object) -> None:
    """The checkpoint `checkpoint` (hash `sha256`; None: the default model) that would embed queries is
    the one the index at `db` was built with."""
    recorded = info.get("model", {}).get("checkpoint_sha256")
    if sha256 != recorded:
        raise ArtifactMismatchError(
            f"the index at {db} was built with checkpoint {str(recorded)[:12]}, but "
            f"{checkpoint or 'the default model'} is {sha256[:12]}; "
            "pass the right --model or re-index with --rebuild"
        )


def check_recorded_checkpoint(info: dict[str, Any]) -> bool:
    """The checkpoint file info.json names still has the hash info.json records.

    Returns False (nothing checked) when no file is named or it is gone, True when it matched.
    """
    model = info.get("model", {})
    checkpoint = model.get("checkpoint_path")
    if not checkpoint or not Path(checkpoint).is_file():
        return False
    digest = file_sha256(checkpoint)
    if digest != model.get("checkpoint_sha256"):
        raise ArtifactMismatchError(
            f"the checkpoint {checkpoint} changed since indexing (sha256 {digest[:12]}, index built with "
            f"{str(model.get('checkpoint_sha256'))[:12]}); restore it, or re-embed with --rebuild"
        )
    return True


def check_writer(info: dict[str, Any], model: Any, archive_root: str, tile_size: int, stride: int) -> None:
    """An `index` run may add to the index `info` describes: same model, archive folder and tiling.

    `model` is what the run embeds with (a SarClip, or the indexer's lazy stand-in): its
    `checkpoint_sha256`, then `embed_dim` (only when the hashes agree) and `name` (only in the message).
    """
    recorded = info.get("model", {})
    if recorded.get("checkpoint_sha256") != model.checkpoint_sha256 or recorded.get("embed_dim") != model.embed_dim:
        raise ArtifactMismatchError(
            f"the index was built with model {recorded.get('model_name')} ({str(recorded.get('checkpoint_sha256'))[:12]}), "
            f"not with {model.name} ({model.checkpoint_sha256[:12]}); re-run with --rebuild to re-embed everything"
        )
    if info.get("archive_root") != archive_root:
        raise InputError(
            f"this index holds the archive {info.get('archive_root')}, not {archive_root}; "
            "use another --db for a second archive, or --rebuild to replace it"
        )
    if info.get("tiling") != {"size": tile_size, "stride": stride}:
        raise InputError(
            f"this index was tiled with {info.get('tiling')}, not size={tile_size} stride={stride}; "
            "use the same options, or --rebuild"
        )
