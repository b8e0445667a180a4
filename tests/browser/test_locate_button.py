"""The detail panel's "locate in scene": the heat of a phrase replaces the scene's quicklook (headless Chromium).

Run alone: pytest -m browser tests/browser/test_locate_button.py
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

LOADED = ("document.querySelector('#detail-quicklook').complete "
          "&& document.querySelector('#detail-quicklook').naturalWidth > 0")


def test_locate_in_scene_shows_the_overlay(page):
    page.goto("/?q=bright+ship+at+sea&limit=30")
    placed = [tile["id"] for tile in page.results() if tile["placed"] == "yes"]
    page.page.click(f'#grid .result[data-id="{placed[0]}"] button.open')
    page.page.wait_for_function(LOADED)
    quicklook = page.page.get_attribute("#detail-quicklook", "src")
    assert "quicklook.png" in quicklook
    assert page.page.input_value("#locate-q") == "bright ship at sea"  # the page's query, to start from
    page.page.fill("#locate-q", "   ")
    page.page.click("#locate-go")
    assert "Type a phrase" in page.page.inner_text("#detail-caption")
    page.page.fill("#locate-q", "ship")
    page.page.click("#locate-go")
    page.page.wait_for_function("document.querySelector('#detail-caption').textContent.startsWith('Where')",
                                timeout=120_000)
    page.page.wait_for_function(LOADED)
    src = page.page.get_attribute("#detail-quicklook", "src")
    assert "/locate.png?q=ship" in src and src != quicklook
    shown = page.page.evaluate("(() => { const img = document.querySelector('#detail-quicklook');"
                               " return [img.naturalWidth, img.naturalHeight]; })()")
    assert max(shown) == 512
    # the image shown is the API's overlay of that scene and phrase
    scene = src.split("/scenes/")[1].split("/")[0]
    peaks = page.server.get_json(f"/scenes/{scene}/locate.json?q=ship")
    assert peaks["type"] == "FeatureCollection" and str(peaks["sarsearch:scene_id"]) == scene
    page.shot("locate-in-scene")
