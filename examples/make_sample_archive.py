"""Rebuild examples/sample_archive from the shared SAR corpus (run from the repo root).

    python examples/make_sample_archive.py [../shared/data]

Picks test-split files only (never used for training): 3 MSTAR chips per class, 4 OpenSARShip chips
per ship type, and 3 MSTAR composite scenes, with their manifest rows. Deterministic: manifest order.
"""

from __future__ import annotations

import collections
import csv
import shutil
import sys
from pathlib import Path

LIMITS = {"MSTAR-SOC": 3, "OpenSARShip": 4}
COMPOSITE_SCENES = 3


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    target = Path(__file__).parent / "sample_archive"
    with open(source / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        rows = list(reader)
    per_class: collections.Counter = collections.Counter()
    picked = []
    for row in rows:
        if row["split"] != "test":
            continue
        if row["dataset"] == "MSTAR-composite-scenes":
            if per_class["composite"] < COMPOSITE_SCENES:
                per_class["composite"] += 1
                picked.append(row)
            continue
        key = (row["dataset"], row["label"])
        if per_class[key] < LIMITS.get(row["dataset"], 0):
            per_class[key] += 1
            picked.append(row)
    if target.exists():
        shutil.rmtree(target)
    for row in picked:
        destination = target / row["path"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / row["path"], destination)
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(picked)
    print(f"{len(picked)} files -> {target}")


if __name__ == "__main__":
    main()
