"""Data machinery the recipes share: JSONL manifests with `file:line` errors, token files, held-out splits and
length-bucketed batches that resume mid-epoch.

Datasets here are map-style and addressed by keys that their `plan_epoch(epoch)` draws from (seed, epoch, index),
so an item is a pure function of its key: no state shared between the sampler, the dataset and DataLoader workers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from recipes.shards import TokenShardReader, check_codec, is_shard_source, read_meta, shard_folder

# Independent random streams under one seed; the numbers are part of what makes a run reproducible: keep them.
PLAN_STREAM, BATCH_STREAM, EVAL_SPLIT_STREAM = 1, 2, 3

Key = Hashable
T = TypeVar("T")


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message starts with `file:line:`."""


@dataclass
class ManifestDataConfig:
    """The data settings of every recipe; a recipe's DataConfig adds its own after these."""

    # a JSONL manifest or a token folder, or a list of them read as one corpus
    train_manifest: str | list[str] = field(default="", metadata={"sources": True})
    eval_manifest: str | list[str] | None = field(default=None, metadata={"sources": True})
    eval_fraction: float = 0.0  # held out of the train manifest when eval_manifest is null; 0 = no eval
    max_tokens: int = 16384  # per micro-batch per process, padding counted
    num_workers: int = 2
    codec: str | None = None  # a codec folder (or its config_sha256): token folders of any other codec are refused

    def __post_init__(self) -> None:
        if not sources(self.train_manifest):
            raise ValueError("data.train_manifest is required (a JSONL manifest, see recipes/README.md)")
        for name in ("train_manifest", "eval_manifest"):
            if any(not isinstance(source, str) or not source for source in sources(getattr(self, name))):
                raise ValueError(f"data.{name} must be a path or a list of paths, got {getattr(self, name)!r}")
        if self.eval_manifest is None and not 0 <= self.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must lie in [0, 1), got {self.eval_fraction}")


def sources(manifest: str | list[str] | None) -> list[str]:
    """The manifests and token folders that a train_manifest or eval_manifest setting names."""
    if not manifest:
        return []
    return [manifest] if isinstance(manifest, str) else list(manifest)


# ---- manifests ---------------------------------------------------------------------------------------------------
def read_jsonl_manifest(path: str | Path, parse: Callable[[dict, Path], T]) -> list[T]:
    """Every line of a JSONL manifest through `parse(row, manifest folder)`, which raises ManifestError without a
    location. Checks what every manifest shares: one JSON object per line with a unique non-empty string `id`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    items: list[T] = []
    first_seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = _json_object(line)
                item = parse(row, path.parent)
            except ManifestError as error:
                raise ManifestError(f"{path}:{line_no}: {error}") from None
            if row["id"] in first_seen:
                raise ManifestError(f"{path}:{line_no}: duplicate id {row['id']!r} (first on line "
                                    f"{first_seen[row['id']]}); ids must be unique")
            first_seen[row["id"]] = line_no
            items.append(item)
    if not items:
        raise ManifestError(f"{path}: no utterances (the file is empty)")
    return items


def _json_object(line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ManifestError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"expected a JSON object per line, got {type(row).__name__}")
    require_text(row, "id")
    return row


def require_text(row: dict, field: str) -> str:
    if not isinstance(row.get(field), str) or not row[field].strip():
        raise ManifestError(f"{field!r} must be a non-empty string, got {row.get(field)!r}")
    return row[field]


def speaker_of(row: dict) -> str | None:
    speaker = row.get("speaker")
    if speaker is not None and (isinstance(speaker, bool) or not isinstance(speaker, (str, int))):
        raise ManifestError(f"'speaker' must be a string (or null), got {speaker!r}")
    return None if speaker is None else str(speaker)


def id_list(row: dict, field: str) -> np.ndarray:
    """A JSON list of integer ids -> [N] int64."""
    values = row[field]
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ManifestError(f"{field!r} must be a list of integer ids")
    return np.asarray(values, dtype=np.int64)


def token_file(row: dict, field: str, root: Path) -> np.ndarray:
    """The 1-D integer `.npy` that `row[field]` names, relative to the manifest's folder."""
    if not isinstance(row[field], str):
        raise ManifestError(f"{field!r} must be a path string, got {row[field]!r}")
    file = root / row[field]
    if not file.is_file():
        raise ManifestError(f"{field} {file} does not exist")
    try:
        tokens = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read {file} as .npy: {error}") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ManifestError(f"{file} holds a {tokens.dtype} array of shape {tokens.shape}; expected a 1-D integer "
                            "array of token ids")
    return tokens


