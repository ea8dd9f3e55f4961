"""Codec tokens of a corpus on disk: immutable shards, a shard index and the codec they came from.

A token folder (what `recipes/tokenize_corpus.py` writes):

    meta.json                  format, the codec (layout, k, frame rates, vocab sizes, path, fingerprint), the plan
    shard-00000.safetensors    tokens of manifest rows [0, shard_size): see below
    shard-00000.json           its sidecar: one record per utterance (id, offsets, lengths, text, speaker, duration,
                               the manifest's other fields) and the rows it skipped, with reasons
    ...
    index.jsonl                every sidecar's utterances in shard order, one line each, plus "shard"
    report.json                skipped files and throughput (tokenize_corpus.py)

Why this layout. A shard holds two flat int32 arrays, `semantic` [sum Ts] and `acoustic` [sum k·Ts], the utterances'
streams concatenated in manifest order, and their `*_offsets` [n + 1] int64. Reading an utterance is two slices of a
memory-mapped file (safetensors reads only the header, then mmaps): random access costs O(1) with no parsing and no
per-utterance files to open (millions of tiny .npy files are what file systems and object stores handle worst). The
two streams stay separate rather than interleaved because LM training reads only `semantic`; int32 holds any vocab
and halves int64's bytes. safetensors over .npz: no zip to walk, no pickle, a header with string metadata.

Crash safety. Shards never change once written. A shard is written as its sidecar, then its `.safetensors`, each to a
temporary file renamed into place, so a `.safetensors` present means its sidecar is complete too; its metadata carries
the utterance count and a hash of the ids, so a sidecar from another attempt is detected. Any shard without both is
simply redone. The index is derived data: `build_index` (or `python recipes/shards.py DIR`) rebuilds it from the
sidecars at any time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

FORMAT = "sac-tts-token-shards/1"
META_NAME, INDEX_NAME = "meta.json", "index.jsonl"
TOKEN_DTYPE = np.int32
OPEN_SHARDS = 64  # memory maps kept open by a reader; a corpus can have more shards than the fd limit


class ShardError(ValueError):
    """A token folder that is missing, incomplete or made for something else."""


class ShardItem(NamedTuple):
    row: dict[str, Any]  # the index line: id, shard, offsets, text, speaker, duration, other manifest fields
    semantic: np.ndarray  # [Ts] int64
    acoustic: np.ndarray  # [k·Ts] int64


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def _ids_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


# ---- atomic files ------------------------------------------------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, flush it to disk, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())


def remove_partial(folder: Path, stems: set[str]) -> int:
    """Delete temporary files a killed writer left for the shards `stems`; returns how many."""
    leftovers = [p for p in folder.glob(".shard-*.tmp") if p.name[1:].split(".")[0] in stems]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


# ---- codec identity ----------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def codec_fingerprint(codec_config: dict, tokenizer_config: dict | None) -> str:
    """sha256 of the codec's and the semantic tokenizer's configs as canonical JSON."""
    blob = json.dumps({"codec": codec_config, "semantic_tokenizer": tokenizer_config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _weights_hash(folder: Path) -> str | None:
    weights = folder / "model.safetensors"
    return sha256_file(weights) if folder.is_dir() and weights.is_file() else None


def codec_meta(codec: Any, source: str | Path) -> dict[str, Any]:
    """meta.json's "codec" section for a loaded `SpeechCodec` read from `source`."""
    cfg = codec.model.config
    tokenizer = asdict(codec.tokenizer.config) if codec.tokenizer is not None else None
    return {"path": str(Path(source).resolve()) if Path(source).exists() else str(source), "layout": cfg.layout,
            "acoustic_per_semantic": cfg.acoustic_per_semantic, "sample_rate": cfg.sample_rate,
            "semantic_frame_rate_hz": cfg.semantic_frame_rate_hz, "acoustic_frame_rate_hz": cfg.acoustic_frame_rate_hz,
            "semantic_vocab_size": cfg.semantic_vocab_size, "acoustic_vocab_size": cfg.codebook_size,
            "config_sha256": codec_fingerprint(cfg.to_dict(), tokenizer),
            "weights_sha256": _weights_hash(Path(source))}


def folder_fingerprint(folder: str | Path) -> tuple[str, str | None]:
    """(config_sha256, weights_sha256) of a codec folder, without loading its weights."""
    from codec.config import SACConfig
    from codec.semantic_tokenizer import SemanticTokenizerConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ShardError(f"{folder} is not a codec folder (no config.json)")
    tokenizer_json = folder / "semantic_tokenizer" / "config.json"
    tokenizer = (asdict(SemanticTokenizerConfig.from_hf_config(json.loads(tokenizer_json.read_text())))
                 if tokenizer_json.is_file() else None)
    return codec_fingerprint(SACConfig.load(folder / "config.json").to_dict(), tokenizer), _weights_hash(folder)


