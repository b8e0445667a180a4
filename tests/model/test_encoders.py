"""Torch-free query encoders: the ONNX export agrees with the torch model, is refused when it does not
belong to the index, falls back to torch when missing, and keeps torch out of `sarsearch query`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.errors import ArtifactMismatchError
from sarclip_search.ingest import raster
from sarclip_search.ingest.indexer import index_archive
from sarclip_search.ingest.walk import iter_rasters
from sarclip_search.model.encoders import ENCODERS_DIR, MANIFEST_FILE, TEXT_FILE, OnnxEncoder, encoder_dir
from sarclip_search.model.vectors import l2_normalize
from sarclip_search.query.engine import Engine
from sarclip_search.store.layout import IndexStore

pytest.importorskip("onnxruntime")

TEXTS = [
    "T72 tank",
    "",
    (
        "a cargo ship at sea, seen by Sentinel-1 in VV polarization near a busy harbor with cranes and many "
        "containers stacked on the quay, on a windy day with rough water"
    ),  # > 32 tokens: truncated
    "Überschwemmung im Flußtal – crème brûlée, 船 near the 港口 🚢",
    "  ships &amp; tankers\tin   the\nharbour  ",
]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def engines(indexed_db, sarclip):
    """(onnx engine, torch engine) over the same index."""
    db, _, _ = indexed_db
    with Engine.open(db) as onnx_engine, Engine.open(db) as torch_engine:
        torch_engine._encoder = sarclip  # the same checkpoint, already loaded: the fallback path
        assert isinstance(onnx_engine.encoder, OnnxEncoder)
        yield onnx_engine, torch_engine


def copy_db(indexed_db, tmp_path: Path) -> Path:
    db, _, _ = indexed_db
    shutil.copytree(db, tmp_path / "db")
    return tmp_path / "db"


def the_encoder_dir(db: Path) -> Path:
    (path,) = (db / ENCODERS_DIR).iterdir()
    return path


def test_l2_normalize_unit_rows_and_zero_rows():
    vectors = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 0.0]])


def test_token_ids_are_open_clips_without_the_padding(engines, sarclip):
    onnx_encoder = engines[0].encoder
    for text in TEXTS:
        ours = onnx_encoder._tokenize([text])[0]
        theirs = sarclip.tokenizer([text])[0].numpy()
        assert list(theirs[: len(ours)]) == list(ours), text
        assert not theirs[len(ours):].any(), text  # the rest is [PAD] (id 0)


def test_text_embeddings_agree_with_torch(engines, sarclip):
    onnx_vectors = engines[0].encoder.encode_texts(TEXTS)  # one batch: padded to its longest text
    alone = np.stack([engines[0].encoder.encode_texts([t])[0] for t in TEXTS])
    torch_vectors = sarclip.encode_texts(TEXTS)
    assert (onnx_vectors * torch_vectors).sum(axis=1).min() >= MIN_COSINE
    assert (alone * torch_vectors).sum(axis=1).min() >= MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)


def test_image_embeddings_agree_with_torch(engines, sarclip, indexed_db):
    _, archive, _ = indexed_db
    size = sarclip.image_size
    chips = [raster.read_chip(path, size=size) for path in sorted(iter_rasters(archive))]
    chips.append(np.random.default_rng(0).random((size, size), dtype=np.float32))
    chips = np.stack(chips)
    cosines = (engines[0].encoder.encode_images(chips) * sarclip.encode_images(chips)).sum(axis=1)
    assert cosines.min() >= MIN_COSINE


def test_rankings_are_identical_on_both_paths(engines, indexed_db):
    onnx_engine, torch_engine = engines
    _, archive, _ = indexed_db
    image = min(iter_rasters(archive))
    for query in [{"text": t} for t in TEXTS if t] + [{"images": [image]}, {"text": "ship", "images": [image]}]:
        onnx_hits = onnx_engine.query(k=10, **query)
        torch_hits = torch_engine.query(k=10, **query)
        assert [h.id for h in onnx_hits] == [h.id for h in torch_hits], query
        np.testing.assert_allclose([h.score for h in onnx_hits], [h.score for h in torch_hits], atol=1e-4)


def test_query_path_does_not_import_torch(indexed_db):
    db, archive, _ = indexed_db
    image = min(iter_rasters(archive))
    code = (
        "import sys\n"
        "from sarclip_search.cli.app import app\n"
        f"for args in (['query', 'T72 tank', '--db', {str(db)!r}, '--json'], ['query', '--image', {str(image)!r}, "
        f"'--db', {str(db)!r}, '--json']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as done:\n"
        "        assert not done.code, done.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'open_clip', 'transformers'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.split("\n]\n")[0] + "\n]")  # the text query printed hits


def test_engine_falls_back_to_torch_without_an_export(indexed_db, tmp_path, sarclip, caplog):
    db = copy_db(indexed_db, tmp_path)
    shutil.rmtree(db / ENCODERS_DIR)
    with Engine.open(db) as engine, caplog.at_level("INFO", logger="sarclip_search.model.encoders"):
        hits = engine.query("T72 tank", k=3)
        assert type(engine.encoder).__name__ == "SarClip" and len(hits) == 3
    assert "queries use the torch model" in caplog.text


@pytest.mark.parametrize("damage", ["other checkpoint", "truncated graph", "garbage graph", "no manifest"])
def test_a_mismatched_or_damaged_export_is_refused(indexed_db, tmp_path, damage):
    db = copy_db(indexed_db, tmp_path)
    path = the_encoder_dir(db)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    if damage == "other checkpoint":
        manifest["checkpoint_sha256"] = "0" * 64
        (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    elif damage == "truncated graph":
        (path / TEXT_FILE).write_bytes((path / TEXT_FILE).read_bytes()[:1000])
    elif damage == "garbage graph":  # same size, so only onnxruntime can tell
        (path / TEXT_FILE).write_bytes(b"\x07" * manifest["files"][TEXT_FILE])
    else:
        (path / MANIFEST_FILE).unlink()
    with Engine.open(db) as engine, pytest.raises(ArtifactMismatchError) as refused:
        engine.query("T72 tank", k=3)
    message = str(refused.value)
    assert "\n" not in message and "sarsearch index" in message and str(path) in message


def test_index_rewrites_a_damaged_export_and_skips_the_model_when_nothing_changed(indexed_db, tmp_path, sarclip):
    db = copy_db(indexed_db, tmp_path)
    _, archive, checkpoint = indexed_db
    loads = []

    def loader():
        loads.append(1)
        return sarclip

    report = index_archive(archive, IndexStore(db), loader, model_path=str(checkpoint))
    assert report.unchanged == 10 and report.indexed == 0 and not loads  # nothing to embed: no model
    path = encoder_dir(db, sarclip.checkpoint_sha256)
    (path / TEXT_FILE).write_bytes(b"")
    index_archive(archive, IndexStore(db), loader, model_path=str(checkpoint))
    assert loads == [1]  # loaded once, to re-export
    with Engine.open(db) as engine:
        assert isinstance(engine.encoder, OnnxEncoder) and len(engine.query("T72 tank", k=3)) == 3
    assert [p.name for p in (db / ENCODERS_DIR).iterdir()] == [path.name]  # no temporaries left
