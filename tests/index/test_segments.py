"""Append-only saves (index/segments.py, index/storage.py): a save back where the index was loaded from writes
only the rows added since (plus the FAISS file and index_info.json), a removal rewrites only from the first
segment it touches, the chain stays short, and a loader refuses a segment of another save."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sarclip_search.index import VectorIndex
from sarclip_search.index import segments as segments_module
from sarclip_search.index.errors import VectorIndexError

from helpers import clustered

DIM = 32
FACTORY = "IVF16,PQ8x8"  # float32 copy, ids and subset codes: all three columns


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch) -> None:
    """4 KiB segment alignment (new chains record it), so chains of a few hundred KB have several segments."""
    monkeypatch.setattr(segments_module, "ALIGN", 4096)


def _segments(directory: Path) -> dict[str, list[dict]]:
    info = json.loads((directory / "index_info.json").read_text())
    return {column: listing["segments"] for column, listing in info["files"]["columns"].items()}


def _built(n: int, factory: str = FACTORY) -> tuple[VectorIndex, np.ndarray]:
    xb = clustered(n, DIM, seed=1)
    index = VectorIndex.create(DIM, factory)
    index.add(np.arange(n), xb)
    return index, xb


def test_a_save_after_adds_writes_only_the_new_rows(tmp_path: Path) -> None:
    index, xb = _built(3000)
    first = index.save(tmp_path)
    assert first["segments"] >= 3000 * DIM * 4  # the whole copy, once
    loaded = VectorIndex.load(tmp_path)
    more = clustered(200, DIM, seed=2)
    loaded.add(np.arange(3000, 3200), more)
    before = {column: [s["name"] for s in listing] for column, listing in _segments(tmp_path).items()}
    written = loaded.save(tmp_path)
    row_bytes = DIM * 4 + 8 + 8  # copy, id, subset code (PQ8x4: 4 bytes, but bounded by the overlap anyway)
    assert written["segments"] <= 200 * row_bytes + 3 * (segments_module.ALIGN + segments_module.TRAILER.size)
    after = _segments(tmp_path)
    # the copy's old segment is kept, a new one holds the rest (ids and codes: from their last 4 KiB block)
    assert [s["name"] for s in after["store"][:-1]] == before["store"] and len(after["store"]) == 2
    reloaded = VectorIndex.load(tmp_path, mmap=True)
    fresh = VectorIndex.create(DIM, FACTORY)
    fresh.add(np.arange(3200), np.vstack([xb, more]))
    np.testing.assert_array_equal(reloaded.vectors(np.arange(3200)), np.vstack([xb, more]))
    xq = clustered(20, DIM, seed=3)
    for subset in (None, np.arange(0, 3200, 7)):
        np.testing.assert_array_equal(reloaded.search(xq, 10, subset=subset)[1],
                                      loaded.search(xq, 10, subset=subset)[1])
    assert loaded.save(tmp_path) == {"faiss": 0, "segments": 0, "info": written["info"]}  # nothing changed


def test_a_removal_rewrites_from_the_first_segment_it_touches(tmp_path: Path) -> None:
    index, xb = _built(3000, "Flat")
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    loaded.add(np.arange(3000, 3100), clustered(100, DIM, seed=4))
    loaded.save(tmp_path)
    first = _segments(tmp_path)["store"][0]["name"]
    loaded.remove(np.array([3050]))  # in the newest segment: the first one is kept
    loaded.save(tmp_path)
    store = _segments(tmp_path)["store"]
    assert store[0]["name"] == first and len(store) == 2
    loaded.remove(np.array([5]))  # in the first: everything is written again
    loaded.save(tmp_path)
    assert [s["name"] for s in _segments(tmp_path)["store"]] != [first]
    reloaded = VectorIndex.load(tmp_path, mmap=True)
    assert reloaded.ntotal == 3098 and not reloaded.contains([5, 3050]).any()
    np.testing.assert_allclose(reloaded.vectors([4, 6, 2999]), xb[[4, 6, 2999]], atol=1e-3)  # float16 copy
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".seg") == sorted(
        s["name"] for listing in _segments(tmp_path).values() for s in listing)  # merged-away files deleted


@pytest.mark.parametrize("mapped", [True, False])
def test_many_small_commits_keep_a_short_chain_and_one_view(tmp_path: Path, monkeypatch, mapped: bool) -> None:
    if not mapped:
        monkeypatch.setattr(segments_module, "can_map_chains", lambda align: False)  # read into memory instead
    xb = clustered(4000, DIM, seed=5)
    index = VectorIndex.create(DIM, "Flat")
    index.add(np.arange(1000), xb[:1000])
    index.save(tmp_path)
    for start in range(1000, 4000, 100):  # 30 commits of 100 rows
        loaded = VectorIndex.load(tmp_path)
        loaded.add(np.arange(start, start + 100), xb[start : start + 100])
        loaded.save(tmp_path)
    chains = _segments(tmp_path)
    assert 2 <= len(chains["store"]) <= 8  # size-tiered merging: ~log2(30) segments, not 31
    view = VectorIndex.load(tmp_path, mmap=True)
    store = view.rows.store
    assert store.flags.c_contiguous and not store.flags.writeable
    np.testing.assert_array_equal(view.rows.ids, np.arange(4000))
    np.testing.assert_allclose(store, xb, atol=1e-3)
    whole = VectorIndex.create(DIM, "Flat")
    whole.add(np.arange(4000), xb)
    xq = clustered(10, DIM, seed=6)
    np.testing.assert_array_equal(view.search(xq, 10, subset=np.arange(0, 4000, 3))[1],
                                  whole.search(xq, 10, subset=np.arange(0, 4000, 3))[1])


def test_a_segment_of_another_save_is_refused(tmp_path: Path) -> None:
    index, _ = _built(2000, "Flat")
    index.save(tmp_path / "a")
    index.save(tmp_path / "b")  # same rows, same sizes, another save (uid)
    name = _segments(tmp_path / "a")["store"][0]["name"]
    shutil.copyfile(tmp_path / "b" / name, tmp_path / "a" / name)
    for mmap in (False, True):
        with pytest.raises(VectorIndexError, match=f"{name}.*another save.*--rebuild"):
            VectorIndex.load(tmp_path / "a", mmap=mmap)
    info = json.loads((tmp_path / "b" / "index_info.json").read_text())
    info["files"]["columns"]["ids"]["segments"][0]["start"] = 8  # does not chain
    (tmp_path / "b" / "index_info.json").write_text(json.dumps(info))
    with pytest.raises(VectorIndexError, match="do not chain"):
        VectorIndex.load(tmp_path / "b")


def test_plan_segments_keeps_the_unchanged_prefix_and_merges_small_tails() -> None:
    align = segments_module.ALIGN
    chain = [{"name": "a", "start": 0, "end": 100 * align}, {"name": "b", "start": 100 * align, "end": 110 * align}]
    kept, start = segments_module.plan_segments(chain, 110 * align, 111 * align, align)  # 1 new block
    assert [s["name"] for s in kept] == ["a", "b"] and start == 110 * align
    kept, start = segments_module.plan_segments(chain, 110 * align, 121 * align, align)  # a tail larger than b
    assert [s["name"] for s in kept] == ["a"] and start == 100 * align
    kept, start = segments_module.plan_segments(chain, 50 * align, 120 * align, align)  # a removal inside a
    assert kept == [] and start == 0
    assert segments_module.plan_segments(chain, 110 * align, 110 * align, align) == (chain, 110 * align)  # same
    odd = [{"name": "c", "start": 0, "end": 5 * align + 100}]
    kept, start = segments_module.plan_segments(odd, 5 * align + 100, 5 * align + 200, align)
    assert kept == odd and start == 5 * align  # the new segment repeats the partial block it overlaps


def test_a_chain_keeps_its_recorded_alignment_and_maps_on_a_huge_page_boundary(tmp_path: Path, monkeypatch) -> None:
    index, xb = _built(3000, "Flat")
    index.save(tmp_path)  # 4 KiB blocks (the fixture)
    monkeypatch.setattr(segments_module, "ALIGN", 1 << 21)  # a later version's default: the old chain keeps 4 KiB
    loaded = VectorIndex.load(tmp_path)
    loaded.add(np.arange(3000, 3100), clustered(100, DIM, seed=9))
    loaded.save(tmp_path)
    info = json.loads((tmp_path / "index_info.json").read_text())
    store = info["files"]["columns"]["store"]
    assert store["align"] == 4096 and len(store["segments"]) == 2
    view = VectorIndex.load(tmp_path, mmap=True).rows.store
    assert view.ctypes.data % segments_module.HUGE == 0
    np.testing.assert_allclose(view[:3000], xb, atol=1e-3)
    del store["align"]  # listings of the first segmented version had none: 64 KiB blocks, here 4 KiB: refused
    (tmp_path / "index_info.json").write_text(json.dumps(info))
    with pytest.raises(VectorIndexError, match="do not chain.*--rebuild"):
        VectorIndex.load(tmp_path)


def test_a_listing_without_align_is_read_as_64_kib_blocks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(segments_module, "ALIGN", 1 << 16)  # what commit 5d23908 wrote, without recording it
    xb = clustered(3000, 64, seed=14)
    index = VectorIndex.create(64, "Flat")
    index.add(np.arange(3000), xb)
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    loaded.add(np.arange(3000, 3100), clustered(100, 64, seed=15))
    loaded.save(tmp_path)
    info = json.loads((tmp_path / "index_info.json").read_text())
    assert len(info["files"]["columns"]["store"]["segments"]) == 2
    for listing in info["files"]["columns"].values():
        del listing["align"]
    (tmp_path / "index_info.json").write_text(json.dumps(info))
    monkeypatch.setattr(segments_module, "ALIGN", 1 << 21)
    for mmap in (False, True):
        np.testing.assert_allclose(VectorIndex.load(tmp_path, mmap=mmap).vectors(np.arange(3000)), xb, atol=1e-3)


def test_a_loaded_writer_adds_into_spare_rows_without_copying(tmp_path: Path) -> None:
    index, xb = _built(3000)
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    address = loaded.rows.store.ctypes.data
    more = clustered(300, DIM, seed=12)
    loaded.add(np.arange(3000, 3300), more)  # 300 <= the 1,024 spare rows: filled in place
    assert loaded.rows.store.ctypes.data == address and loaded.ntotal == 3300
    np.testing.assert_array_equal(loaded.vectors(np.arange(3300)), np.vstack([xb, more]))
    loaded.add(np.arange(3300, 5000), clustered(1700, DIM, seed=13))  # beyond them: grown by copying
    assert loaded.rows.store.ctypes.data != address
    loaded.save(tmp_path)
    reloaded = VectorIndex.load(tmp_path, mmap=True)
    assert reloaded.ntotal == 5000
    np.testing.assert_array_equal(reloaded.vectors(np.arange(3300)), np.vstack([xb, more]))
    np.testing.assert_array_equal(reloaded.ids(), np.arange(5000))
