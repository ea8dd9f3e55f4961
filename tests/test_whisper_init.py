"""Starting the semantic tokenizer from a pretrained Whisper encoder (codec/whisper_weights.py,
recipes/whisper_init.py): both on-disk forms give the encoder that transformers' WhisperEncoder computes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from codec.semantic_training import TokenizerTrainer, TokenizerTrainingConfig
from codec.whisper_weights import read_ctranslate2_variables, read_whisper_encoder
from recipes import whisper_init

DIMS = {"d_model": 16, "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "num_mel_bins": 8,
        "encoder_layers": 3, "max_source_positions": 1500}
TOKENIZER = {"d_model": 16, "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "num_mel_bins": 8,
             "max_source_positions": 1500, "encoder_causal_convolution": True, "quantize_position": 2,
             "pooling_kernel_size": 4, "pooling_type": "avg", "pooling_position": 2, "quantize_vocab_size": 8}


def random_whisper_encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperConfig(**DIMS)).eval()
    with torch.no_grad():  # sharp attention and non-zero biases and norms, so a mix-up in the mapping shows
        for name, tensor in encoder.named_parameters():
            if "embed_positions" not in name:
                tensor.normal_(0, 0.5)
    return encoder


def write_hf_folder(encoder: WhisperEncoder, folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", **DIMS}))
    save_file({f"model.encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()},
              str(folder / "model.safetensors"))
    return folder


def write_ctranslate2_folder(encoder: WhisperEncoder, folder: Path) -> Path:
    """CTranslate2's binary layout (version 6) as its Whisper converter writes an encoder: fused qkv, k without bias."""
    folder.mkdir()
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in encoder.state_dict().items()}
    variables = {"encoder/num_heads": np.array(DIMS["encoder_attention_heads"], np.int16),
                 "encoder/position_encodings/encodings": sd["embed_positions.weight"],
                 "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"]}
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            variables[f"encoder/{conv}/{p}"] = sd[f"{conv}.{p}"]
    for i in range(DIMS["encoder_layers"]):
        a, base = f"layers.{i}.", f"encoder/layer_{i}/"
        variables[base + "self_attention/linear_0/weight"] = np.concatenate(
            [sd[a + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        variables[base + "self_attention/linear_0/bias"] = np.concatenate(
            [sd[a + "self_attn.q_proj.bias"], np.zeros(DIMS["d_model"], np.float16), sd[a + "self_attn.v_proj.bias"]])
        for ours, theirs in (("self_attn.out_proj", "self_attention/linear_1"), ("fc1", "ffn/linear_0"),
                             ("fc2", "ffn/linear_1")):
            for p in ("weight", "bias"):
                variables[f"{base}{theirs}/{p}"] = sd[f"{a}{ours}.{p}"]
        for ours, theirs in (("self_attn_layer_norm", "self_attention/layer_norm"), ("final_layer_norm", "ffn/layer_norm")):
            variables[f"{base}{theirs}/gamma"], variables[f"{base}{theirs}/beta"] = sd[a + ours + ".weight"], sd[
                a + ours + ".bias"]
    dtype_ids = {np.dtype(np.float16): 4, np.dtype(np.int16): 2}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    blob = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, value in variables.items():
        blob += [string(name), struct.pack("<B", value.ndim), *(struct.pack("<I", d) for d in value.shape),
                 struct.pack("<B", dtype_ids[value.dtype]), struct.pack("<I", value.nbytes), value.tobytes()]
    blob.append(struct.pack("<I", 0))  # no aliases
    (folder / "model.bin").write_bytes(b"".join(blob))
    return folder


def encoder_output(state: dict[str, torch.Tensor], reference: WhisperEncoder, features: torch.Tensor) -> torch.Tensor:
    """The reference encoder with its first two layers' weights replaced by `state`, cut after layer 2."""
    encoder = WhisperEncoder(WhisperConfig(**{**DIMS, "encoder_layers": 2})).eval()
    norms = {k: v for k, v in reference.state_dict().items() if k.startswith("layer_norm.")}
    encoder.load_state_dict({**state, **norms}, strict=True)
    with torch.no_grad():
        return encoder(features).last_hidden_state


@pytest.mark.parametrize("form", ["hf", "ctranslate2"])
def test_both_whisper_forms_read_into_the_same_encoder(tmp_path, form):
    reference = random_whisper_encoder()
    writer = write_hf_folder if form == "hf" else write_ctranslate2_folder
    dims, state = read_whisper_encoder(writer(reference, tmp_path / form))
    assert dims.encoder_layers == 3 and dims.d_model == 16 and dims.encoder_attention_heads == 2
    assert sorted(k for k in state if not k.startswith("layers.")) == [
        "conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight", "embed_positions.weight"]
    assert {k.split(".")[1] for k in state if k.startswith("layers.")} == {"0", "1", "2"}
    state = {k: v for k, v in state.items() if not k.startswith("layers.2.")}
    features = torch.randn(1, 8, 3000)
    cut = WhisperEncoder(WhisperConfig(**{**DIMS, "encoder_layers": 2})).eval()
    cut.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("layers.2.")})
    with torch.no_grad():
        expected = cut(features).last_hidden_state
    error = (encoder_output(state, reference, features) - expected).abs().max() / expected.abs().max()
    assert error < (1e-6 if form == "hf" else 1e-2)  # the CTranslate2 file holds float16


def test_ctranslate2_reader_refuses_another_binary_version(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(ValueError, match="binary version 5"):
        read_ctranslate2_variables(tmp_path / "model.bin")


def test_recipe_writes_a_start_folder_with_whispers_encoder_and_fresh_codebook(tmp_path):
    reference = random_whisper_encoder()
    whisper = write_hf_folder(reference, tmp_path / "whisper")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"tokenizer": TOKENIZER, "post_layers": 1}, "train": {"seed": 3}}))
    out = whisper_init.main([str(whisper), "--config", str(config), "--out", str(tmp_path / "init")])
    model = TokenizerTrainer.from_pretrained(out)
    ours = model.tokenizer.state_dict()
    for key, value in reference.state_dict().items():
        if key.startswith(("conv", "embed_positions", "layers.0.", "layers.1.")):
            assert torch.equal(ours[key], value), key
    assert torch.equal(model.post[0].fc1.weight, reference.layers[2].fc1.weight)  # Whisper's next layer
    assert not bool(model.initialised)  # the codebook starts from real encoder outputs at the first step
    assert json.loads((out / "whisper_init.json").read_text())["dims"]["encoder_layers"] == 3


def test_a_whisper_of_other_widths_is_refused_with_the_clash_named(tmp_path):
    whisper = write_hf_folder(random_whisper_encoder(), tmp_path / "whisper")
    model = TokenizerTrainer(TokenizerTrainingConfig(tokenizer={**TOKENIZER, "d_model": 32, "encoder_ffn_dim": 64}))
    with pytest.raises(ValueError, match="d_model 16 \\(config: 32\\)"):
        model.load_whisper_encoder(whisper)
    deep = TokenizerTrainer(TokenizerTrainingConfig(tokenizer={**TOKENIZER, "quantize_position": 4,
                                                               "pooling_position": 4}))
    with pytest.raises(ValueError, match="3 encoder layers; 4 were asked for"):
        deep.load_whisper_encoder(whisper)
