"""PNG quicklooks served by the API: a tile's, and its scene's with the tile outlined, kept in an LRU cache.

Both are `query.quicklook.quicklook` (band 1 in dB, percentile stretch, the model's view) of a pixel
window: the tile's window, or the whole scene. Only files the catalog names are read (the archive), never
a path from the request. The cache is keyed by generation, tile or scene, outline and size, and bounded in
bytes (`CACHE_BYTES`), least recently used first out.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace

from PIL import Image, ImageDraw

from sarclip_search.query.hit import Hit
from sarclip_search.query.quicklook import quicklook

THUMBNAIL_SIZE = 128  # px, default longer side of a tile's thumbnail
QUICKLOOK_SIZE = 512  # px, default longer side of a scene quicklook
MIN_SIZE, MAX_SIZE = 16, 1024
CACHE_BYTES = 64 * 1024 * 1024
OUTLINE_COLOUR = (255, 64, 32)


class PngCache:
    """A thread-safe LRU of PNG bytes, bounded in total bytes."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_make(self, key: Hashable, make: Callable[[], bytes]) -> tuple[bytes, bool]:
        """(PNG, True if it came from the cache); `make()` runs outside the lock (two threads may both make it)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found, True
            self.misses += 1
        data = make()
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes:
                self._items[key] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self._bytes -= len(dropped)
        return data, False

    def __len__(self) -> int:
        return len(self._items)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def tile_png(hit: Hit, size: int) -> bytes:
    """The tile's quicklook, longer side `size` px. RasterError when its scene file cannot be read."""
    return png(quicklook(hit, size))


def scene_png(tile: Hit, size: int, outline: Hit | None) -> bytes:
    """The quicklook of `tile`'s whole scene, longer side `size` px, with `outline`'s window drawn on it."""
    width = int(tile.metadata.get("scene_width") or 0) or tile.window[0] + tile.window[2]
    height = int(tile.metadata.get("scene_height") or 0) or tile.window[1] + tile.window[3]
    scene = replace(tile, window=(0, 0, width, height))
    image = quicklook(scene, size).convert("RGB")
    if outline is not None:
        factor = image.width / width
        col, row, w, h = outline.window
        box = [col * factor, row * factor, (col + w) * factor - 1, (row + h) * factor - 1]
        ImageDraw.Draw(image).rectangle(box, outline=OUTLINE_COLOUR, width=max(1, round(size / 256)))
    return png(image)
