"""The page at / in headless Chromium, used as a person would: search, more like this, 👍/👎, filters, map,
detail, export, deep links, errors, a narrow window. Each state is saved as a screenshot in the test's tmp
folder. The `page` fixture (conftest.py) fails any test whose page asked a host other than the server.

Run alone: pytest -m browser
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.browser

QUERY = "/?q=T72+tank"


def url_params(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.page.url).query)


def decoded_thumbnails(page) -> list[int]:
    return page.page.eval_on_selector_all("#grid .result img", "(imgs) => imgs.map((img) => img.naturalWidth)")


def test_text_query_shows_ten_decoded_thumbnails(page):
    page.goto(QUERY)
    page.shot("text-query")
    widths = decoded_thumbnails(page)
    assert len(widths) == 10 and all(width > 0 for width in widths), widths
    api = page.server.get_json("/search?q=T72+tank")
    assert page.ids() == [item["id"] for item in api["features"]]  # the page shows what the API returns
    tile = page.page.locator("#grid .result").first
    caption = tile.inner_text()
    first = api["features"][0]
    assert first["properties"]["label"] in caption and f"#{first['id']}" in caption
    assert f"{first['properties']['score']:.3f}" in caption
    assert page.page.input_value("#q") == "T72 tank"
    # the example chips come from the index's labels and run a search; Enter in the box searches
    page.after(lambda: page.page.locator("#examples .example", has_text="field").click())
    assert url_params(page)["q"] == ["field"]
    page.page.fill("#q", "bright ship at sea")
    page.after(lambda: page.page.press("#q", "Enter"))
    assert url_params(page)["q"] == ["bright ship at sea"]
    assert page.ids() == [item["id"] for item in page.server.get_json("/search?q=bright+ship+at+sea")["features"]]


def test_more_like_this_turns_the_list_to_the_examples_class(page):
    page.goto(QUERY)
    before = page.results()
    counts = Counter(tile["label"] for tile in before)
    minority = min(counts, key=lambda label: (counts[label], label))
    example = next(tile for tile in before if tile["label"] == minority)
    page.shot("before-more-like-this")
    page.after(lambda: page.page.locator(f'#grid .result[data-id="{example["id"]}"] button.like').click())
    page.shot("more-like-this")
    after = page.results()
    assert url_params(page)["like"] == [example["id"]] and "q" not in url_params(page)
    top = [tile["label"] for tile in after[:5]]
    assert top.count(minority) >= 4, (minority, top)
    assert [t["label"] for t in after].count(minority) > counts[minority], (before, after)
    assert page.page.locator("#query-chips .chip", has_text=f"like #{example['id']}").count() == 1


def test_feedback_reorders_keeps_marks_visible_and_resets(page):
    page.goto(QUERY)
    original = page.ids()
    first, second = original[0], original[1]
    page.after(lambda: page.page.locator(f'#grid .result[data-id="{first}"] button.up').click())
    # the list is re-ranked after each mark: the second 👍 goes to a tile of the new list if it is there
    target = second if second in page.ids() else page.ids()[0]
    page.after(lambda: page.page.locator(f'#grid .result[data-id="{target}"] button.up').click())
    worst = page.ids()[-1]
    page.after(lambda: page.page.locator(f'#grid .result[data-id="{worst}"] button.down').click())
    page.shot("feedback")
    reranked = page.ids()
    assert reranked != original
    params = url_params(page)
    assert params["positive"] == [f"{first},{target}"] and params["negative"] == [worst]
    # the marks stay visible: in the feedback tray, and on any marked tile still in the grid
    assert page.page.locator("#marks .chip.mark-up").count() == 2
    assert page.page.locator("#marks .chip.mark-down").count() == 1
    for tile in page.results():
        if tile["id"] in (first, target):
            assert page.page.locator(f'#grid .result[data-id="{tile["id"]}"].marked-up').count() == 1
    # the API agrees with the page
    api = page.server.get_json(f"/search?q=T72+tank&positive={first},{target}&negative={worst}")
    assert reranked == [item["id"] for item in api["features"]]
    # a reload of the deep link reproduces the re-ranked list and the marks
    page.goto(urlparse(page.page.url).path + "?" + urlparse(page.page.url).query)
    assert page.ids() == reranked and page.page.locator("#marks .chip").count() == 3
    page.after(lambda: page.page.click("#reset-feedback"))
    page.shot("feedback-reset")
    assert page.ids() == original
    assert page.page.locator("#feedback-bar").is_hidden() and "positive" not in url_params(page)


def test_filter_keeps_only_matching_results(page):
    page.goto(QUERY)
    assert {tile["label"] for tile in page.results()} == {"ship", "field"}
    page.after(lambda: page.page.select_option("#filter-label", "field"))
    page.shot("filter-label")
    labels = [tile["label"] for tile in page.results()]
    assert len(labels) == 10 and set(labels) == {"field"}
    assert url_params(page)["label"] == ["field"]
    page.after(lambda: page.page.check('#filters input[name=collections][value="synthetic-S1-GRD"]'))
    page.shot("filter-dataset")
    tiles = page.results()
    assert tiles and {(t["label"], t["collection"]) for t in tiles} == {("field", "synthetic-S1-GRD")}
    # a deep link restores the filter controls and the same results
    page.goto("/?q=T72+tank&label=field&collections=synthetic-S1-GRD")
    assert page.page.input_value("#filter-label") == "field"
    assert page.page.is_checked('#filters input[name=collections][value="synthetic-S1-GRD"]')
    assert page.results() == tiles


def test_map_has_one_polygon_per_placed_result_and_links_hover(page):
    page.goto("/?q=T72+tank&limit=30")
    tiles = page.results()
    placed = [tile["id"] for tile in tiles if tile["placed"] == "yes"]
    api = page.server.get_json("/search?q=T72+tank&limit=30")
    assert len(tiles) == len(api["features"]) == 26
    assert placed == [item["id"] for item in api["features"] if item["geometry"]] and placed
    polygons = page.page.locator("#map path.footprint")
    assert polygons.count() == len(placed)
    assert page.page.locator("#map-note").inner_text().startswith(f"{len(placed)} of 26 on the map")
    page.page.hover(f'#grid .result[data-id="{placed[0]}"] button.open')
    colours = page.page.eval_on_selector_all("#map path.footprint", "(ps) => ps.map((p) => p.getAttribute('stroke'))")
    assert colours.count("#1971c2") == 1  # the hovered tile's footprint, highlighted
    page.shot("map-hover")
    # the detail panel: the scene with the tile outlined, the metadata, the footprint selected on the map
    page.page.click(f'#grid .result[data-id="{placed[0]}"] button.open')
    page.page.wait_for_function("document.querySelector('#detail-quicklook').complete "
                                "&& document.querySelector('#detail-quicklook').naturalWidth > 0")
    assert f"#{placed[0]}" in page.page.inner_text("#detail-title")
    meta = page.page.inner_text("#detail-meta")
    assert "synthetic-S1-GRD" in meta and "bbox" in meta
    page.shot("detail")


def test_exports_hold_the_results_shown(page):
    page.goto(QUERY)
    ids = page.ids()
    with page.page.expect_download() as download:
        page.page.click("#export-geojson")
    geojson = json.loads(Path(download.value.path()).read_text())
    assert geojson["type"] == "FeatureCollection"
    assert [feature["id"] for feature in geojson["features"]] == ids
    assert all(f["geometry"] is None or f["geometry"]["type"] == "Polygon" for f in geojson["features"])
    assert any(f["geometry"] for f in geojson["features"]) or not any(t["placed"] == "yes" for t in page.results())
    assert [f["properties"]["rank"] for f in geojson["features"]] == list(range(1, len(ids) + 1))
    with page.page.expect_download() as download:
        page.page.click("#export-stac")
    stac = json.loads(Path(download.value.path()).read_text())
    assert [item["id"] for item in stac["features"]] == ids
    assert all(item["assets"]["thumbnail"]["href"].startswith(page.server.url + "/items/") for item in stac["features"])
    with page.page.expect_download() as download:
        page.page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [row["id"] for row in rows] == ids and all(row["label"] in ("ship", "field") for row in rows)


def test_image_upload_finds_the_same_chip_first(page, browser_db):
    page.goto("/")
    assert page.page.locator("#grid .result").count() == 10  # no query: the archive by tile id
    chip = next((browser_db.parent / "archive" / "chips").glob("chip_field_0003.png"))
    page.after(lambda: page.page.set_input_files("#image-input", str(chip)))
    page.shot("image-query")
    first = page.results()[0]
    item = page.server.get_json(f"/items/{first['id']}")
    assert item["properties"]["path"].endswith("chip_field_0003.png")
    assert page.page.locator("#query-chips .chip", has_text="image: chip_field_0003.png").count() == 1


def test_api_error_is_shown_as_its_one_line_message(page):
    page.goto("/?q=ship&collections=NO-SUCH-SET")
    assert page.page.is_visible("#error")
    text = page.page.inner_text("#error-text")
    assert "no collection 'NO-SUCH-SET'" in text and "\n" not in text
    assert page.page.locator("#grid .result").count() == 0
    page.shot("error")


def test_narrow_window_has_no_sideways_scroll(page):
    page.page.set_viewport_size({"width": 420, "height": 860})
    page.goto(QUERY)
    page.shot("narrow")
    assert page.page.evaluate("document.documentElement.scrollWidth") <= 420
    assert all(width > 0 for width in decoded_thumbnails(page))
    box = page.page.locator("#grid .result").first.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 420


def test_a_long_dataset_name_does_not_widen_the_filters_panel(page):
    """A dataset checkbox is cut with an ellipsis, not a sideways scroll (a fieldset's min-content width once let
    "MSTAR-composite-scenes (55)" push the 220-px panel into a horizontal scrollbar)."""
    page.goto(QUERY)
    panel = "document.querySelector('#filters-panel')"
    page.page.evaluate("""() => {
        const label = document.querySelector('#filters .collections label').cloneNode(true);
        label.lastChild.textContent = ' a-dataset-with-a-very-long-name-like-MSTAR-composite-scenes (12345)';
        document.querySelector('#filters .collections').append(label);
    }""")
    page.shot("long-dataset-name")
    assert page.page.evaluate(f"{panel}.scrollWidth <= {panel}.clientWidth"), page.page.evaluate(
        f"[{panel}.scrollWidth, {panel}.clientWidth]")


def test_no_request_leaves_the_servers_origin(page):
    page.goto(QUERY)
    page.after(lambda: page.page.locator("#grid .result button.like").first.click())
    assert any(url.endswith("/static/vendor/leaflet/leaflet.js") for url in page.requests)
    assert any("/static/vendor/world-atlas/countries-110m.json" in url for url in page.requests)
    assert any("/thumbnail.png" in url for url in page.requests)
    assert page.foreign_requests() == []


def test_more_results_follows_the_next_link(page):
    page.goto(QUERY)
    first = page.ids()
    page.after(lambda: page.page.click("#more"))
    page.shot("more-results")
    api = page.server.get_json("/search?q=T72+tank&limit=20")
    assert page.ids()[:10] == first and page.ids() == [item["id"] for item in api["features"]]
    assert all(width > 0 for width in decoded_thumbnails(page))


def test_token_first_visit_sets_the_cookie_the_page_then_uses(browser, token_server, tmp_path):
    server, token = token_server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    try:
        refused = tab.goto(server.url + "/?q=ship")
        assert refused.status == 401 and "token" in tab.inner_text("body")
        tab.goto(f"{server.url}/?q=ship&token={token}")
        tab.wait_for_function("Number(document.body.dataset.searches || 0) >= 1", timeout=60_000)
        assert "token" not in tab.url and "q=ship" in tab.url  # the token leaves the address
        assert tab.is_hidden("#error") and tab.locator("#grid .result").count() == 10
        tab.screenshot(path=str(tmp_path / "token.png"))
    finally:
        context.close()


def test_map_area_and_date_range_filter_the_results(page):
    page.goto("/?q=T72+tank&limit=30")
    placed = [tile["id"] for tile in page.results() if tile["placed"] == "yes"]
    # the map is fitted to the footprints: its view holds every placed result and nothing unplaced
    page.after(lambda: page.page.click("#search-area"))
    page.shot("map-area")
    bbox = [float(v) for v in url_params(page)["bbox"][0].split(",")]
    tiles = page.results()
    assert sorted(t["id"] for t in tiles) == sorted(placed) and all(t["placed"] == "yes" for t in tiles)
    for tile in tiles:
        west, south, east, north = page.server.get_json(f"/items/{tile['id']}")["bbox"]
        assert west < bbox[2] and east > bbox[0] and south < bbox[3] and north > bbox[1]
    page.after(lambda: page.page.fill("#filter-date-from", "2021-02-01"))
    page.shot("date-range")
    assert url_params(page)["datetime"] == ["2021-02-01T00:00:00Z/.."]
    days = [page.server.get_json(f"/items/{t['id']}")["properties"]["datetime"][:10] for t in page.results()]
    assert days and all(day >= "2021-02-01" for day in days)
    assert len(days) < len(tiles)  # the fixture has scenes from January too
