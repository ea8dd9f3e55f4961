"""Data for the semantic LM: manifests, a map-style dataset of training examples, length-bucketed batches.

Manifest: JSONL, one utterance per line:

    {"id": "a1", "text": "Hello there.", "speaker": "alice", "semantic": [12, 873, ...]}
    {"id": "a2", "text": "...", "speaker": "alice", "semantic_path": "tokens/a2.npy"}
    {"id": "a3", "text": "...", "semantic_path": "tokens/a3.npy", "interleaved_k": 2}

`semantic` is a list of 12.5 Hz semantic ids; `semantic_path` a 1-D integer `.npy` of them, relative to the
manifest's folder. With `interleaved_k` (2 or 4) the `.npy` is a codec token file `s0, a0..a(k-1), s1, ...`
(what `sac-tts codec encode` writes) and the semantic ids are every (k+1)-th value. Other fields are ignored.

Examples are addressed by keys (utterance index, prompt utterance index or -1) drawn per epoch by `plan_epoch`, so an
item is a pure function of its key: no shared state between the sampler, the dataset and DataLoader workers, and
every random choice comes from (seed, epoch, index). Shapes: B examples per batch, T tokens (model vocabulary).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lm.config import LMConfig
from lm.model import IGNORE_INDEX, build_example, pad_batch
from lm.text import TextError

Key = tuple[int, int]  # (utterance index, prompt utterance index or -1 for no prompt)
Example = tuple[list[int], list[int]]  # (input_ids, labels), model vocabulary, labels IGNORE_INDEX off target
INTERLEAVED_K = (2, 4)
_PROMPT_STREAM, _BATCH_STREAM, _EVAL_SPLIT_STREAM = 1, 2, 3  # independent random streams under one seed


@dataclass
class DataConfig:
    train_manifest: str = ""
    eval_manifest: str | None = None
    eval_fraction: float = 0.0  # held out of the train manifest when eval_manifest is null; 0 = no eval
    text_tokenizer: str | None = None  # a TextTokenizer folder; null = train one into OUTPUT_DIR/text_tokenizer
    text_vocab_size: int = 4096  # for that training (a soft limit: a small corpus gives fewer pieces)
    max_tokens: int = 16384  # per micro-batch per process, padding counted
    prompt_prob: float = 0.5  # chance that an example is prompted with another utterance of its speaker
    num_workers: int = 2

    def __post_init__(self) -> None:
        if not self.train_manifest:
            raise ValueError("data.train_manifest is required (a JSONL manifest, see recipes/lm_data.py)")
        if self.eval_manifest is None and not 0 <= self.eval_fraction < 1:
            raise ValueError(f"data.eval_fraction must lie in [0, 1), got {self.eval_fraction}")


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    speaker: str | None  # None: no other utterance may serve as its voice prompt
    semantic: np.ndarray  # [T_semantic] int32, codec semantic ids at 12.5 Hz


# ---- manifests ---------------------------------------------------------------------------------------------------
def read_manifest(path: str | Path, semantic_vocab_size: int | None = None) -> list[Utterance]:
    """Every utterance of a JSONL manifest, token files loaded (int32 keeps a large corpus in memory cheaply)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    utterances: list[Utterance] = []
    first_seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                utterance = _parse_line(line, path.parent, semantic_vocab_size)
            except ManifestError as error:
                raise ManifestError(f"{path}:{line_no}: {error}") from None
            if utterance.id in first_seen:
                raise ManifestError(f"{path}:{line_no}: duplicate id {utterance.id!r} (first on line "
                                    f"{first_seen[utterance.id]}); ids must be unique")
            first_seen[utterance.id] = line_no
            utterances.append(utterance)
    if not utterances:
        raise ManifestError(f"{path}: no utterances (the file is empty)")
    return utterances


