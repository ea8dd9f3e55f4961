"""The GLM-4-Voice semantic tokenizer (codec/semantic_tokenizer.py) against the released code's outputs."""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file

from codec.semantic_tokenizer import SemanticTokenizer, SemanticTokenizerConfig, SemanticTokenizerError

TINY_FOLDER = "glm_tokenizer_tiny"


@functools.cache
def _released(reference_dir) -> tuple[SemanticTokenizer, dict[str, np.ndarray]]:
    tokenizer = SemanticTokenizer.from_pretrained(reference_dir / TINY_FOLDER, dtype=torch.float64)
    return tokenizer, load_file(str(reference_dir / "glm_tokenizer_tiny.io.safetensors"))


@functools.cache
def _random_tokenizer() -> SemanticTokenizer:
    """A seeded tiny tokenizer (80 mels, 16-dim) for behaviour tests that need no ../shared files."""
    config = SemanticTokenizerConfig(d_model=16, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=80,
                                     encoder_causal_convolution=True, quantize_causal_block_size=200,
                                     pooling_kernel_size=4, pooling_type="avg", pooling_position=1,
                                     quantize_position=2, quantize_vocab_size=32)
    torch.manual_seed(0)
    tokenizer = SemanticTokenizer(config)
    with torch.no_grad():
        for param in tokenizer.parameters():
            param.normal_(0.0, 0.3)
    return tokenizer.double()


def _noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, int(16000 * seconds))


# ---- parity with the released code ---------------------------------------------------------------------------
def test_log_mel_features_match_released(reference_dir):
    tokenizer, io = _released(reference_dir)
    for name in ("en", "long"):
        audio = io[f"{name}.audio_volume_normalized"]
        features = tokenizer.log_mel(audio[: tokenizer.chunk_samples])
        reference = io[f"{name}.input_features_chunk0"]
        assert features.shape == reference.shape and features.dtype == np.float32
        # float32 STFT + mel matmul: any change of summation order moves single bins by ~1.5e-5 (transformers'
        # numpy path, and its torch path since it made the magnitudes contiguous); a real bug moves far more
        error = np.abs(features - reference)
        assert error.max() <= 5e-5 and error.mean() <= 1e-6


def test_tokenizer_ids_match_released_in_float64(reference_dir):
    tokenizer, io = _released(reference_dir)
    clips = [io["en.audio_volume_normalized"], io["long.audio_volume_normalized"]]
    ids = tokenizer.tokenize(clips)
    for name, got in zip(("en", "long"), ids):
        assert got.dtype == torch.int64 and got.device.type == "cpu"
        assert torch.equal(got, torch.from_numpy(io[f"{name}.tokens"]))


def test_long_clip_chunks_at_30_seconds(reference_dir):
    tokenizer, io = _released(reference_dir)
    audio = io["long.audio_volume_normalized"]  # 528777 samples: a 30 s chunk and a ragged tail
    ids = tokenizer.tokenize([audio])[0]
    head, tail = tokenizer.tokenize([audio[:480000], audio[480000:]])
    assert len(head) == 375 and len(tail) == math.ceil((len(audio) - 480000) / 1280) == 39
    assert torch.equal(ids, torch.cat([head, tail]))


def test_loads_only_the_encoder_up_to_the_quantiser(reference_dir):
    config = json.loads((reference_dir / TINY_FOLDER / "config.json").read_text())
    assert config["quantize_encoder_only"] is False and config["encoder_layers"] == 4  # extraction forces True
    tokenizer, _ = _released(reference_dir)
    assert len(tokenizer.layers) == config["quantize_position"] == 2
    released = load_torch(str(reference_dir / TINY_FOLDER / "model.safetensors"))
    kept = {k[len("model.encoder."):] for k in released if k.startswith("model.encoder.")
            and not k.startswith(("model.encoder.layer_norm", "model.encoder.layers.2", "model.encoder.layers.3"))
            and k not in ("model.encoder.embed_positions2.weight", "model.encoder.ema_count",
                          "model.encoder.ema_weight")}
    assert set(tokenizer.state_dict()) == kept
    for key, value in tokenizer.state_dict().items():
        assert value.dtype == torch.float64
        assert torch.equal(value, released[f"model.encoder.{key}"].double())
    assert tokenizer.codebook.weight.shape == (tokenizer.vocab_size, 32) == (64, 32)
    assert (tokenizer.sample_rate, tokenizer.hop_samples) == (16000, 1280)


# ---- batching ------------------------------------------------------------------------------------------------
def test_batch_equals_single(reference_dir):
    tokenizer, io = _released(reference_dir)
    long, en = io["long.audio_volume_normalized"], io["en.audio_volume_normalized"]
    clips = [en, long, en[:5000], long[100_000:131_000]]
    singles = [tokenizer.tokenize([clip])[0] for clip in clips]
    for batch_size in (1, 3, 16):
        together = tokenizer.tokenize(clips, batch_size=batch_size)
        assert all(torch.equal(a, b) for a, b in zip(together, singles))
    # the batched (feature-padding) path gives the same ids on real speech too
    batched = tokenizer.tokenize(clips, batch_size=16, batch_invariant=False)
    assert all(torch.equal(a, b) for a, b in zip(batched, singles))


