"""Data for the semantic LM: manifests and a map-style dataset of training examples (batches: recipes/data.py).

Manifest: JSONL, one utterance per line:

    {"id": "a1", "text": "Hello there.", "speaker": "alice", "semantic": [12, 873, ...]}
    {"id": "a2", "text": "...", "speaker": "alice", "semantic_path": "tokens/a2.npy"}
    {"id": "a3", "text": "...", "semantic_path": "tokens/a3.npy", "interleaved_k": 2}

`semantic` is a list of 12.5 Hz semantic ids; `semantic_path` a 1-D integer `.npy` of them, relative to the
manifest's folder. With `interleaved_k` (2 or 4) the `.npy` is a codec token file `s0, a0..a(k-1), s1, ...`
(what `sac-tts codec encode` writes) and the semantic ids are every (k+1)-th value. Other fields are ignored.
Instead of a JSONL manifest, a token folder of recipes/tokenize_corpus.py (or its index.jsonl) may be given: its
utterances need a `text`.

Examples are addressed by keys (utterance index, prompt utterance index or -1) drawn per epoch by `plan_epoch`, so an
item is a pure function of its key: no shared state between the sampler, the dataset and DataLoader workers, and
every random choice comes from (seed, epoch, index). Shapes: B examples per batch, T tokens (model vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lm.config import LMConfig
from lm.model import IGNORE_INDEX, build_example, pad_batch
from lm.text import TextError
from recipes.data import (
    PLAN_STREAM,
    ManifestDataConfig,
    ManifestError,
    check_ids,
    describe_dropped,
    group_by_speaker,
    id_list,
    other_utterance,
    read_jsonl_manifest,
    read_token_folder,
    require_text,
    speaker_of,
    split_interleaved,
    token_file,
)
from recipes.shards import is_shard_source

Key = tuple[int, int]  # (utterance index, prompt utterance index or -1 for no prompt)
Example = tuple[list[int], list[int]]  # (input_ids, labels), model vocabulary, labels IGNORE_INDEX off target
INTERLEAVED_K = (2, 4)


@dataclass
class DataConfig(ManifestDataConfig):  # + train/eval manifests, max_tokens (model tokens), num_workers
    text_tokenizer: str | None = None  # a TextTokenizer folder; null = train one into OUTPUT_DIR/text_tokenizer
    text_vocab_size: int = 4096  # for that training (a soft limit: a small corpus gives fewer pieces)
    prompt_prob: float = 0.5  # chance that an example is prompted with another utterance of its speaker
    # share of the semantic ids the LM reads (prompt and history) swapped for random ones in training; the targets
    # stay. At inference the history holds the LM's own samples, often wrong: a model that only ever read clean
    # ids trusts them and drifts into babble, one that read noisy ids learns to lean on the text.
    input_noise: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.input_noise < 1:
            raise ValueError(f"data.input_noise must lie in [0, 1), got {self.input_noise}")


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    speaker: str | None  # None: no other utterance may serve as its voice prompt
    semantic: np.ndarray  # [T_semantic] int32, codec semantic ids at 12.5 Hz


# ---- manifests ---------------------------------------------------------------------------------------------------
def read_manifest(path: str | Path, semantic_vocab_size: int | None = None) -> list[Utterance]:
    """Every utterance of a JSONL manifest or a token folder (recipes/shards.py: the folder or its index.jsonl),
    token files loaded (int32 keeps a large corpus in memory cheaply)."""
    if is_shard_source(path):
        return read_token_folder(path, partial(_from_shards, semantic_vocab_size=semantic_vocab_size),
                                 semantic_vocab_size=semantic_vocab_size, acoustic=False)
    return read_jsonl_manifest(path, partial(_parse_row, semantic_vocab_size=semantic_vocab_size))


def _from_shards(row: dict, semantic: np.ndarray, acoustic: np.ndarray, semantic_vocab_size: int | None) -> Utterance:
    del acoustic  # the LM reads only the semantic stream (not even loaded)
    check_ids("semantic", semantic, semantic_vocab_size)
    return Utterance(row["id"], require_text(row, "text"), speaker_of(row), semantic.astype(np.int32))


def _parse_row(row: dict, root: Path, semantic_vocab_size: int | None) -> Utterance:
    text = require_text(row, "text")
    speaker = speaker_of(row)
    if ("semantic" in row) == ("semantic_path" in row):
        raise ManifestError("give exactly one of 'semantic' (a list of ids) or 'semantic_path' (a .npy file)")
    tokens = id_list(row, "semantic") if "semantic" in row else token_file(row, "semantic_path", root)
    k = row.get("interleaved_k")
    if k is not None:
        if isinstance(k, bool) or k not in INTERLEAVED_K:
            raise ManifestError(f"'interleaved_k' must be one of {INTERLEAVED_K} (acoustic tokens per semantic "
                                f"token), got {k!r}")
        tokens, _ = split_interleaved(tokens, k)
    check_ids("semantic", tokens, semantic_vocab_size, "; are these semantic tokens (is 'interleaved_k' missing)?")
    return Utterance(row["id"], text, speaker, tokens.astype(np.int32))


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
        self.mates = group_by_speaker(self.speakers, self.usable)

    def __len__(self) -> int:
        return len(self.usable)

    def length(self, key: Key) -> int:
        """Tokens in the example: <bos> texts <sep> semantics <eos>."""
        i, p = key
        prompt = len(self.text[p]) + len(self.semantic[p]) if p >= 0 else 0
        return 3 + len(self.text[i]) + len(self.semantic[i]) + prompt

    def plan_epoch(self, epoch: int) -> list[Key]:
        """One key per usable utterance; the prompt choice is drawn from (seed, epoch, utterance index)."""
        rng = np.random.default_rng([self.seed, PLAN_STREAM, epoch])
        use_prompt = rng.random(len(self.ids)) < self.prompt_prob
        pick = rng.random(len(self.ids))
        keys = []
        for i in self.usable:
            p, mates = -1, self.mates.get(self.speakers[i], [])
            if use_prompt[i] and len(mates) > 1:
                p = other_utterance(i, mates, pick[i])
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
        return describe_dropped(self.dropped)


def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids [B, T], labels [B, T] (IGNORE_INDEX on padding) and attention_mask [B, T]."""
    input_ids, attention_mask = pad_batch([ids for ids, _ in examples])
    labels, _ = pad_batch([labels for _, labels in examples], pad_id=IGNORE_INDEX)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
