"""recipes/interpolate_weights.py on a tiny codec folder: the mix is the weighted mean tensor by tensor, frozen parts
and sub-folders stay bit for bit, the result loads, and folders that are not one architecture are refused."""

import json
import shutil

import pytest
import torch

from codec import SAC, SpeechCodec
from codec.weights import CheckpointError, read_weights
from recipes.interpolate_weights import RECORD_NAME, interpolate, main


@pytest.fixture()
def pair(tiny_tts_dir, tmp_path):
    """A: the tiny codec; B: A with its decoder side moved, as a fine-tune of the decoder would leave it."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_tts_dir / "codec", a)
    model = SAC.from_pretrained(a)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.acoustic_decoder.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    model.save_pretrained(tmp_path / "b_weights")
    shutil.copytree(a, b)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(tmp_path / "b_weights" / name, b / name)
    return a, b


def test_mix_is_the_weighted_mean_and_leaves_unchanged_tensors_bit_for_bit(pair, tmp_path):
    a, b = pair
    record = interpolate(a, b, 0.25, tmp_path / "mix")
    state_a, state_b, mixed = read_weights(a), read_weights(b), read_weights(tmp_path / "mix")
    moved = [k for k in state_b if not torch.equal(state_a[k], state_b[k])]
    assert moved and all(k.startswith("acoustic_decoder.") for k in moved)
    for key, value in mixed.items():
        expected = 0.75 * state_a[key].float() + 0.25 * state_b[key].float() if key in moved else state_b[key]
        assert torch.equal(value, expected.to(value.dtype)), key
    assert record["tensors_mixed"] == {".": len(moved), "semantic_tokenizer": 0}
    assert (tmp_path / "mix" / "semantic_tokenizer" / "config.json").is_file()
    written = json.loads((tmp_path / "mix" / RECORD_NAME).read_text())
    assert written["weight"] == 0.25 and written["sha256"]["b"].keys() == written["sha256"]["a"].keys()
    codec = SpeechCodec.from_pretrained(tmp_path / "mix")  # the mixed folder is a codec that encodes and decodes
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * torch.arange(16000) / 16000)
    assert codec.reconstruct([tone.numpy()], 16000)[0].shape[-1] > 0


def test_weight_zero_gives_a_and_one_gives_b(pair, tmp_path):
    a, b = pair
    for weight, source in ((0.0, a), (1.0, b)):
        interpolate(a, b, weight, tmp_path / f"w{weight}")
        mixed, expected = read_weights(tmp_path / f"w{weight}"), read_weights(source)
        assert all(torch.equal(mixed[k], expected[k]) for k in expected)


def test_different_configs_are_refused_and_nothing_is_written(pair, tmp_path):
    a, b = pair
    config = json.loads((b / "config.json").read_text())
    config["sample_rate"] = 24000
    (b / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json"):
        interpolate(a, b, 0.5, tmp_path / "mix")
    assert not (tmp_path / "mix").exists() and not list(tmp_path.glob(".mix.*"))


def test_missing_tensors_and_bad_weights_are_named(pair, tmp_path):
    a, b = pair
    with pytest.raises(ValueError, match="--weight must be in"):
        interpolate(a, b, 1.5, tmp_path / "mix")
    shutil.rmtree(a / "semantic_tokenizer")
    shutil.copytree(b / "semantic_tokenizer", a / "semantic_tokenizer")
    (a / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match="different folders"):
        main([str(a), str(b), "--weight", "0.5", "--out", str(tmp_path / "mix")])
