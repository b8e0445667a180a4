"""Does the model read MSTAR targets, or their clutter? Zero-shot accuracy with target and clutter pulled apart.

    python benchmarks/bench_shortcut.py [--data ../shared/data] [--model CKPT ...] [--split test]

MSTAR's ten classes were each imaged over their own patch of ground, so the class can be read from the
background alone. For each checkpoint (side by side in one run, same chips), on the split's MSTAR-SOC chips:

  original        zero-shot top-1 by the class prompt ensembles, as `sarsearch eval` reports it;
  target blanked  the central target square (training/shortcut.py) refilled with the chip's own clutter
                  pixels: a model that reads the target should fall towards chance (0.10);
  swapped         each chip's target pasted onto the clutter of a chip of another class: the share of
                  predictions that follow the target vs the clutter;
  scene crops     vehicles cut from the MSTAR composite scenes by their boxes (another processing chain and
                  scale): top-1 over the same ten classes.

The raw-pixel 1-nearest-neighbour classifier (train chips → split chips, Euclidean on the model input) is the
reference for how much each view gives away without any model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from sarclip_search.model.sarclip import DEFAULT_CHECKPOINT, git_commit, load_model
from sarclip_search.training import data as training_data
from sarclip_search.training.evaluate import class_text_embeddings, composite_crops
from sarclip_search.training.shortcut import blank_target, swap_clutter

from defaults import DATA, RESULTS, require_archive

DATASET = "MSTAR-SOC"


def mstar_chips(root: Path, split: str, size: int) -> tuple[np.ndarray, list[str]]:
    samples = [s for s in training_data.manifest_samples(root, (split,)) if s.dataset == DATASET and s.window is None]
    return training_data.load_chips(samples, size), [s.label for s in samples]


def nearest_neighbour(train: np.ndarray, train_labels: list[str], test: np.ndarray) -> list[str]:
    a = train.reshape(len(train), -1).astype(np.float32)
    b = test.reshape(len(test), -1).astype(np.float32)
    distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
    return [train_labels[i] for i in distances.argmin(axis=1)]


def accuracy(predicted: list[str], truth: list[str]) -> float:
    return round(float(np.mean([p == t for p, t in zip(predicted, truth)])), 4) if truth else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="the corpus with MSTAR-SOC (default: %(default)s)")
    parser.add_argument("--model", action="append", help="checkpoint (repeatable; default: the shipped one)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "shortcut.json"), help="JSON result (default: %(default)s)")
    args = parser.parse_args()
    root = require_archive(args.data, "--data", manifest=True)
    checkpoints = args.model or [str(DEFAULT_CHECKPOINT)]

    size = load_model(checkpoints[0]).image_size
    chips, truth = mstar_chips(root, args.split, size)
    labels = sorted(set(truth))
    generator = torch.Generator().manual_seed(args.seed)
    blanked = blank_target(torch.as_tensor(chips), generator).numpy()
    # a partner of another class for every chip: its clutter receives this chip's target
    rng = np.random.default_rng(args.seed)
    partner = np.array([rng.choice([j for j, t in enumerate(truth) if t != truth[i]]) for i in range(len(truth))])
    swapped = swap_clutter(torch.as_tensor(chips), torch.as_tensor(chips[partner])).numpy()
    clutter_truth = [truth[j] for j in partner]
    crops, crop_truth = composite_crops(root, args.split, size, labels)

    train_chips, train_labels = mstar_chips(root, "train", size)
    train_blanked = blank_target(torch.as_tensor(train_chips), generator).numpy()
    rows = {
        "raw-pixel 1-NN": {
            "original": accuracy(nearest_neighbour(train_chips, train_labels, chips), truth),
            "target_blanked": accuracy(nearest_neighbour(train_blanked, train_labels, blanked), truth),
            "swapped_follows_target": accuracy(nearest_neighbour(train_chips, train_labels, swapped), truth),
            "swapped_follows_clutter": accuracy(nearest_neighbour(train_chips, train_labels, swapped), clutter_truth),
            "scene_crops": accuracy(nearest_neighbour(train_chips, train_labels, crops), crop_truth),
        }
    }
    for checkpoint in checkpoints:
        model = load_model(checkpoint)
        classes = class_text_embeddings(model, DATASET, labels)

        def predict(x: np.ndarray, model=model, classes=classes) -> list[str]:
            return [labels[i] for i in (model.encode_images(x) @ classes.T).argmax(axis=1)] if len(x) else []

        on_swapped = predict(swapped)
        rows[Path(checkpoint).name] = {
            "original": accuracy(predict(chips), truth),
            "target_blanked": accuracy(predict(blanked), truth),
            "swapped_follows_target": accuracy(on_swapped, truth),
            "swapped_follows_clutter": accuracy(on_swapped, clutter_truth),
            "scene_crops": accuracy(predict(crops), crop_truth),
        }

    columns = ["original", "target_blanked", "swapped_follows_target", "swapped_follows_clutter", "scene_crops"]
    print(f"{DATASET} {args.split}: {len(truth)} chips, {len(labels)} classes (chance {1 / len(labels):.2f}); "
          f"{len(crop_truth)} scene crops; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"{'':28s}" + "".join(f"{c:>24s}" for c in columns))
    for name, row in rows.items():
        print(f"{name:28s}" + "".join(f"{row[c]:>24.3f}" for c in columns))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "commit": git_commit(),
        "config": {"data": str(root), "split": args.split, "seed": args.seed, "checkpoints": checkpoints,
                   "n_chips": len(truth), "n_scene_crops": len(crop_truth)},
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"result written to {args.out}")


if __name__ == "__main__":
    main()
