"""Fixtures of the browser tests: an index, a real uvicorn serving it, and headless Chromium driven by Playwright.

The browser is Debian's `chromium` (`/usr/bin/chromium`; `.ci/run` installs it with apt-get), started by
Playwright for Python with `executable_path` (Playwright's own browser download is not used). Without it
the tests are skipped, except on CI (env CI set), where they fail: CI must run them.

Every page records the requests it makes (`BrowserPage.requests`); the `page` fixture fails a test whose
page asked any host but the server. Screenshots of each state go to the test's tmp folder.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import load_make_fixtures

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
CHIPS_PER_CLASS = 8  # extra 96 x 96 chips per class: neighbours of each class for "more like this"
CHIP_SIZE = 96
CHIP_SEED = 7


def chromium_path() -> str:
    """The system Chromium; skip (fail on CI) when it or Playwright is missing."""
    path = os.environ.get("SARSEARCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if path is None:
        missing = "no chromium on this machine (Debian: apt-get install chromium; .ci/run does it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {missing}")
        pytest.skip(missing)
    return path  # type: ignore[return-value]


# ---------------------------------------------------------------- the index


def write_browser_archive(fixture: Path, root: Path) -> Path:
    """The fixture archive plus CHIPS_PER_CLASS seeded ship and field chips (tests/data/make_fixtures' scenes).

    The 10 fixture images alone are too few and too mixed for a class to have neighbours of its own kind
    with the untrained test model; the chips give each class a cluster. The georeferenced Sentinel-1
    scenes give results with footprints for the map.
    """
    make_fixtures = load_make_fixtures()
    archive = root / "archive"
    shutil.copytree(fixture, archive)
    with open(archive / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(CHIP_SEED)
    for number in range(2, 2 + CHIPS_PER_CLASS):
        for kind in ("ship", "field"):
            make = make_fixtures.ship_scene if kind == "ship" else make_fixtures.field_scene
            power, _ = make(rng, CHIP_SIZE, CHIP_SIZE)
            name = f"chip_{kind}_{number:04d}.png"
            make_fixtures.write_png(archive / "chips" / name, make_fixtures.to_display8(power))
            rows.append({"path": f"chips/{name}", "dataset": "synthetic-chips", "split": "train", "label": kind,
                         "sensor": "Sentinel-1A", "band": "C", "polarization": "VV"})
    with open(archive / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return archive


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium's path; first of the session fixtures, so a skip comes before any index is built."""
    return chromium_path()


@pytest.fixture(scope="session")
def browser_db(chromium: str, tmp_path_factory: pytest.TempPathFactory, fixture_archive: Path, checkpoint: Path,
               sarclip) -> Path:
    """An index of `write_browser_archive` (26 tiles: 13 ship, 13 field; 7 with a footprint)."""
    from sarclip_search.ingest.indexer import index_archive
    from sarclip_search.store.layout import IndexStore

    root = tmp_path_factory.mktemp("browser")
    archive = write_browser_archive(fixture_archive, root)
    db = root / "db"
    report = index_archive(archive, IndexStore(db), sarclip, model_path=str(checkpoint))
    assert report.indexed == 10 + 2 * CHIPS_PER_CLASS and not report.failed, report
    return db


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    db: Path

    def get_json(self, path: str) -> Any:
        import json

        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)


@contextmanager
def serving(db: Path, token: str | None = None) -> Iterator[Server]:
    """`create_app(db, token=token)` served by a real uvicorn on 127.0.0.1 (a free port), in a thread."""
    import uvicorn

    from sarclip_search.server.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(db, token=token), log_level="warning", access_log=False, lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5):
                break
        except urllib.error.HTTPError:  # it answers (401 when it has a token)
            break
        except OSError:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the test server did not start on {url}") from None
            time.sleep(0.1)
    try:
        yield Server(url, db)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def server(browser_db: Path) -> Iterator[Server]:
    """The page's server over `browser_db`, without a token."""
    with serving(browser_db) as running:
        yield running


@pytest.fixture(scope="session")
def token_server(browser_db: Path) -> Iterator[tuple[Server, str]]:
    """A second server over `browser_db` that needs a token, and the token."""
    token = "browser-test-token"
    with serving(browser_db, token=token) as running:
        yield running, token


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser(chromium: str, server: Server) -> Iterator[Any]:
    """Headless Chromium (Debian's), a fresh profile (Playwright's launch makes a temporary user-data-dir)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@dataclass
class BrowserPage:
    """A page of the app, the requests it made, and helpers to act and wait as a person would."""

    page: Any
    server: Server
    shots: Path
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def searches(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.searches || 0)"))

    def goto(self, path: str) -> None:
        self.page.goto(self.server.url + path)
        self.page.wait_for_function("Number(document.body.dataset.searches || 0) >= 1", timeout=60_000)
        self.wait_images()

    def after(self, action) -> None:
        """Do `action()` (a click...) and wait until the search it starts has been shown."""
        before = self.searches()
        action()
        self.page.wait_for_function(f"Number(document.body.dataset.searches || 0) > {before} "
                                    "&& document.body.dataset.state === 'ready'", timeout=60_000)
        self.wait_images()

    def wait_images(self) -> None:
        """Wait until every result thumbnail has loaded (decoded or failed)."""
        self.page.wait_for_function("[...document.querySelectorAll('#grid img')].every((img) => img.complete)",
                                    timeout=60_000)

    def results(self) -> list[dict[str, str]]:
        """The grid's tiles in order: id, label, collection, placed."""
        return self.page.eval_on_selector_all(
            "#grid .result", "(tiles) => tiles.map((t) => ({...t.dataset}))")

    def ids(self) -> list[str]:
        return [tile["id"] for tile in self.results()]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def foreign_requests(self) -> list[str]:
        origin = self.server.url + "/"
        return [url for url in self.requests
                if not (url.startswith((origin, "data:", f"blob:{self.server.url}/")))]


@pytest.fixture
def page(browser: Any, server: Server, tmp_path: Path) -> Iterator[BrowserPage]:
    """A fresh browser context at 1280 x 800; fails the test if the page asked another host or threw."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    tab = context.new_page()
    wrapped = BrowserPage(tab, server, tmp_path)
    tab.on("request", lambda request: wrapped.requests.append(request.url))
    tab.on("pageerror", lambda error: wrapped.errors.append(str(error)))
    try:
        yield wrapped
    finally:
        context.close()
    assert not wrapped.foreign_requests(), f"the page asked other hosts: {wrapped.foreign_requests()}"
    assert not wrapped.errors, f"the page threw: {wrapped.errors}"
