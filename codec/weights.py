"""A model folder's safetensors weights: one file, or shards under a file-size cap in the Hugging Face layout
(`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`), for repositories that cap file sizes."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that does not match the model it is loaded into."""


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """A fresh folder beside `folder` to fill: it replaces `folder` when the block ends and is removed if the block
    raises, so a crash leaves no half-written model folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_weights(state: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int | None) -> None:
    """One `model.safetensors`, or shards split at tensor boundaries when the state exceeds `max_shard_bytes`."""
    # one metadata key: safetensors writes a map in random order, so two keys make the same weights hash differently
    metadata = {"format": "pt"}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, str(folder / WEIGHTS_NAME), metadata=metadata)
        return
    shards, size = [{}], 0
    for key, value in state.items():  # greedy, in state order; a tensor over the limit gets a shard of its own
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards, size = [*shards, {}], 0
        shards[-1][key], size = value, size + nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, name))
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                indent=2) + "\n")


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a SAC model folder, from `model.safetensors` or from the shards its index names."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file():
        return load_file(str(folder / WEIGHTS_NAME))
    if not (folder / INDEX_NAME).is_file():
        raise FileNotFoundError(f"{folder} is not a SAC model folder: it has neither {WEIGHTS_NAME} nor {INDEX_NAME}")
    weight_map = json.loads((folder / INDEX_NAME).read_text())["weight_map"]
    state = {}
    for name in sorted(set(weight_map.values())):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / INDEX_NAME} names the shard {name}, which is missing")
        state.update(load_file(str(folder / name)))
    if state.keys() != weight_map.keys():
        raise CheckpointError(f"the shards in {folder} do not hold the tensors {INDEX_NAME} lists: "
                              f"{sorted(state.keys() ^ weight_map.keys())[:10]}")
    return state
