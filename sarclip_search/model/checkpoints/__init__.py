"""Checkpoints shipped with the package (a module of its own so paths resolve without importing torch)."""

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).parent
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "sarclip-default.pt"