def test_padded_frames_cannot_leak_into_real_ones():
    tokenizer = _random_tokenizer()
    clips = [_noise(2.0, 1), _noise(0.37, 2), _noise(3.3, 3)]
    mels = [torch.from_numpy(tokenizer.log_mel(clip)) for clip in clips]
    frames = max(m.shape[-1] for m in mels)
    num_samples = torch.tensor([len(c) for c in clips])
    outputs = []
    for fill in (0.0, 1e3):  # the padding's content must not matter at all
        features = torch.full((len(clips), mels[0].shape[0], frames), fill, dtype=torch.float32)
        for row, mel in enumerate(mels):
            features[row, :, : mel.shape[-1]] = mel
        with torch.inference_mode():
            outputs.append(tokenizer(features, num_samples))
    (ids_a, hidden_a, valid_a), (ids_b, hidden_b, valid_b) = outputs
    assert torch.equal(valid_a, valid_b) and torch.equal(ids_a, ids_b)
    assert torch.equal(hidden_a[valid_a], hidden_b[valid_b])  # bit-identical: no leak, only masking
    assert valid_a.sum(1).tolist() == [math.ceil(len(c) / 1280) for c in clips]
    assert (ids_a[~valid_a] == -1).all()
    for row, mel in enumerate(mels):  # and a chunk alone, at its own length, gets the same ids
        with torch.inference_mode():
            ids, hidden, valid = tokenizer(mel[None], num_samples[row: row + 1])
        assert torch.equal(ids[0][valid[0]], ids_a[row][valid_a[row]])
        assert (hidden[0][valid[0]] - hidden_a[row][valid_a[row]]).abs().max() < 1e-12


def test_saved_in_shards_under_a_size_cap_it_loads_the_same_tokenizer(tmp_path):
    tokenizer = _random_tokenizer()
    state = tokenizer.state_dict()
    total = sum(v.numel() * v.element_size() for v in state.values())
    largest = max(v.numel() * v.element_size() for v in state.values())
    tokenizer.save_pretrained(tmp_path / "tok", max_shard_bytes=max(largest, total // 3))
    shards = sorted((tmp_path / "tok").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "tok" / "model.safetensors").exists()
    assert all(p.stat().st_size <= max(largest, total // 3) + 4096 for p in shards)  # + the safetensors header
    loaded = SemanticTokenizer.from_pretrained(tmp_path / "tok", dtype=torch.float64)
    loaded_state = loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(v, loaded_state[k]) for k, v in state.items())


def test_token_count_is_ceil_of_samples_over_hop_per_30s_chunk():
    tokenizer = _random_tokenizer()
    lengths = [1, 1279, 1280, 1281, 480_000, 480_001, 960_000 + 2560 + 5]
    ids = tokenizer.tokenize([_noise(n / 16000, n) for n in lengths])
    for n, got in zip(lengths, ids):
        full, tail = divmod(n, 480_000)
        assert len(got) == full * 375 + math.ceil(tail / 1280)
        assert got.min() >= 0 and got.max() < tokenizer.vocab_size


def test_empty_or_bad_clip_raises_clear_value_error():
    tokenizer = _random_tokenizer()
    with pytest.raises(ValueError, match="clip 1: audio is empty"):
        tokenizer.tokenize([_noise(0.1, 0), np.zeros(0)])
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.tokenize([np.array([0.1, np.inf])])
    with pytest.raises(ValueError, match="mono"):
        tokenizer.tokenize([np.zeros((2, 100))])
    assert tokenizer.tokenize([]) == []


# ---- loading and configuration errors --------------------------------------------------------------------------
def test_missing_files_raise_errors_naming_folder_and_file(reference_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SemanticTokenizer.from_pretrained(tmp_path / "absent")
    folder = tmp_path / "tok"
    shutil.copytree(reference_dir / TINY_FOLDER, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"tok has no model\*\.safetensors"):
        SemanticTokenizer.from_pretrained(folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        SemanticTokenizer.from_pretrained(folder)


def test_strict_load_lists_missing_and_unexpected_keys(reference_dir, tmp_path):
    folder = tmp_path / "tok"
    shutil.copytree(reference_dir / TINY_FOLDER, folder)
    tensors = load_torch(str(folder / "model.safetensors"))
    del tensors["model.encoder.layers.1.fc1.bias"]
    tensors["model.encoder.extra_head.weight"] = torch.zeros(2)
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "model-00001-of-00001.safetensors"))
    with pytest.raises(SemanticTokenizerError) as info:
        SemanticTokenizer.from_pretrained(folder)
    message = str(info.value)
    assert "layers.1.fc1.bias" in message and "extra_head.weight" in message and str(folder) in message


def test_unsupported_configs_raise_clear_errors():
    base = dict(d_model=8, encoder_attention_heads=2, encoder_ffn_dim=16, encoder_causal_convolution=True,
                pooling_kernel_size=4, pooling_type="avg", pooling_position=2, quantize_position=2,
                quantize_vocab_size=8, some_future_field=123)
    assert SemanticTokenizerConfig.from_hf_config(base).quantize_vocab_size == 8  # unknown keys ignored
    for change, message in [({"quantize_vocab_size": None}, "no quantiser"),
                            ({"encoder_causal_convolution": False}, "encoder_causal_convolution"),
                            ({"pooling_position": 3}, "pooling_position"),
                            ({"pooling_type": "median"}, "pooling_type")]:
        with pytest.raises(SemanticTokenizerError, match=message):
            SemanticTokenizerConfig.from_hf_config({**base, **change})
