"""store/artifacts: the compatibility checks of an index directory, each naming what differs and the fix."""

from __future__ import annotations

import pytest

from sarclip_search._fs import file_sha256
from sarclip_search.errors import REBUILD, ArtifactMismatchError, InputError
from sarclip_search.store.artifacts import (
    INFO_FORMAT,
    INFO_FORMAT_VERSION,
    check_catalog_schema,
    check_info_format,
    check_query_checkpoint,
    check_recorded_checkpoint,
    check_recorded_schema,
    check_writer,
)
from sarclip_search.store.schema import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

INFO = {
    "format": INFO_FORMAT,
    "format_version": INFO_FORMAT_VERSION,
    "model": {"model_name": "sarclip-x", "checkpoint_sha256": "a" * 64, "embed_dim": 256},
    "archive_root": "/archive",
    "tiling": {"size": 256, "stride": 256},
    "catalog_schema_version": SCHEMA_VERSION,
}


class Model:
    """What `index` embeds with, as check_writer reads it; embed_dim and name only when asked."""

    def __init__(self, sha256: str, embed_dim: int | None = 256) -> None:
        self.checkpoint_sha256 = sha256
        self._embed_dim = embed_dim
        self.loaded = False

    @property
    def embed_dim(self) -> int:
        self.loaded = True  # the indexer's stand-in loads the torch model here
        return self._embed_dim

    @property
    def name(self) -> str:
        return "other.pt"


def test_info_format_and_recorded_schema():
    check_info_format(INFO, "db/gen-000001/info.json")
    for version in READABLE_SCHEMA_VERSIONS:
        check_recorded_schema({**INFO, "catalog_schema_version": version}, "db/gen-000001")
    with pytest.raises(ArtifactMismatchError) as raised:
        check_info_format({**INFO, "format_version": INFO_FORMAT_VERSION + 1}, "db/gen-000001/info.json")
    assert str(raised.value).startswith("db/gen-000001/info.json: index format") and str(raised.value).endswith(REBUILD)
    with pytest.raises(ArtifactMismatchError, match=f"catalog schema v99, this version reads v{SCHEMA_VERSION}"):
        check_recorded_schema({**INFO, "catalog_schema_version": 99}, "db/gen-000001")


def test_catalog_schema_versions():
    assert [check_catalog_schema(str(v), "c.duckdb") for v in READABLE_SCHEMA_VERSIONS] == list(READABLE_SCHEMA_VERSIONS)
    for found in ("99", None):
        with pytest.raises(ArtifactMismatchError, match=f"schema version {found}, .* expects {SCHEMA_VERSION}; "):
            check_catalog_schema(found, "c.duckdb")


def test_a_query_needs_the_index_checkpoint():
    check_query_checkpoint(INFO, "a" * 64, "db", None)
    with pytest.raises(ArtifactMismatchError, match=r"built with checkpoint aaaaaaaaaaaa, but the default model is bbbbbbbbbbbb"):
        check_query_checkpoint(INFO, "b" * 64, "db", None)


def test_recorded_checkpoint_file(tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert check_recorded_checkpoint(INFO) is False  # no file named: nothing checked
    checkpoint.write_bytes(b"weights")
    info = {**INFO, "model": {**INFO["model"], "checkpoint_path": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}}
    assert check_recorded_checkpoint(info) is True
    checkpoint.write_bytes(b"other weights")
    with pytest.raises(ArtifactMismatchError, match="changed since indexing"):
        check_recorded_checkpoint(info)
    checkpoint.unlink()
    assert check_recorded_checkpoint(info) is False  # gone: not checked


def test_writer_of_another_model_is_refused_without_loading_it():
    model = Model("b" * 64)
    with pytest.raises(ArtifactMismatchError, match=r"built with model sarclip-x \(aaaaaaaaaaaa\), not with other.pt \(bbbbbbbbbbbb\); re-run with --rebuild"):
        check_writer(INFO, model, "/archive", 256, 256)
    assert not model.loaded


def test_writer_of_the_same_model_needs_the_same_archive_and_tiling():
    check_writer(INFO, Model("a" * 64), "/archive", 256, 256)
    with pytest.raises(ArtifactMismatchError):  # a recorded dimension other than the model's
        check_writer(INFO, Model("a" * 64, embed_dim=512), "/archive", 256, 256)
    with pytest.raises(InputError, match="holds the archive /archive, not /other; use another --db"):
        check_writer(INFO, Model("a" * 64), "/other", 256, 256)
    with pytest.raises(InputError, match="tiled with .* not size=128 stride=64; use the same options, or --rebuild"):
        check_writer(INFO, Model("a" * 64), "/archive", 128, 64)