def _parse_line(line: str, root: Path, semantic_vocab_size: int | None) -> Utterance:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ManifestError(f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"expected a JSON object per line, got {type(row).__name__}")
    for field in ("id", "text"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise ManifestError(f"{field!r} must be a non-empty string, got {row.get(field)!r}")
    speaker = row.get("speaker")
    if speaker is not None and (isinstance(speaker, bool) or not isinstance(speaker, (str, int))):
        raise ManifestError(f"'speaker' must be a string (or null), got {speaker!r}")
    semantic = _read_semantic(row, root)
    if semantic_vocab_size is not None and (semantic.min() < 0 or semantic.max() >= semantic_vocab_size):
        raise ManifestError(f"semantic ids must lie in [0, {semantic_vocab_size - 1}], found {semantic.min()} .. "
                            f"{semantic.max()}; are these semantic tokens (is 'interleaved_k' missing)?")
    return Utterance(row["id"], row["text"], None if speaker is None else str(speaker), semantic.astype(np.int32))


def _read_semantic(row: dict, root: Path) -> np.ndarray:
    if ("semantic" in row) == ("semantic_path" in row):
        raise ManifestError("give exactly one of 'semantic' (a list of ids) or 'semantic_path' (a .npy file)")
    if "semantic" in row:
        values = row["semantic"]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ManifestError("'semantic' must be a list of integer ids")
        tokens = np.asarray(values, dtype=np.int64)
    else:
        if not isinstance(row["semantic_path"], str):
            raise ManifestError(f"'semantic_path' must be a path string, got {row['semantic_path']!r}")
        file = root / row["semantic_path"]
        if not file.is_file():
            raise ManifestError(f"semantic_path {file} does not exist")
        try:
            tokens = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ManifestError(f"cannot read {file} as .npy: {error}") from None
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ManifestError(f"{file} holds a {tokens.dtype} array of shape {tokens.shape}; expected a 1-D "
                                "integer array of token ids")
    k = row.get("interleaved_k")
    if k is not None:
        if isinstance(k, bool) or k not in INTERLEAVED_K:
            raise ManifestError(f"'interleaved_k' must be one of {INTERLEAVED_K} (acoustic tokens per semantic "
                                f"token), got {k!r}")
        if len(tokens) % (k + 1):
            raise ManifestError(f"{len(tokens)} interleaved tokens is not a whole number of groups of {k + 1} "
                                f"(1 semantic + {k} acoustic); is 'interleaved_k' right for this codec?")
        tokens = tokens[:: k + 1]  # codec layout s0, a0..a(k-1), s1, ... (codec.tokens.interleave)
    if len(tokens) == 0:
        raise ManifestError("no semantic tokens")
    return tokens


def split_eval(utterances: Sequence[Utterance], fraction: float, seed: int
               ) -> tuple[list[Utterance], list[Utterance]]:
    """(train, eval): a seeded random `fraction` of the utterances held out, order otherwise kept."""
    if not 0 < fraction < 1:
        raise ValueError(f"eval_fraction must lie in (0, 1), got {fraction}")
    n_eval = max(1, round(fraction * len(utterances)))
    if n_eval >= len(utterances):
        raise ValueError(f"eval_fraction {fraction} of {len(utterances)} utterances leaves nothing to train on")
    held = set(np.random.default_rng([seed, _EVAL_SPLIT_STREAM]).permutation(len(utterances))[:n_eval].tolist())
    return ([u for i, u in enumerate(utterances) if i not in held],
            [u for i, u in enumerate(utterances) if i in held])


# ---- examples ----------------------------------------------------------------------------------------------------
class SemanticLMDataset(Dataset):
    """Utterances -> `SemanticLM.build_example` examples, addressed by `Key`s from `plan_epoch`.

    With probability `prompt_prob` an example takes another utterance of its speaker as the voice prompt (its text
    and semantic tokens go in the prefix; the loss covers the target only); otherwise it has no prompt. Utterances
    that cannot form an example (text with nothing speakable, longer than `max_length`) are dropped and listed in
    `dropped` so the caller can report them.
    """

    def __init__(self, utterances: Sequence[Utterance], encode: Callable[[str], list[int]], config: LMConfig,
                 prompt_prob: float, seed: int, max_length: int):
        if not 0 <= prompt_prob <= 1:
            raise ValueError(f"prompt_prob must lie in [0, 1], got {prompt_prob}")
        self.config = config
        self.prompt_prob, self.seed = prompt_prob, seed
        self.max_length = min(max_length, config.max_position_embeddings)
        self.ids = [u.id for u in utterances]
        self.speakers = [u.speaker for u in utterances]
        self.semantic = [u.semantic for u in utterances]
        self.text: list[np.ndarray] = []
        self.dropped: dict[str, list[str]] = {"nothing speakable in the text": [],
                                              f"longer than {self.max_length} tokens": []}
        for u in utterances:
            try:
                ids = encode(u.text)
            except TextError:  # punctuation only and the like: nothing to say
                ids = []
            self.text.append(np.asarray(ids, dtype=np.int32))
        self.usable: list[int] = []
        for i, u in enumerate(utterances):
            if len(self.text[i]) == 0:
                self.dropped["nothing speakable in the text"].append(u.id)
            elif self.length((i, -1)) > self.max_length:
                self.dropped[f"longer than {self.max_length} tokens"].append(u.id)
            else:
                self.usable.append(i)
        self.mates: dict[str, list[int]] = {}  # speaker -> usable utterances, the candidates for voice prompts
        for i in self.usable:
            if self.speakers[i] is not None:
                self.mates.setdefault(self.speakers[i], []).append(i)

    def __len__(self) -> int:
        return len(self.usable)

    def length(self, key: Key) -> int:
        """Tokens in the example: <bos> texts <sep> semantics <eos>."""
        i, p = key
        prompt = len(self.text[p]) + len(self.semantic[p]) if p >= 0 else 0
        return 3 + len(self.text[i]) + len(self.semantic[i]) + prompt

    def plan_epoch(self, epoch: int) -> list[Key]:
        """One key per usable utterance; the prompt choice is drawn from (seed, epoch, utterance index)."""
        rng = np.random.default_rng([self.seed, _PROMPT_STREAM, epoch])
        use_prompt = rng.random(len(self.ids)) < self.prompt_prob
        pick = rng.random(len(self.ids))
        keys = []
        for i in self.usable:
            p, mates = -1, self.mates.get(self.speakers[i], [])
            if use_prompt[i] and len(mates) > 1:
                j = int(pick[i] * (len(mates) - 1))  # uniform over the speaker's other utterances:
                p = mates[j] if mates[j] != i else mates[-1]  # i's own slot stands in for the last one
                if self.length((i, p)) > self.max_length:
                    p = -1  # the prompt would not fit: train this one unprompted rather than drop it
            keys.append((i, p))
        return keys

    def __getitem__(self, key: Key) -> Example:
        i, p = key
        if p < 0:
            return build_example(self.config, self.text[i], self.semantic[i])
        return build_example(self.config, self.text[i], self.semantic[i], self.text[p], self.semantic[p])

    def describe_dropped(self) -> str:
        """One line per reason, '' when nothing was dropped."""
        return "\n".join(f"dropped {len(ids)} utterance(s): {reason} (e.g. {', '.join(ids[:5])})"
                         for reason, ids in self.dropped.items() if ids)


def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids [B, T], labels [B, T] (IGNORE_INDEX on padding) and attention_mask [B, T]."""
    input_ids, attention_mask = pad_batch([ids for ids, _ in examples])
    labels, _ = pad_batch([labels for _, labels in examples], pad_id=IGNORE_INDEX)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


# ---- batching ----------------------------------------------------------------------------------------------------
class LengthBucketBatchSampler:
    """Batches of keys of similar length with at most `max_tokens` tokens per batch, padding counted (B · T_max).

    Each epoch sorts the examples by length (random tie-break), cuts greedy batches and shuffles the batch order,
    all from (seed, epoch). With several processes, rank r takes batches r, r + W, ... and the surplus of the last
    round is dropped, so every rank runs the same number of steps. `set_epoch(epoch, skip)` resumes mid-epoch.
    """

    def __init__(self, dataset: SemanticLMDataset, max_tokens: int, seed: int, rank: int = 0,
                 num_replicas: int = 1):
        if max_tokens < dataset.max_length:
            raise ValueError(f"max_tokens {max_tokens} is below the longest allowed example ({dataset.max_length}); "
                             "raise max_tokens or lower the dataset's max_length")
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
        rng = np.random.default_rng([self.seed, _BATCH_STREAM, epoch])
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


def padded_tokens(batch: list[Key], dataset: SemanticLMDataset) -> int:
    """B · T_max of a batch: what `max_tokens` bounds."""
    return len(batch) * max(dataset.length(k) for k in batch)


def eval_rounds(batches: list[list[Key]], rank: int, num_replicas: int) -> list[tuple[list[Key], bool]]:
    """This rank's eval batches as (keys, counts); ranks short of a full last round repeat a batch that does not
    count, because FSDP/DeepSpeed forwards are collective and every rank must run the same number of them."""
    rounds = math.ceil(len(batches) / num_replicas)
    return [(batches[min(r * num_replicas + rank, len(batches) - 1)], r * num_replicas + rank < len(batches))
            for r in range(rounds)]
