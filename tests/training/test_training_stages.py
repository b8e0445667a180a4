"""The two training stages share one loop: stage 1 (self-supervised) learns, stage 2 starts from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarclip_search.errors import ArtifactMismatchError, InputError
from sarclip_search.model.sarclip import load_weights, new_model, read_checkpoint
from sarclip_search.training.train import TrainConfig, resolve_precision, train

SSL_STEPS = 10


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl") / "stage1.pt"
    config = TrainConfig.load(
        "smoke", ["stage=ssl", f"out={out}", f"max_steps={SSL_STEPS}", "synthetic=32", "freeze_image_blocks=5"]
    )
    return train(config)


def test_self_supervised_stage_reduces_its_loss(ssl_run):
    assert ssl_run.steps == SSL_STEPS
    first, last = np.mean(ssl_run.losses[:3]), np.mean(ssl_run.losses[-3:])
    assert last < first, ssl_run.losses
    assert read_checkpoint(ssl_run.checkpoint)["run_config"]["stage"] == "ssl"


def test_stage_two_starts_from_the_stage_one_weights(ssl_run):
    stage1 = read_checkpoint(ssl_run.checkpoint)["state_dict"]
    model = new_model()
    key = "visual.head.proj.weight"
    assert not torch.allclose(model.model.state_dict()[key], stage1[key].float())
    load_weights(model, ssl_run.checkpoint)
    assert torch.allclose(model.model.state_dict()[key], stage1[key].float())


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(InputError, match="stage"):
        train(TrainConfig.load("smoke", ["stage=mim", f"out={tmp_path / 'x.pt'}", "max_steps=1"]))


def test_weights_of_another_config_are_refused(ssl_run, monkeypatch):
    model = new_model()
    model.config = {**model.config, "embed_dim": 128}
    with pytest.raises(ArtifactMismatchError):
        load_weights(model, ssl_run.checkpoint)


def test_gpu_settings_fall_back_to_cpu_and_bf16_autocast_runs_there(tmp_path, caplog):
    """The GPU path without a GPU: device=cuda falls back to CPU with a warning, and the bf16 autocast
    branch the GPU takes runs on the CPU too (precision=bf16 forces it)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the fallback is not taken")
    out = tmp_path / "gpu-fallback.pt"
    with caplog.at_level("WARNING"):
        result = train(TrainConfig.load("smoke", ["device=cuda", "precision=bf16", "max_steps=4", f"out={out}"]))
    assert "CUDA is not available" in caplog.text
    assert result.metrics["device"] == "cpu" and result.metrics["precision"] == "bf16"
    assert all(math.isfinite(loss) for loss in result.losses) and result.steps == 4
    assert read_checkpoint(out)["run_config"]["precision"] == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"  # auto: bf16 only on a GPU that supports it
    with pytest.raises(InputError, match="precision"):
        train(TrainConfig.load("smoke", ["precision=fp8", "max_steps=1", f"out={tmp_path / 'bad.pt'}"]))
