"""Read a pretrained Whisper encoder into `SemanticTokenizer` key names, to start a tokenizer the way GLM-4-Voice does.

GLM-4-Voice's tokenizer is a Whisper encoder fine-tuned with a VQ bottleneck, not one trained from scratch. Two
on-disk forms are read, both without their libraries:

- a Hugging Face Whisper folder (`config.json` + `model*.safetensors`, keys `model.encoder.*`), e.g. a snapshot of
  `openai/whisper-base`;
- a CTranslate2 Whisper folder (`model.bin`, as faster-whisper ships them), whose attention packs q, k and v into
  one matrix and whose k projection has no bias (Whisper's has none either).

Only the encoder is returned: the two convs, the position table and every layer.
Whisper's convs are centred and ours are causal (`encoder_causal_convolution`, as GLM's): the same kernels,
read one frame later, which fine-tuning absorbs.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

# CTranslate2's DataType enum, as written in model.bin
_CT2_DTYPES = {0: np.float32, 2: np.int16, 3: np.int32, 4: np.float16}  # 1 int8 and 5 bf16 are not read
_LAYER_KEYS = {  # ours (WhisperEncoderLayer) -> CTranslate2's, inside encoder/layer_N/
    "self_attn_layer_norm.weight": "self_attention/layer_norm/gamma",
    "self_attn_layer_norm.bias": "self_attention/layer_norm/beta",
    "self_attn.out_proj.weight": "self_attention/linear_1/weight",
    "self_attn.out_proj.bias": "self_attention/linear_1/bias",
    "final_layer_norm.weight": "ffn/layer_norm/gamma",
    "final_layer_norm.bias": "ffn/layer_norm/beta",
    "fc1.weight": "ffn/linear_0/weight",
    "fc1.bias": "ffn/linear_0/bias",
    "fc2.weight": "ffn/linear_1/weight",
    "fc2.bias": "ffn/linear_1/bias",
}


@dataclass(frozen=True)
class WhisperEncoderDims:
    d_model: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    num_mel_bins: int
    encoder_layers: int
    max_source_positions: int


def read_whisper_encoder(path: str | Path) -> tuple[WhisperEncoderDims, dict[str, torch.Tensor]]:
    """A Whisper folder (HF or CTranslate2) -> its dims and the float32 tensors of conv1, conv2, embed_positions and
    every layers.N, named as `SemanticTokenizer`'s state dict and WhisperEncoder name them."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Whisper folder not found: {folder}")
    if (folder / "model.bin").is_file():
        dims, state = _read_ctranslate2(folder / "model.bin")
    elif list(folder.glob("model*.safetensors")) and (folder / "config.json").is_file():
        dims, state = _read_hf(folder)
    else:
        raise FileNotFoundError(f"{folder} is neither a Hugging Face Whisper folder (config.json + "
                                f"model*.safetensors) nor a CTranslate2 one (model.bin)")
    return dims, {k: v.float() for k, v in state.items()}


def _read_hf(folder: Path) -> tuple[WhisperEncoderDims, dict[str, torch.Tensor]]:
    config = json.loads((folder / "config.json").read_text())
    dims = WhisperEncoderDims(**{f: int(config[f]) for f in WhisperEncoderDims.__dataclass_fields__})
    wanted = ("conv1.", "conv2.", "embed_positions.", "layers.")
    state = {}
    for file in sorted(folder.glob("model*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is no dict)
                name = key.removeprefix("model.encoder.")
                if name != key and name.startswith(wanted):
                    state[name] = handle.get_tensor(key)
    return dims, state


def _read_ctranslate2(file: Path) -> tuple[WhisperEncoderDims, dict[str, torch.Tensor]]:
    variables = read_ctranslate2_variables(file, prefix="encoder/")
    missing = [n for n in ("encoder/conv1/weight", "encoder/num_heads", "encoder/position_encodings/encodings")
               if n not in variables]
    if missing:
        raise ValueError(f"{file} is not a CTranslate2 Whisper model: no {', '.join(missing)}")
    conv1 = variables["encoder/conv1/weight"]  # [d_model, n_mels, 3]
    layers = {n.split("/")[1] for n in variables if re.match(r"encoder/layer_\d+/", n)}
    dims = WhisperEncoderDims(
        d_model=conv1.shape[0], encoder_attention_heads=int(variables["encoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0], num_mel_bins=conv1.shape[1],
        encoder_layers=len(layers), max_source_positions=variables["encoder/position_encodings/encodings"].shape[0])
    state = {f"{conv}.{p}": torch.from_numpy(variables[f"encoder/{conv}/{p}"])
             for conv in ("conv1", "conv2") for p in ("weight", "bias")}
    state["embed_positions.weight"] = torch.from_numpy(variables["encoder/position_encodings/encodings"])
    d = dims.d_model
    for i in range(dims.encoder_layers):
        base = f"encoder/layer_{i}/"
        for ours, theirs in _LAYER_KEYS.items():
            state[f"layers.{i}.{ours}"] = torch.from_numpy(variables[base + theirs])
        qkv_weight = torch.from_numpy(variables[base + "self_attention/linear_0/weight"])  # [3 d, d]
        qkv_bias = torch.from_numpy(variables[base + "self_attention/linear_0/bias"])  # [3 d]; k's part is 0
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"layers.{i}.self_attn.{proj}.weight"] = qkv_weight[j * d:(j + 1) * d]
            if proj != "k_proj":
                state[f"layers.{i}.self_attn.{proj}.bias"] = qkv_bias[j * d:(j + 1) * d]
    return dims, state


def read_ctranslate2_variables(file: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """CTranslate2's `model.bin` (binary version 6) -> {variable name: array} for names starting with `prefix`."""
    with open(file, "rb") as handle:
        def unpack(fmt: str):
            return struct.unpack("<" + fmt, handle.read(struct.calcsize("<" + fmt)))[0]

        def string() -> str:
            return handle.read(unpack("H"))[:-1].decode("utf-8")

        version = unpack("I")
        if version != 6:
            raise ValueError(f"{file}: CTranslate2 binary version {version}, only 6 is read")
        string(), unpack("I")  # spec name, revision
        variables = {}
        for _ in range(unpack("I")):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype_id, num_bytes = unpack("B"), unpack("I")
            if not name.startswith(prefix):
                handle.seek(num_bytes, 1)
                continue
            if dtype_id not in _CT2_DTYPES:
                raise ValueError(f"{file}: {name} has CTranslate2 dtype {dtype_id}; quantised models (int8, bf16) "
                                 f"are not read: use a float16 or float32 one")
            variables[name] = np.frombuffer(handle.read(num_bytes), _CT2_DTYPES[dtype_id]).reshape(shape).copy()
    return variables
