"""eval --tiles: text queries scored by what each tile holds (training/tile_eval.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sarclip_search.errors import InputError
from sarclip_search.ingest.objects import tile_object_columns
from sarclip_search.store.catalog import Catalog
from sarclip_search.training.tile_eval import TileQuery, held, labels, ships, tile_retrieval_report

from helpers import link_encoders, run

S1_TIF = "S1A_IW_GRDH_1SDV_20210310T054510_20210310T054535_036943_043758_2091_tiny.tif"  # 160 x 96 px, 6 tiles of 64


def test_what_a_tile_holds() -> None:
    assert held({"tile_objects": "ship:0,0,4,4;ship:5,5,9,9", "tile_n_objects": 2, "label": "ship"}) == ["ship", "ship"]
    assert held({"tile_objects": None, "tile_n_objects": 0, "label": "ship"}) == []  # empty tile of a ship scene
    assert held({"tile_objects": None, "tile_n_objects": 1, "tile_label": "cargo", "label": "cargo"}) == ["cargo"]
    assert held({"label": "T72"}) == ["T72"]  # an index without the tile columns: the label
    assert ships({"tile_label": "tanker", "tile_n_objects": 1}) == 1 and ships({"label": "T72"}) == 0
    cargo_chip = {"tile_objects": "ship:16,19,32,29", "tile_n_objects": 1, "tile_label": "cargo", "label": "cargo"}
    assert labels(cargo_chip) == {"ship", "cargo"} and ships(cargo_chip) == 1  # one ship, answering to both
    assert labels({"tile_objects": None, "tile_n_objects": 0, "tile_label": "no_object", "label": "ship"}) == set()


class _Vectors:
    def __init__(self, by_id: dict[int, np.ndarray]) -> None:
        self.by_id = by_id

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return np.stack([self.by_id[int(i)] for i in ids]).astype(np.float32)


def _engine(tmp_path: Path, text_vector: np.ndarray, tile_vector) -> SimpleNamespace:
    """A catalog of one 4-tile ship scene (one tile with 2 ships, one with 1, two empty) and 8 chips."""
    tmp_path.mkdir(exist_ok=True)
    catalog = Catalog(tmp_path / "c.duckdb")
    scene = {"path": "s.jpg", "width": 512, "height": 512, "label": "ship", "dataset": "HRSID", "split": "test",
             "scene_type": "offshore", "boxes_xyxy": "ship:10,10,20,20;ship:30,30,40,40;ship:300,10,310,20"}
    windows = [[0, 0, 256, 256], [256, 0, 256, 256], [0, 256, 256, 256], [256, 256, 256, 256]]
    scene_id = catalog.add_scene(scene)
    ids = list(catalog.add_tiles(scene_id, [{**dict(zip(("col_off", "row_off", "width", "height"), w)), "bbox": None,
                                             **o} for w, o in zip(windows, tile_object_columns(scene, windows))]))
    for i in range(8):
        chip = catalog.add_scene({"path": f"c{i}.png", "width": 64, "height": 64, "label": "T72",
                                  "dataset": "MSTAR-SOC", "split": "test", "n_objects": 1})
        ids += list(catalog.add_tiles(chip, [{"col_off": 0, "row_off": 0, "width": 64, "height": 64, "bbox": None}]))
    rows = {int(r["tile_id"]): r for r in catalog.fetch_tiles([int(i) for i in ids])}
    vectors = _Vectors({i: tile_vector(rows[i]) for i in rows})
    model = SimpleNamespace(encode_texts=lambda texts: np.stack([text_vector] * len(texts)))
    return SimpleNamespace(catalog=catalog, vectors=vectors, model=model, info={},
                           generation=SimpleNamespace(path=tmp_path / "gen"))


def test_precision_and_chance_follow_the_tiles_contents(tmp_path: Path) -> None:
    x, y = np.eye(2, dtype=np.float32)
    # the text is x; tiles holding ships point to x, the rest to y: the ship tiles rank first
    engine = _engine(tmp_path, x, lambda row: x if ships(row) else y)
    queries = (TileQuery("class", "ship", lambda t: ships(t) >= 1),
               TileQuery("counting", "two ships", lambda t: ships(t) == 2),
               TileQuery("context", "open sea without ships", lambda t: t.get("dataset") == "HRSID" and ships(t) == 0))
    report = tile_retrieval_report(engine, "test", queries)
    rows = {r["text"]: r for r in report["queries"]}
    assert report["n_tiles"] == 12
    assert rows["ship"]["n_relevant"] == 2 and rows["ship"]["chance"] == pytest.approx(2 / 12, abs=1e-4)
    assert rows["ship"]["P@10"] == pytest.approx(0.2)  # 2 relevant of 12: both in the top 10, P@10 = 2/10
    assert rows["two ships"]["n_relevant"] == 1
    assert rows["open sea without ships"]["n_relevant"] == 2
    # the ranking decides: the two ship tiles first, then the empty sea tiles tied with the 8 chips at 0,
    # ties counted pessimistically, so neither is in the top 10
    assert rows["open sea without ships"]["P@10"] == 0.0
    flipped = tile_retrieval_report(_engine(tmp_path / "b", y, lambda row: x if ships(row) else y), "test", queries)
    assert {r["text"]: r["P@10"] for r in flipped["queries"]}["ship"] == 0.0  # the text now points away from ships
    engine.catalog.close()


def test_a_prompt_ensemble_is_the_normalized_mean_of_its_templates() -> None:
    from sarclip_search.training.tile_eval import embed_queries

    basis = {"ship": np.array([1.0, 0.0]), "a SAR image of ship": np.array([0.0, 1.0])}
    model = SimpleNamespace(encode_texts=lambda texts: np.stack([basis[t] for t in texts]))
    assert np.allclose(embed_queries(model, ["ship"]), [[1.0, 0.0]])
    assert np.allclose(embed_queries(model, ["ship"], ("{}", "a SAR image of {}")), [[2 ** -0.5, 2 ** -0.5]])


def test_an_index_without_tile_columns_is_refused(tmp_path: Path) -> None:
    engine = SimpleNamespace(catalog=SimpleNamespace(columns=lambda: ["tile_id", "label", "split"]),
                             generation=SimpleNamespace(path=tmp_path / "db" / "gen-000001"))
    with pytest.raises(InputError, match="no per-tile objects .* re-run `sarsearch index`"):
        tile_retrieval_report(engine, "test")


def test_eval_tiles_cli_on_an_indexed_ship_scene(tmp_path, fixture_archive, indexed_db, checkpoint, sarclip) -> None:
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy2(fixture_archive / "sentinel1" / S1_TIF, archive / S1_TIF)
    (archive / "manifest.csv").write_text(
        f'path,label,split,dataset,scene_type,boxes_xyxy\n{S1_TIF},ship,test,HRSID,offshore,"ship:10,10,30,30"\n')
    db = tmp_path / "db"
    link_encoders(indexed_db[0], db)
    index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint), tile_size=64)
    result = run("eval", "--tiles", "--db", db, "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {r["text"]: r for r in report["queries"]}
    assert report["n_tiles"] == 6
    # 1 relevant among 6 tiles: P@10 counts over min(10, tiles), whatever the ranking
    assert rows["ship"]["n_relevant"] == 1 and rows["ship"]["P@10"] == pytest.approx(1 / 6, abs=1e-4)
    assert rows["open sea without ships"]["n_relevant"] == 5
    assert rows["T72 tank"]["P@10"] is None  # nothing relevant: not scored
    ensemble = json.loads(run("eval", "--tiles", "--prompt-ensemble", "--db", db, "--split", "test", "--json").output)
    assert ensemble["templates"] and report["templates"] is None
    assert [r["n_relevant"] for r in ensemble["queries"]] == [r["n_relevant"] for r in report["queries"]]
    table = run("eval", "--tiles", "--db", db, "--split", "test")
    assert table.exit_code == 0 and "open sea without ships" in table.output
    assert "paraphrase queries" in table.output and "word vs object" in table.output
    # the raw-text run as the baseline of the ensemble run: its numbers beside, files written
    before = tmp_path / "before.json"
    before.write_text(json.dumps(report))
    out = tmp_path / "out"
    compared = run("eval", "--tiles", "--prompt-ensemble", "--db", db, "--split", "test", "--baseline", before,
                   "--out", out)
    assert compared.exit_code == 0, compared.output
    written = json.loads((out / "tiles.json").read_text())
    assert written["baseline"]["path"] == str(before)
    assert [r["before_P@10"] for r in written["queries"]] == [r["P@10"] for r in report["queries"]]
    assert written["paraphrase"]["before_mean_P@10"] == report["paraphrase"]["mean_P@10"]
    assert "| P@10 before |" in (out / "tiles.md").read_text() or "P@10 before" in (out / "tiles.md").read_text()
    with Image.open(out / "p10_by_kind.png") as image:
        image.load()
        assert image.format == "PNG" and image.height > 300
    assert "before" in compared.output and f"wrote {out / 'p10_by_kind.png'}" in compared.output
    # a baseline of the other kind (an eval report without --tiles) is one line naming the file
    other = tmp_path / "eval.json"
    other.write_text(json.dumps({"n_images": 3, "split": "test"}))
    refused = run("eval", "--tiles", "--db", db, "--split", "test", "--baseline", other)
    assert refused.exit_code == 1 and "--baseline" in refused.output and "eval --tiles" in refused.output
    wrong = run("eval", "--tiles", "--db", db, "--split", "val")
    assert wrong.exit_code == 1 and "split 'val' has no tiles" in wrong.output
