"""Every codec recipe config in recipes/configs builds its model and passes the recipe's checks."""

import json
from pathlib import Path

import pytest
import torch

from codec import SAC, SACConfig
from codec.discriminator import Discriminator

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("codec_*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_codec_config_builds(path):
    from recipes.codec_data import DataConfig
    from recipes.train_codec import CodecTrainConfig

    raw = json.loads(path.read_text())
    model = dict(raw["model"])
    Discriminator(**model.pop("discriminator", {}))
    with torch.device("meta"):
        sac = SAC(SACConfig(**model))
    assert sac.config.acoustic_per_semantic in (2, 4)
    CodecTrainConfig(**raw.get("train", {}))
    data = raw.get("data", {})
    if data.get("tokens") or data.get("manifest"):  # the tiny config gets its data from the command line
        DataConfig(**data)