def read_token_folder(source: str | Path, parse: Callable[[dict, np.ndarray, np.ndarray], T], *, k: int | None = None,
                      semantic_vocab_size: int | None = None, acoustic_vocab_size: int | None = None,
                      acoustic: bool = True) -> list[T]:
    """Every utterance of a token folder (recipes/shards.py) through `parse(index row, semantic, acoustic)`, which
    raises ManifestError without a location (acoustic=False: the acoustic arrays are not read, and empty). The codec
    in its meta.json must have `k` acoustic tokens per semantic token and vocabularies that fit the model's."""
    reader = TokenShardReader(source)
    codec = reader.meta["codec"]
    problems = []
    if k is not None and codec["acoustic_per_semantic"] != k:
        problems.append(f"k={codec['acoustic_per_semantic']} acoustic tokens per semantic token, the model takes {k}")
    problems += [f"{codec[name]} {name.split('_')[0]} ids, more than the model's {size}"
                 for name, size in (("semantic_vocab_size", semantic_vocab_size),
                                    ("acoustic_vocab_size", acoustic_vocab_size))
                 if size is not None and codec[name] > size]
    if problems:
        raise ManifestError(f"{reader.folder}: its codec ({codec['path']}, layout {codec['layout']}) has "
                            f"{'; '.join(problems)}: tokens of another codec")
    items: list[T] = []
    for line_no, (row, semantic, acoustic_ids) in enumerate(reader.items(acoustic), start=1):
        try:
            items.append(parse(row, semantic, acoustic_ids))
        except ManifestError as error:
            raise ManifestError(f"{reader.index_path}:{line_no}: {error}") from None
    if not items:
        raise ManifestError(f"{reader.index_path}: no utterances")
    return items


def split_interleaved(tokens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The codec's token file `s0, a0..a(k-1), s1, ...` [Ts·(1+k)] -> (semantic [Ts], acoustic [k·Ts])."""
    if len(tokens) % (k + 1):
        raise ManifestError(f"{len(tokens)} interleaved tokens is not a whole number of groups of {k + 1} "
                            f"(1 semantic + {k} acoustic); is the number of acoustic tokens per semantic token right "
                            "for this codec?")
    groups = tokens.reshape(-1, k + 1)
    return groups[:, 0], groups[:, 1:].reshape(-1)


def check_ids(name: str, tokens: np.ndarray, vocab_size: int | None, hint: str = "") -> None:
    if len(tokens) == 0:
        raise ManifestError(f"no {name} tokens")
    if vocab_size is not None and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ManifestError(f"{name} ids must lie in [0, {vocab_size - 1}], found {tokens.min()} .. {tokens.max()}"
                            f"{hint}")


def train_and_eval(data: ManifestDataConfig, read: Callable[[str], list[T]], seed: int) -> tuple[list[T], list[T]]:
    """(train, eval) utterances: the eval manifest, or a seeded `eval_fraction` of the train manifest, or none.
    Several manifests of one setting are read as one corpus, in order."""
    everything = sources(data.train_manifest) + sources(data.eval_manifest)
    if data.codec:
        check_token_codec(everything, data.codec)
    else:
        check_one_codec(everything)
    train = read_sources(sources(data.train_manifest), read)
    if data.eval_manifest:
        return train, read_sources(sources(data.eval_manifest), read)
    if data.eval_fraction > 0:
        return split_eval(train, data.eval_fraction, seed)
    return train, []


def read_sources(paths: list[str], read: Callable[[str], list[T]]) -> list[T]:
    items: list[T] = []
    origin: dict[str, str] = {}
    for path in paths:
        for item in read(path):
            item_id = item.id  # type: ignore[attr-defined]  # every recipe's Utterance has one
            if item_id in origin:
                raise ManifestError(f"utterance id {item_id!r} is in both {origin[item_id]} and {path}: ids must be "
                                    "unique across the manifests of a run (prefix one corpus's ids)")
            origin[item_id] = path
            items.append(item)
    return items


def check_token_codec(paths: Sequence[str], codec: str) -> None:
    """Raise unless every token folder among `paths` was made by `codec` (JSONL manifests say nothing of it)."""
    for path in paths:
        if is_shard_source(path):
            check_codec(read_meta(shard_folder(path)), codec, str(path))


def check_one_codec(paths: Sequence[str]) -> None:
    """Raise when the token folders among `paths` come from different codecs (config or weights): their ids would
    mean different things. data.codec set to a config_sha256 accepts any checkpoint of that one config."""
    made_by: dict[tuple[str, str | None], str] = {}
    for path in filter(is_shard_source, paths):
        codec = read_meta(shard_folder(path))["codec"]
        made_by.setdefault((codec["config_sha256"], codec.get("weights_sha256")), f"{path} ({codec['path']})")
    if len(made_by) > 1:
        raise ManifestError("token folders of different codecs: " + "; ".join(made_by.values()) + ". Tokenize them "
                            "with one codec, or, if they differ only in weights that leave the ids you train on as "
                            "they were (a frozen encoder side), set data.codec to their common config_sha256")


def describe_dropped(dropped: dict[str, list[str]]) -> str:
    """One line per reason an example set dropped utterances (reason -> ids), '' when nothing was dropped."""
    return "\n".join(f"dropped {len(ids)} utterance(s): {reason} (e.g. {', '.join(ids[:5])})"
                     for reason, ids in dropped.items() if ids)


def split_eval(utterances: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, eval): a seeded random `fraction` of the utterances held out, order otherwise kept."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval_fraction must lie in (0, 1), got {fraction}")
    n_eval = max(1, round(fraction * len(utterances)))
    if n_eval >= len(utterances):
        raise ValueError(f"eval_fraction {fraction} of {len(utterances)} utterances leaves nothing to train on")
    held = set(np.random.default_rng([seed, EVAL_SPLIT_STREAM]).permutation(len(utterances))[:n_eval].tolist())
    return ([u for i, u in enumerate(utterances) if i not in held],
            [u for i, u in enumerate(utterances) if i in held])


