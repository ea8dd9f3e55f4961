"""Loading and saving SAC weights.

Two on-disk forms are read:
  * ours: a folder with `config.json` (a `SACConfig` as plain data) and `model.safetensors`, or, when saved with a
    shard size, `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` (the Hugging Face layout);
  * the released one: a `.pt` dict with `generator` / `ema_generator` (+ `discriminator`) and the released YAML.
Both end in one strict `load_state_dict`; a mismatch raises and lists the missing and unexpected keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .config import SACConfig
from .model import SAC
from .weights import CheckpointError, atomic_folder, read_weights, write_weights

CONFIG_NAME = "config.json"
SEMANTIC_CODEBOOK_KEY = "semantic_encoder.codebook.weight"
# Keys of released checkpoints that carry no inference or training state of SAC itself: ema_pytorch
# bookkeeping, the frozen ERes2Net teacher, and the tokenizer's EMA statistics.
_BOOKKEEPING_KEYS = {"initted", "step", "semantic_encoder.ema_count", "semantic_encoder.ema_weight"}
_BOOKKEEPING_PREFIXES = ("speaker_encoder.",)


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        lines = [f"checkpoint {source} does not match the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = " ..." if len(keys) > 20 else ""
                lines.append(f"  {len(keys)} {title} keys: " + ", ".join(keys[:20]) + more)
        for k in wrong_shape[:20]:
            lines.append(f"  shape mismatch {k}: checkpoint {tuple(state[k].shape)} "
                         f"vs model {tuple(expected[k].shape)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def _finish(model: SAC, dtype: torch.dtype, device: str | torch.device) -> SAC:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    return model.to(device=device, dtype=dtype).eval()


# ---- our folder format ---------------------------------------------------------------------------------------
def save_pretrained(model: SAC, folder: str | Path, *, dtype: torch.dtype | None = None,
                    max_shard_bytes: int | None = None) -> Path:
    """Write `config.json` + the weights into `folder`, atomically (a crash leaves no half folder). Weights over
    `max_shard_bytes` are split into shards at tensor boundaries, with an index (repositories with a file-size cap)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        model.config.save(tmp / CONFIG_NAME)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in model.state_dict().items()}
        write_weights(state, tmp, max_shard_bytes)
    return folder


def load_folder(folder: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> SAC:
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} is not a SAC model folder: {CONFIG_NAME} is missing")
    model = SAC(SACConfig.load(folder / CONFIG_NAME))
    load_state_dict_strict(model, read_weights(folder), folder)
    return _finish(model, dtype, device)


