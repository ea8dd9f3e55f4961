"""Every codec recipe config builds its model and passes the recipe's checks; the recipes' shared command line."""

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


def test_command_line_overrides_keep_each_settings_shape():
    """One parser for every recipe: a list setting stays a list, one manifest path stays a string, a bool reads
    "false" as False, and a setting the config class lacks is refused."""
    from recipes.codec_data import DataConfig as CodecData
    from recipes.lm_data import DataConfig as LMData
    from recipes.train_codec import CodecTrainConfig
    from recipes.train_config import load_config, parse_args

    argv = ["--config", "recipes/configs/codec_whisper.json", "--freeze", "acoustic_encoder", "--init-skip",
            "--acoustic-from-tokens", "false", "--max-minutes", "5"]
    _, data, train = load_config(parse_args(argv, "codec", CodecData, CodecTrainConfig), CodecData, CodecTrainConfig)
    assert train.freeze == ["acoustic_encoder"] and train.init_skip == [] and train.max_minutes == 5.0
    assert data.acoustic_from_tokens is False
    argv = ["--config", "recipes/configs/lm_default.json", "--train-manifest", "a.jsonl", "--eval-manifest", "b", "c"]
    _, data, train = load_config(parse_args(argv, "lm", LMData), LMData)
    assert data.train_manifest == "a.jsonl" and data.eval_manifest == ["b", "c"] and train.betas == (0.9, 0.95)
    with pytest.raises(SystemExit):
        parse_args(["--config", "recipes/configs/lm_default.json", "--freeze", "x"], "lm", LMData)
