"""What each tile holds: the scene's boxed objects assigned to its tiles, and the tile's own label.

A scene's manifest row may list its objects as boxes (`boxes_xyxy`: ``class:xmin,ymin,xmax,ymax;...`` in
the scene's pixels). A tile holds the objects whose box centre falls inside its window (half-open: a centre
on the window's right or bottom edge belongs to the next tile), so each object is in exactly one tile of a
grid without overlap, and in every tile that contains its centre when tiles overlap. Its box is given in
the tile's pixels, clipped to the tile.

The tile's label is the scene's label only when the tile holds an object of it, or all of the scene's
objects (a chip labelled `cargo` whose one box is a `ship`): a tile of a ship scene with no ship in it is
`no_object`, not `ship`. A tile whose objects are all of one other class (a composite scene of several
vehicle classes, a tile holding only the ship of an oil-spill scene) takes that class.
Scenes without boxes keep their label on every tile, and their object count is known only for an image
that is one tile (the manifest's `n_objects`).

A change to these rules bumps `metadata.METADATA_RULES_VERSION`, so that the next `index` run re-labels every
scene once (nothing re-embedded) and its tiles' columns follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sarclip_search.errors import MetadataError

NO_OBJECT = "no_object"  # the tile label of a tile without objects in a scene whose objects are boxed
TILE_OBJECT_COLUMNS = ("tile_label", "tile_n_objects", "tile_objects")


@dataclass(frozen=True)
class Box:
    """An object of a scene: its class and box (xmin, ymin, xmax, ymax) in pixels."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def parse_boxes(text: object, where: str = "boxes_xyxy") -> list[Box]:
    """The boxes of a manifest's ``class:xmin,ymin,xmax,ymax;...`` text (empty for None or '').

    Raises MetadataError naming `where` for text that is not of that form.
    """
    if text is None or str(text).strip() == "":
        return []
    boxes = []
    for item in str(text).split(";"):
        if not item.strip():
            continue
        name, _, coords = item.rpartition(":")
        try:
            x0, y0, x1, y1 = (float(v) for v in coords.split(","))
        except ValueError:
            x0 = y0 = x1 = y1 = float("nan")
        if not name.strip() or not (x0 <= x1 and y0 <= y1):  # also false for NaN
            raise MetadataError(
                f"{where}: expected boxes as class:xmin,ymin,xmax,ymax separated by ';', found {item.strip()!r}; "
                "fix that manifest cell"
            )
        boxes.append(Box(name.strip(), x0, y0, x1, y1))
    return boxes


def boxes_in_window(boxes: Sequence[Box], window: Sequence[int]) -> list[Box]:
    """The boxes whose centre lies in `window` (col_off, row_off, width, height), in the window's pixels,
    clipped to it."""
    col, row, width, height = (int(v) for v in window)
    found = []
    for box in boxes:
        cx, cy = box.centre
        if col <= cx < col + width and row <= cy < row + height:
            found.append(Box(box.name, max(box.x0 - col, 0.0), max(box.y0 - row, 0.0),
                             min(box.x1 - col, float(width)), min(box.y1 - row, float(height))))
    return found


def format_boxes(boxes: Sequence[Box]) -> str:
    """Boxes in the manifest's form (``class:xmin,ymin,xmax,ymax;...``, whole pixels)."""
    return ";".join(f"{b.name}:{round(b.x0)},{round(b.y0)},{round(b.x1)},{round(b.y1)}" for b in boxes)


def tile_label(scene_label: object, objects: Sequence[Box], *, all_of_scene: bool = False) -> str | None:
    """A tile's label from its scene's label and the objects it holds (see the module docstring).

    `all_of_scene`: the tile holds every object of the scene, so the scene's label describes it (an
    OpenSARShip chip labelled `cargo` whose one box is named `ship`).
    """
    if not objects:
        return NO_OBJECT
    names = {box.name for box in objects}
    if scene_label is not None and (str(scene_label) in names or all_of_scene):
        return str(scene_label)
    if len(names) == 1:
        return next(iter(names))
    return None if scene_label is None else str(scene_label)


def tile_object_columns(
    scene: Mapping[str, object], windows: Sequence[Sequence[int]], where: str = "boxes_xyxy"
) -> list[dict[str, object]]:
    """tile_label, tile_n_objects and tile_objects of each window of a scene, from its row (`label`,
    `boxes_xyxy`, `n_objects`, `width`, `height`).

    Raises MetadataError (naming `where`) for boxes that cannot be read.
    """
    label = scene.get("label")
    label = None if label is None or str(label) == "" else str(label)
    text = scene.get("boxes_xyxy")
    if text is None or str(text).strip() == "":
        whole = [tuple(int(v) for v in w) == (0, 0, scene.get("width"), scene.get("height")) for w in windows]
        count = _count(scene.get("n_objects"))
        return [{"tile_label": label, "tile_n_objects": count if is_whole else None, "tile_objects": None}
                for is_whole in whole]
    boxes = parse_boxes(text, where)
    rows = []
    for window in windows:
        inside = boxes_in_window(boxes, window)
        rows.append({"tile_label": tile_label(label, inside, all_of_scene=len(inside) == len(boxes)),
                     "tile_n_objects": len(inside),
                     "tile_objects": format_boxes(inside) or None})
    return rows


def _count(value: object) -> int | None:
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def count_words(count: int) -> str:
    """A count as analysts say it: a single, two, several (3-5), many (6+); none for 0."""
    if count <= 0:
        return "no"
    if count == 1:
        return "a single"
    if count == 2:
        return "two"
    return "several" if count <= 5 else "many"
