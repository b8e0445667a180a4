"""Screenshots of the page for the docs (docs/img/serve-*.png), taken in headless Chromium from a running server.

    sarsearch serve --db runs/corpus-db            # the corpus index (built from ../shared/data)
    python tests/browser/docs_screenshots.py [--url http://127.0.0.1:8765] [--out docs/img]

Five states at 1280 x 800: a text query with a result opened, after "more like this", after feedback,
with filters, and the map enlarged. Each PNG is reduced to 256 colours so it stays small (< 300 KB).
Not a test (pytest collects test_*.py only); it uses the browser tests' Chromium settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.request
from pathlib import Path

from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def settle(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.searches || 0) > {before} "
                           "&& document.body.dataset.state === 'ready'", timeout=120_000)
    page.wait_for_function("[...document.querySelectorAll('#grid img, #detail img')].every((i) => i.complete)",
                           timeout=60_000)
    page.wait_for_timeout(700)  # map animations


def act(page, action) -> None:
    before = int(page.evaluate("Number(document.body.dataset.searches || 0)"))
    action()
    settle(page, before)


def results(page) -> list[dict[str, str]]:
    return page.eval_on_selector_all("#grid .result", "(tiles) => tiles.map((t) => ({...t.dataset}))")


def open_detail(page, tile_id: str) -> None:
    page.click(f'#grid .result[data-id="{tile_id}"] button.open')
    page.wait_for_function("document.querySelector('#detail-quicklook').complete", timeout=60_000)
    page.wait_for_timeout(700)
    page.mouse.move(5, 795)  # no hover highlight in the picture


def save(page, path: Path) -> None:
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})

        def go(path: str) -> None:
            page.goto(args.url + path)
            settle(page, 0)

        # 1. a text query, the best result opened: its scene with the tile outlined
        go("/?q=ship+near+harbor")
        tiles = results(page)
        open_detail(page, tiles[0]["id"])
        save(page, args.out / "serve-text-query.png")

        # 2. more like this on the result least like the best one (its image, by the API's like search)
        ids = ",".join(t["id"] for t in tiles)
        with urllib.request.urlopen(f"{args.url}/search?like={tiles[0]['id']}&ids={ids}") as answer:
            odd = json.load(answer)["features"][-1]["id"]
        act(page, lambda: page.click(f'#grid .result[data-id="{odd}"] button.like'))
        open_detail(page, results(page)[0]["id"])
        save(page, args.out / "serve-more-like-this.png")

        # 3. feedback on the text query: the best two results marked relevant, that odd one not
        go("/?q=ship+near+harbor")
        act(page, lambda: page.click(f'#grid .result[data-id="{tiles[0]["id"]}"] button.up'))
        act(page, lambda: page.click(f'#grid .result[data-id="{results(page)[0]["id"]}"] button.up'))
        if page.locator(f'#grid .result[data-id="{odd}"]').count():
            act(page, lambda: page.click(f'#grid .result[data-id="{odd}"] button.down'))
        else:
            act(page, lambda: page.click("#grid .result:last-child button.down"))
        page.mouse.move(5, 795)
        save(page, args.out / "serve-feedback.png")

        # 4. filters: a dataset, a label, a polarization and a date range
        go("/?q=cargo+ship")
        act(page, lambda: page.check('#filters input[name=collections][value="OpenSARShip"]'))
        act(page, lambda: page.select_option("#filter-label", "cargo"))
        act(page, lambda: page.select_option("#filter-polarization", "VV"))
        act(page, lambda: page.fill("#filter-date-from", "2016-01-01"))
        page.evaluate("document.activeElement.blur()")
        page.mouse.move(5, 795)
        save(page, args.out / "serve-filter.png")

        # 5. the map, enlarged: one result opened, its footprint and its neighbours' with their thumbnails
        go("/?q=river+in+farmland&collections=KOMPSAT-5-water&limit=30")
        page.click("#map-size")
        page.wait_for_timeout(800)
        open_detail(page, results(page)[0]["id"])
        page.wait_for_timeout(900)
        save(page, args.out / "serve-map.png")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