# ---- the released form ---------------------------------------------------------------------------------------
def released_state_dict(ckpt_path: str | Path, *, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """The generator weights of a released `.pt`, EMA preferred (as released inference does), cleaned of
    bookkeeping keys. Read with `weights_only=True`: no arbitrary pickle is ever executed."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pickle refusing unknown globals, truncated file, not a torch file
        raise CheckpointError(f"cannot read {ckpt_path} as a weights-only torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{ckpt_path} holds a {type(ckpt).__name__}, expected a dict of weights")
    if prefer_ema and "ema_generator" in ckpt:
        state = ckpt["ema_generator"]
    elif "generator" in ckpt:
        state = ckpt["generator"]
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state = ckpt  # a bare state dict
    else:
        raise CheckpointError(f"{ckpt_path} has neither 'ema_generator' nor 'generator' (keys: {sorted(ckpt)[:10]})")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("ema_model.", "module."):
            key = key.removeprefix(prefix)
        if key in _BOOKKEEPING_KEYS or key.startswith(_BOOKKEEPING_PREFIXES):
            continue
        cleaned[key] = value
    return cleaned


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codec config {path} not found")
    with path.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def tokenizer_codebook(tokenizer_dir: str | Path) -> torch.Tensor:
    """The VQ codebook [vocab, dim] of a GLM-4-Voice tokenizer folder (SAC's semantic embedding table)."""
    files = sorted(Path(tokenizer_dir).glob("model*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            if "model.encoder.codebook.weight" in f.keys():
                return f.get_tensor("model.encoder.codebook.weight")
    raise FileNotFoundError(f"no model.encoder.codebook.weight in {tokenizer_dir}/model*.safetensors")


def config_from_state(state: dict[str, torch.Tensor]) -> SACConfig:
    """The released full-size layout a checkpoint was trained with, told apart by its acoustic encoder depth."""
    vocab = state[SEMANTIC_CODEBOOK_KEY].shape[0]
    if "acoustic_encoder.block.7.bias" in state:
        return SACConfig.layout_37_5(semantic_vocab_size=vocab)
    return SACConfig.layout_62_5(semantic_vocab_size=vocab)


def load_released(ckpt_path: str | Path, yaml_path: str | Path | None = None, *,
                  semantic_tokenizer: str | Path | None = None, prefer_ema: bool = True,
                  dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> SAC:
    """Build SAC from the released YAML and load a released `.pt` strictly.

    Without a YAML the layout is one of the two released full-size ones (`SACConfig.layout_37_5/62_5`, identical
    to the released configs), picked from the checkpoint's keys. The semantic codebook comes from the
    checkpoint; if a stripped checkpoint lacks it, from the tokenizer folder (`semantic_tokenizer`).
    Training-only heads are built only if the checkpoint carries them.
    """
    state = released_state_dict(ckpt_path, prefer_ema=prefer_ema)
    if SEMANTIC_CODEBOOK_KEY not in state:
        if semantic_tokenizer is None:
            raise CheckpointError(f"{ckpt_path} has no {SEMANTIC_CODEBOOK_KEY}; pass the GLM-4-Voice tokenizer "
                                  "folder (--semantic-tokenizer) to take the codebook from it")
        state[SEMANTIC_CODEBOOK_KEY] = tokenizer_codebook(semantic_tokenizer)
    if yaml_path is None:
        config = config_from_state(state)
    else:
        config = SACConfig.from_released_yaml(read_yaml(yaml_path),
                                              semantic_vocab_size=state[SEMANTIC_CODEBOOK_KEY].shape[0])
    if not any(k.startswith("semantic_decoder.") for k in state):
        config.semantic_decoder = None
    if not any(k.startswith("speaker_predictor.") for k in state):
        config.speaker_predictor = None
    model = SAC(config)
    load_state_dict_strict(model, state, ckpt_path)
    return _finish(model, dtype, device)


def convert_released(ckpt_path: str | Path, yaml_path: str | Path | None, out_dir: str | Path, *,
                     semantic_tokenizer: str | Path | None = None, training_heads: bool = True,
                     dtype: torch.dtype | None = None) -> Path:
    """Released `.pt` + YAML -> our folder format (optionally without the training-only heads)."""
    model = load_released(ckpt_path, yaml_path, semantic_tokenizer=semantic_tokenizer)
    if not training_heads:
        model.config = model.config.without_training_heads()
        model.semantic_decoder = model.speaker_predictor = None
    return save_pretrained(model, out_dir, dtype=dtype)


def is_hub_id(source: str | Path) -> bool:
    """'owner/name' that is not a local path: a Hugging Face hub repository id."""
    text = str(source)
    return not Path(text).exists() and text.count("/") == 1 and not text.startswith((".", "/"))


def load_sac(source: str | Path, *, config: str | Path | None = None, semantic_tokenizer: str | Path | None = None,
             dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> SAC:
    """One entry point: our folder, a released `.pt` (+ its YAML as `config`), or a Hugging Face hub id."""
    path = Path(source)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return load_folder(path, dtype=dtype, device=device)
    if path.is_file():
        return load_released(path, config, semantic_tokenizer=semantic_tokenizer, dtype=dtype, device=device)
    if path.exists():
        raise FileNotFoundError(f"{path} is neither a SAC model folder (config.json + model.safetensors) "
                                "nor a checkpoint file")
    if is_hub_id(source):
        return _load_from_hub(str(source), config=config, semantic_tokenizer=semantic_tokenizer,
                              dtype=dtype, device=device)
    raise FileNotFoundError(f"codec {source} not found")


def _load_from_hub(repo_id: str, **kwargs: Any) -> SAC:
    from huggingface_hub import snapshot_download

    local = Path(snapshot_download(repo_id))
    if (local / CONFIG_NAME).is_file():
        return load_folder(local, dtype=kwargs["dtype"], device=kwargs["device"])
    checkpoints, yamls = sorted(local.glob("*.pt")), sorted(local.glob("*.yaml"))
    config = kwargs.pop("config") or (yamls[0] if len(yamls) == 1 else None)
    if len(checkpoints) != 1:
        raise CheckpointError(f"hub repo {repo_id} has {len(checkpoints)} .pt files; download it and pass "
                              "the checkpoint (and --codec-config) explicitly")
    return load_released(checkpoints[0], config, **kwargs)