def check_codec(meta: dict[str, Any], expected: str, where: str) -> None:
    """Refuse tokens unless they came from `expected`: a codec folder, or its config_sha256."""
    theirs = meta["codec"]
    if Path(expected).is_dir():
        config_hash, weights_hash = folder_fingerprint(expected)
    else:
        config_hash, weights_hash = expected, None
    if theirs["config_sha256"] != config_hash or (weights_hash and theirs.get("weights_sha256")
                                                  and theirs["weights_sha256"] != weights_hash):
        raise ShardError(f"{where} holds tokens of the codec at {theirs['path']} (config {theirs['config_sha256'][:12]}"
                         f", weights {str(theirs.get('weights_sha256'))[:12]}), not of {expected} (config "
                         f"{config_hash[:12]}, weights {str(weights_hash)[:12]}); tokenize with that codec or change "
                         "data.codec")


# ---- writing -----------------------------------------------------------------------------------------------------
def write_shard(folder: Path, index: int, utterances: list[tuple[dict, np.ndarray, np.ndarray]],
                skipped: list[dict], rows: tuple[int, int]) -> None:
    """Write shard `index` of manifest rows [rows): (fields, semantic [Ts], acoustic [k·Ts]) per utterance kept and
    one record per row skipped. The sidecar goes first: a present `.safetensors` vouches for it."""
    stem = shard_stem(index)
    semantic_lengths = [len(s) for _, s, _ in utterances]
    acoustic_lengths = [len(a) for _, _, a in utterances]
    semantic_offsets = np.concatenate([[0], np.cumsum(semantic_lengths, dtype=np.int64)]).astype(np.int64)
    acoustic_offsets = np.concatenate([[0], np.cumsum(acoustic_lengths, dtype=np.int64)]).astype(np.int64)
    records = [{**fields, "semantic_offset": int(semantic_offsets[i]), "semantic_length": semantic_lengths[i],
                "acoustic_offset": int(acoustic_offsets[i]), "acoustic_length": acoustic_lengths[i]}
               for i, (fields, _, _) in enumerate(utterances)]
    ids = [r["id"] for r in records]
    write_json(folder / f"{stem}.json", {"format": FORMAT, "shard": f"{stem}.safetensors", "rows": list(rows),
                                        "utterances": records, "skipped": skipped})
    empty = np.zeros(0, TOKEN_DTYPE)  # a shard of skipped rows only still gets its (empty) arrays
    tensors = {"semantic": np.concatenate([empty] + [s for _, s, _ in utterances]).astype(TOKEN_DTYPE),
               "acoustic": np.concatenate([empty] + [a for _, _, a in utterances]).astype(TOKEN_DTYPE),
               "semantic_offsets": semantic_offsets, "acoustic_offsets": acoustic_offsets}
    metadata = {"format": FORMAT, "count": str(len(ids)), "ids_sha256": _ids_hash(ids)}
    write_atomic(folder / f"{stem}.safetensors", save(tensors, metadata=metadata))


