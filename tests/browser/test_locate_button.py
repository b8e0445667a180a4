"""The detail panel's "locate in scene": the heat of a phrase replaces the scene's quicklook (headless Chromium).

Run alone: pytest -m browser tests/browser/test_locate_button.py
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import BIG_SCENE

pytestmark = pytest.mark.browser

LOADED = ("document.querySelector('#detail-quicklook').complete "
          "&& document.querySelector('#detail-quicklook').naturalWidth > 0")


def test_locate_in_scene_shows_the_overlay(page):
    page.goto("/?q=bright+ship+at+sea&limit=30")
    # a tile of the 160 x 96 Sentinel-1 scene: 8 windows of 64 px, so its heat is not flat
    api = page.server.get_json("/search?q=bright+ship+at+sea&limit=30")
    tile = next(item["id"] for item in api["features"] if item["properties"]["path"] == BIG_SCENE)
    page.page.click(f'#grid .result[data-id="{tile}"] button.open')
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
    with urllib.request.urlopen(page.server.url + src, timeout=60) as response, Image.open(response) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels[..., 0].std() > 5 and pixels[..., 2].std() > 5  # red and blue parts: a heat, not a flat tint
    page.shot("locate-in-scene")
