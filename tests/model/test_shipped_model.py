"""The shipped checkpoint and its card agree: the card names the file's hash, size and evaluation."""

from __future__ import annotations

import json

from sarclip_search._fs import file_sha256
from sarclip_search.model.checkpoints import DEFAULT_CHECKPOINT
from sarclip_search.model.sarclip import read_checkpoint

CARD = DEFAULT_CHECKPOINT.with_suffix(".json")
MAX_BYTES = 25 * 1024 * 1024  # the size budget of the shipped checkpoint


def test_card_names_the_shipped_file():
    card = json.loads(CARD.read_text())
    assert card["sha256"] == file_sha256(DEFAULT_CHECKPOINT)
    assert card["bytes"] == DEFAULT_CHECKPOINT.stat().st_size <= MAX_BYTES
    checkpoint = read_checkpoint(DEFAULT_CHECKPOINT)
    assert card["model_name"] == checkpoint["model_name"]
    assert card["model_config"] == checkpoint["model_config"]


def test_shipped_eval_report_is_of_the_shipped_checkpoint():
    card = json.loads(CARD.read_text())
    report = json.loads((DEFAULT_CHECKPOINT.parent / card["eval"]["file"]).read_text())
    assert report["model"]["checkpoint_sha256"] == card["sha256"]
    assert report["split"] == "test"
    assert report["zero_shot"]["MSTAR-SOC"]["top1"] == card["eval"]["MSTAR-SOC_top1"]