def read_sidecar(folder: Path, index: int) -> dict | None:
    """The sidecar of a complete shard, or None when the shard is missing, partial or inconsistent (redo it)."""
    stem = shard_stem(index)
    shard, sidecar = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    if not (shard.is_file() and sidecar.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
        with safe_open(str(shard), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # noqa: BLE001 - bad JSON or a damaged safetensors header (its own error type): redo it
        return None
    ids = [u["id"] for u in record.get("utterances", [])]
    if metadata.get("count") != str(len(ids)) or metadata.get("ids_sha256") != _ids_hash(ids):
        return None
    return record


def build_index(folder: str | Path) -> Path:
    """(Re)build index.jsonl from the sidecars of every planned shard; raises ShardError if any is not complete."""
    folder = Path(folder)
    meta = read_meta(folder)
    lines, missing = [], []
    for index in range(meta["plan"]["num_shards"]):
        record = read_sidecar(folder, index)
        if record is None:
            missing.append(shard_stem(index))
            continue
        lines += [json.dumps({"shard": record["shard"], **u}, ensure_ascii=False) for u in record["utterances"]]
    if missing:
        raise ShardError(f"{folder}: {len(missing)} shard(s) not complete ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}); run tokenize_corpus.py again to finish them")
    path = folder / INDEX_NAME
    write_atomic(path, "".join(line + "\n" for line in lines).encode())
    return path


def skipped_rows(folder: Path, num_shards: int) -> list[dict]:
    """Every complete shard's skipped rows, in manifest order."""
    return [s for i in range(num_shards) if (r := read_sidecar(folder, i)) is not None for s in r["skipped"]]


# ---- reading -----------------------------------------------------------------------------------------------------
def shard_folder(source: str | Path) -> Path:
    """The token folder that `source` (the folder or its index.jsonl) names."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def is_shard_source(path: str | Path) -> bool:
    """True for a token folder or its index.jsonl (what training's train_manifest may name besides a JSONL)."""
    path = Path(path)
    return (path.is_dir() or path.name == INDEX_NAME) and (shard_folder(path) / META_NAME).is_file()


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_NAME
    if not path.is_file():
        raise ShardError(f"{folder} is not a token folder: it has no {META_NAME} (see recipes/tokenize_corpus.py)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ShardError(f"{path}: format {meta.get('format')!r}, this code reads {FORMAT!r}")
    return meta


class TokenShardReader:
    """The utterances of a token folder: `get(id) -> (semantic, acoustic)` (int64), `len`, `ids`, and iteration
    (`ShardItem`s in index order, one whole shard read at a time: the fast way to load a corpus)."""

    def __init__(self, source: str | Path):
        self.folder = shard_folder(source)
        self.meta = read_meta(self.folder)
        self.k: int = self.meta["codec"]["acoustic_per_semantic"]
        self.index_path = self.folder / INDEX_NAME
        if not self.index_path.is_file():
            raise ShardError(f"{self.folder} has no {INDEX_NAME}: tokenization has not finished (run it again to "
                             "finish), or rebuild it from complete shards with "
                             f"`python recipes/shards.py {self.folder}`")
        with self.index_path.open(encoding="utf-8") as lines:
            self.rows: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
        self._position = {row["id"]: i for i, row in enumerate(self.rows)}
        self._open: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, utterance_id: str) -> bool:
        return utterance_id in self._position

    @property
    def ids(self) -> list[str]:
        return [row["id"] for row in self.rows]

    def row(self, utterance_id: str) -> dict[str, Any]:
        try:
            return self.rows[self._position[utterance_id]]
        except KeyError:
            raise KeyError(f"no utterance {utterance_id!r} in {self.index_path}") from None

    def _handle(self, shard: str) -> Any:
        if shard in self._open:
            self._open.move_to_end(shard)
        else:
            self._open[shard] = safe_open(str(self.folder / shard), framework="numpy")
            if len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        return self._open[shard]

    def get(self, utterance_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(semantic [Ts], acoustic [k·Ts]) int64 of one utterance."""
        row = self.row(utterance_id)
        handle = self._handle(row["shard"])
        s, a = row["semantic_offset"], row["acoustic_offset"]
        return (handle.get_slice("semantic")[s: s + row["semantic_length"]].astype(np.int64),
                handle.get_slice("acoustic")[a: a + row["acoustic_length"]].astype(np.int64))

    def __iter__(self) -> Iterator[ShardItem]:
        return self.items()

    def items(self, acoustic: bool = True) -> Iterator[ShardItem]:
        """Every utterance in index order, reading one whole shard at a time; acoustic=False leaves that stream
        empty (what the LM needs: a third of the bytes)."""
        loaded: tuple[str, dict[str, np.ndarray]] | None = None
        empty = np.zeros(0, np.int64)
        for row in self.rows:
            if loaded is None or loaded[0] != row["shard"]:
                with safe_open(str(self.folder / row["shard"]), framework="numpy") as handle:
                    names = ["semantic", "acoustic"] if acoustic else ["semantic"]
                    loaded = (row["shard"], {name: handle.get_tensor(name) for name in names})
            arrays, s, a = loaded[1], row["semantic_offset"], row["acoustic_offset"]
            yield ShardItem(row, arrays["semantic"][s: s + row["semantic_length"]].astype(np.int64),
                            arrays["acoustic"][a: a + row["acoustic_length"]].astype(np.int64) if acoustic else empty)


def main(argv: list[str] | None = None, print_: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description="Rebuild a token folder's index.jsonl from its shards and sidecars")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    path = build_index(args.folder)
    reader = TokenShardReader(args.folder)
    hours = sum(row.get("duration") or 0 for row in reader.rows) / 3600
    print_(f"{path}: {len(reader)} utterances, {hours:.3f} h, {reader.meta['plan']['num_shards']} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