# ---- voice prompts ----------------------------------------------------------------------------------------------
def group_by_speaker(speakers: Sequence[str | None], usable: Sequence[int]) -> dict[str, list[int]]:
    """speaker -> its usable utterance indices (ascending): the candidates for each other's voice prompts."""
    mates: dict[str, list[int]] = {}
    for i in usable:
        if speakers[i] is not None:
            mates.setdefault(speakers[i], []).append(i)
    return mates


def other_utterance(i: int, mates: list[int], u: float) -> int:
    """Uniform over the other utterances of i's speaker (`mates` holds i and at least one more), from u in [0, 1)."""
    j = int(u * (len(mates) - 1))
    return mates[j] if mates[j] != i else mates[-1]  # i's own slot stands in for the last one


# ---- batching ----------------------------------------------------------------------------------------------------
class BucketedDataset(Protocol):
    max_length: int  # the longest example, in the unit of max_tokens

    def __len__(self) -> int: ...

    def plan_epoch(self, epoch: int) -> list[Key]: ...  # one key per example, drawn from (seed, epoch, index)

    def length(self, key: Key) -> int: ...


class LengthBucketBatchSampler:
    """Batches of keys of similar length with at most `max_tokens` tokens per batch, padding counted (B · T_max).

    Each epoch sorts the examples by length (random tie-break), cuts greedy batches and shuffles the batch order,
    all from (seed, epoch). With several processes, rank r takes batches r, r + W, ... and the surplus of the last
    round is dropped, so every rank runs the same number of steps. `set_epoch(epoch, skip)` resumes mid-epoch.
    """

    def __init__(self, dataset: BucketedDataset, max_tokens: int, seed: int, rank: int = 0, num_replicas: int = 1):
        if max_tokens < dataset.max_length:
            raise ValueError(f"max_tokens {max_tokens} is below the longest allowed example ({dataset.max_length}); "
                             "raise data.max_tokens or lower the longest example")
        self.dataset, self.max_tokens, self.seed = dataset, max_tokens, seed
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.skip = 0, 0
        self._cache: tuple[int, list[list[Key]]] | None = None

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_batches(self, epoch: int) -> list[list[Key]]:
        """Every rank's batches of an epoch, in the order they are consumed."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        keys = self.dataset.plan_epoch(epoch)
        rng = np.random.default_rng([self.seed, BATCH_STREAM, epoch])
        lengths = np.array([self.dataset.length(k) for k in keys])
        order = np.lexsort((rng.random(len(keys)), lengths))  # by length, ties in random order
        batches: list[list[Key]] = []
        for index in order.tolist():  # ascending, so the newest example is the batch's longest
            if batches and (len(batches[-1]) + 1) * lengths[index] <= self.max_tokens:
                batches[-1].append(keys[index])
            else:
                batches.append([keys[index]])
        batches = [batches[b] for b in rng.permutation(len(batches)).tolist()]
        self._cache = (epoch, batches)
        return batches

    def rank_batches(self, epoch: int) -> list[list[Key]]:
        batches = self.epoch_batches(epoch)
        whole = len(batches) // self.num_replicas * self.num_replicas
        return batches[self.rank:whole:self.num_replicas]

    def __len__(self) -> int:
        return max(0, len(self.rank_batches(self.epoch)) - self.skip)

    def __iter__(self) -> Iterator[list[Key]]:
        yield from self.rank_batches(self.epoch)[self.skip:]


def padded_tokens(batch: list[Key], dataset: BucketedDataset) -> int:
    """B · T_max of a batch: what `max_tokens` bounds."""
    return len(batch) * max(dataset.length(k) for k in batch)


def eval_rounds(batches: list[list[Key]], rank: int, num_replicas: int) -> list[tuple[int, list[Key], bool]]:
    """This rank's eval batches as (index in `batches`, keys, counts); ranks short of a full last round repeat a
    batch that does not count, because FSDP/DeepSpeed forwards are collective and every rank must run as many."""
    rounds = math.ceil(len(batches) / num_replicas)
    picks = [min(r * num_replicas + rank, len(batches) - 1) for r in range(rounds)]
    return [(index, batches[index], r * num_replicas + rank < len(batches)) for r, index in enumerate(picks)]
