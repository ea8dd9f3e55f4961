"""Interpolate two model folders of one architecture, tensor by tensor: OUT = (1 - weight) * A + weight * B.

    python recipes/interpolate_weights.py A B --weight 0.5 --out OUT [--max-file-mib 16]

Why: when B was fine-tuned from A, the straight line between them is a knob between the two (WiSE-FT, Wortsman et
al. 2022). On the default model's codec it moves between the decoder trained with the mel loss alone (cleaner,
DNSMOS higher) and the same decoder after adversarial training (more words recognised, DNSMOS lower).

A and B: folders of `config.json` + weights (`model.safetensors`, or shards + `model.safetensors.index.json`), with
any sub-folders of the same kind (a codec's `semantic_tokenizer/`). Every folder of B must have its twin in A with the
same tensor names and shapes, and every other file must be byte-identical in both: a different config is a different
model, and mixing its weights would be meaningless. Floating tensors are mixed in float32 and stored in B's dtype;
a tensor equal in A and B is kept as it is, so frozen parts stay bit for bit; integer tensors must be equal.
OUT gets B's files and `interpolation.json` (A, B, weight, sha256 of every weights file read), which
`export_default_model.py` copies into its record of the part. Nothing is written unless the whole folder succeeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python recipes/interpolate_weights.py`: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.weights import INDEX_NAME, WEIGHTS_NAME, CheckpointError, atomic_folder, read_weights, write_weights
from recipes.shards import sha256_file

RECORD_NAME = "interpolation.json"
MIB = 2**20


def _is_weights(name: str) -> bool:
    return name.endswith(".safetensors") or name == INDEX_NAME


def _weight_folders(root: Path) -> list[Path]:
    """`root` and its sub-folders that hold weights, relative to `root`."""
    return sorted(folder.relative_to(root) for folder in [root, *root.rglob("*")] if folder.is_dir()
                  and ((folder / WEIGHTS_NAME).is_file() or (folder / INDEX_NAME).is_file()))


def _check_same_files(a: Path, b: Path) -> None:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and not _is_weights(p.name)}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and not _is_weights(p.name)}
    if files_a != files_b:
        raise CheckpointError(f"{a} and {b} hold different files: {sorted(map(str, files_a ^ files_b))[:10]}")
    differ = sorted(str(name) for name in files_b if (a / name).read_bytes() != (b / name).read_bytes())
    if differ:
        raise CheckpointError(f"{a} and {b} are not one architecture: these files differ: {', '.join(differ[:10])}")


def mix_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], weight: float,
              source: str) -> tuple[dict[str, torch.Tensor], int]:
    """(1 - weight) * A + weight * B per tensor, in B's dtype, and how many tensors differed."""
    if state_a.keys() != state_b.keys():
        raise CheckpointError(f"{source}: the two folders hold different tensors: "
                              f"{sorted(state_a.keys() ^ state_b.keys())[:10]}")
    mixed, differing = {}, 0
    for key, b in state_b.items():
        a = state_a[key]
        if a.shape != b.shape:
            raise CheckpointError(f"{source}: {key} is {tuple(a.shape)} in A and {tuple(b.shape)} in B")
        if torch.equal(a.to(b.dtype), b):
            mixed[key] = b
            continue
        if not b.is_floating_point():
            raise CheckpointError(f"{source}: the integer tensor {key} differs between A and B; it cannot be mixed")
        mixed[key] = ((1 - weight) * a.float() + weight * b.float()).to(b.dtype)
        differing += 1
    return mixed, differing


def interpolate(a: str | Path, b: str | Path, weight: float, out: str | Path, max_file_mib: float = 16) -> dict:
    """Write OUT = (1 - weight) * A + weight * B (see the module docstring); returns the record it writes."""
    a, b, out = Path(a), Path(b), Path(out)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--weight must be in [0, 1] (0 gives A, 1 gives B), got {weight}")
    for folder in (a, b):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder")
    folders, folders_a = _weight_folders(b), _weight_folders(a)
    if not folders:
        raise CheckpointError(f"{b} holds no {WEIGHTS_NAME} or {INDEX_NAME}")
    if folders_a != folders:
        raise CheckpointError(f"{a} and {b} hold weights in different folders: "
                              f"{sorted(map(str, set(folders_a) ^ set(folders)))}")
    _check_same_files(a, b)
    record = {"a": str(a), "b": str(b), "weight": weight, "formula": "(1 - weight) * a + weight * b",
              "sha256": {"a": {}, "b": {}}, "tensors_mixed": {}}
    with atomic_folder(out) as tmp:
        shutil.copytree(b, tmp, dirs_exist_ok=True, ignore=lambda _, names: [n for n in names if _is_weights(n)])
        for rel in folders:
            for side, root in (("a", a), ("b", b)):
                record["sha256"][side].update({str(p.relative_to(root)): sha256_file(p)
                                               for p in sorted((root / rel).iterdir()) if _is_weights(p.name)})
            state, differing = mix_state(read_weights(a / rel), read_weights(b / rel), weight, str(rel))
            write_weights(state, tmp / rel, int(max_file_mib * MIB))
            record["tensors_mixed"][str(rel)] = differing
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the folder at weight 0")
    parser.add_argument("b", type=Path, help="the folder at weight 1 (its files and dtype are kept)")
    parser.add_argument("--weight", type=float, required=True, help="0 gives A, 1 gives B")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-file-mib", type=float, default=16, help="shard weights files above this size")
    args = parser.parse_args(argv)
    try:
        record = interpolate(args.a, args.b, args.weight, args.out, args.max_file_mib)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out}: weight {args.weight}, tensors mixed {record['tensors_mixed']}")
    return record


if __name__ == "__main__":
    main()
