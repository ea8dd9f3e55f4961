"""Data for the second stage (semantic -> acoustic tokens): manifests and a map-style dataset of examples.

Manifest: JSONL, one utterance per line, with its codec tokens either as two lists or as the codec's token file:

    {"id": "a1", "speaker": "alice", "semantic": [12, 873, ...], "acoustic": [5, 9031, 77, 4410, ...]}
    {"id": "a2", "speaker": "alice", "tokens_path": "tokens/a2.npy"}

`acoustic` holds k ids per semantic id (k = the model's `acoustic_per_semantic`: 2 for the 37.5 Hz codec, 4 for
62.5 Hz); `tokens_path` is a 1-D integer `.npy` relative to the manifest's folder in the codec's interleaved order
`s0, a0..a(k-1), s1, ...` (what `sac-tts codec encode` writes). `speaker` is optional; other fields are ignored.
Instead of a JSONL manifest, a token folder of recipes/tokenize_corpus.py (or its index.jsonl) may be given; its
meta.json must show the model's k.

An example is one sequence of acoustic frames [prompt | target] with its semantic tokens (k frames each); the model
sees the prompt and learns to fill in masked target frames. Examples are addressed by keys drawn per epoch by
`plan_epoch` from (seed, epoch, index), so an item is a pure function of its key. Batching: recipes/data.py.
Shapes: B examples, T acoustic frames (a multiple of k), T/k semantic tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flow.config import FlowConfig
from recipes import data as common
from recipes.shards import is_shard_source

# (utterance, prompt, split): prompt = another utterance of the speaker, the utterance itself (its first `split`
# semantic tokens prompt the rest) or -1 for none; split = 0 unless prompt is the utterance itself
Key = tuple[int, int, int]
Example = dict[str, np.ndarray | int]  # acoustic [T], semantic [T/k], prompt_frames


@dataclass
class DataConfig(common.ManifestDataConfig):  # + train/eval manifests, max_tokens (acoustic frames), num_workers
    prompt_prob_other: float = 0.5  # chance the prompt is another utterance of the speaker (else a split of itself)
    drop_prompt_prob: float = 0.1  # chance of no prompt at all: the unconditional model guidance needs
    prompt_fraction: tuple[float, float] = (0.15, 0.5)  # a self-prompt is this share of the utterance (uniform)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_fraction = tuple(self.prompt_fraction)
        for name in ("prompt_prob_other", "drop_prompt_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"data.{name} must lie in [0, 1], got {getattr(self, name)}")
        low, high = self.prompt_fraction
        if not 0 < low <= high < 1:
            raise ValueError(f"data.prompt_fraction must be two shares 0 < low <= high < 1, got {self.prompt_fraction}")


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str | None  # None: no other utterance may serve as its voice prompt
    semantic: np.ndarray  # [Ts] int32, 12.5 Hz semantic ids
    acoustic: np.ndarray  # [k·Ts] int32, acoustic ids, k per semantic id


# ---- manifests ---------------------------------------------------------------------------------------------------
def read_manifest(path: str | Path, config: FlowConfig) -> list[Utterance]:
    """Every utterance of a JSONL manifest or a token folder (recipes/shards.py: the folder or its index.jsonl),
    token files loaded and checked against the model's vocabularies and k."""
    if is_shard_source(path):
        return common.read_token_folder(path, partial(_from_shards, config=config), k=config.acoustic_per_semantic,
                                        semantic_vocab_size=config.semantic_vocab_size,
                                        acoustic_vocab_size=config.acoustic_vocab_size)
    return common.read_jsonl_manifest(path, partial(_parse_row, config=config))


def _from_shards(row: dict, semantic: np.ndarray, acoustic: np.ndarray, config: FlowConfig) -> Utterance:
    common.check_ids("semantic", semantic, config.semantic_vocab_size)
    common.check_ids("acoustic", acoustic, config.acoustic_vocab_size)
    return Utterance(row["id"], common.speaker_of(row), semantic.astype(np.int32), acoustic.astype(np.int32))


def _parse_row(row: dict, root: Path, config: FlowConfig) -> Utterance:
    speaker, k = common.speaker_of(row), config.acoustic_per_semantic
    given = [name for name in ("semantic", "acoustic", "tokens_path") if name in row]
    if given not in (["semantic", "acoustic"], ["tokens_path"]):
        raise common.ManifestError("give either 'semantic' and 'acoustic' (lists of ids) or 'tokens_path' (the "
                                   f"codec's interleaved .npy); found {given or 'none of them'}")
    if "semantic" in row:
        semantic, acoustic = common.id_list(row, "semantic"), common.id_list(row, "acoustic")
        if len(acoustic) != k * len(semantic):
            raise common.ManifestError(f"{len(acoustic)} acoustic ids for {len(semantic)} semantic ids; expected "
                                       f"exactly {k} per semantic id (model.acoustic_per_semantic: 2 for the 37.5 Hz "
                                       "codec, 4 for 62.5 Hz)")
    else:
        semantic, acoustic = common.split_interleaved(common.token_file(row, "tokens_path", root), k)
    hint = "" if "semantic" in row else f"; does this file hold {k} acoustic tokens per semantic token?"
    common.check_ids("semantic", semantic, config.semantic_vocab_size, hint)
    common.check_ids("acoustic", acoustic, config.acoustic_vocab_size, hint)
    return Utterance(row["id"], speaker, semantic.astype(np.int32), acoustic.astype(np.int32))


# ---- examples ----------------------------------------------------------------------------------------------------
class FlowDataset(Dataset):
    """Utterances -> [prompt | target] examples, addressed by `Key`s from `plan_epoch`.

    Per example and epoch: with probability `drop_prompt_prob` no prompt; else with probability `prompt_prob_other`
    another utterance of the same speaker (when it has one) prompts the whole utterance; else the utterance's first
    `prompt_fraction` (drawn uniformly, cut at a semantic token) prompts the rest. Examples longer than the model's
    `max_frames` are cropped: the prompt loses its start first, then the target its tail, k frames at a time.
    """

    def __init__(self, utterances: Sequence[Utterance], config: FlowConfig, data: DataConfig, seed: int):
        self.k, self.seed, self.data = config.acoustic_per_semantic, seed, data
        self.budget = config.max_frames // self.k  # semantic tokens per example
        if self.budget < 2:
            raise ValueError(f"model.max_frames {config.max_frames} leaves no room for a prompt and a target of "
                             f"{self.k} frames each")
        self.max_length = self.budget * self.k  # acoustic frames: what the sampler's max_tokens counts
        self.speakers = [u.speaker for u in utterances]
        self.semantic = [u.semantic for u in utterances]
        self.acoustic = [u.acoustic for u in utterances]
        self.mates = common.group_by_speaker(self.speakers, range(len(utterances)))

    def __len__(self) -> int:
        return len(self.semantic)

    def plan_epoch(self, epoch: int) -> list[Key]:
        """One key per utterance; every choice is drawn from (seed, epoch, utterance index)."""
        rng = np.random.default_rng([self.seed, common.PLAN_STREAM, epoch])
        n = len(self)
        drop, other, pick = rng.random(n) < self.data.drop_prompt_prob, rng.random(n), rng.random(n)
        share = rng.uniform(*self.data.prompt_fraction, size=n)
        keys = []
        for i in range(n):
            mates, length = self.mates.get(self.speakers[i], []), len(self.semantic[i])
            if drop[i]:
                keys.append((i, -1, 0))
            elif len(mates) > 1 and other[i] < self.data.prompt_prob_other:
                keys.append((i, common.other_utterance(i, mates, pick[i]), 0))
            elif length > 1:  # at least one semantic token on each side of the cut
                keys.append((i, i, min(length - 1, max(1, round(share[i] * length)))))
            else:
                keys.append((i, -1, 0))
        return keys

    def spans(self, key: Key) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """((prompt utterance, start, end), (target start, end)) in semantic tokens, after cropping."""
        i, p, split = key
        if p < 0:
            prompt, target = (i, 0, 0), (0, len(self.semantic[i]))
        elif p == i:
            prompt, target = (i, 0, split), (split, len(self.semantic[i]))
        else:
            prompt, target = (p, 0, len(self.semantic[p])), (0, len(self.semantic[i]))
        target_end = min(target[1], target[0] + self.budget)  # a target longer than the context loses its tail
        keep = min(prompt[2] - prompt[1], self.budget - (target_end - target[0]))  # the prompt keeps its end:
        return (prompt[0], prompt[2] - keep, prompt[2]), (target[0], target_end)  # next to the target when split

    def length(self, key: Key) -> int:
        """Acoustic frames in the example."""
        (_, start, end), (target_start, target_end) = self.spans(key)
        return self.k * (end - start + target_end - target_start)

    def __getitem__(self, key: Key) -> Example:
        (p, start, end), (target_start, target_end) = self.spans(key)
        i, k = key[0], self.k
        return {"acoustic": np.concatenate([self.acoustic[p][k * start:k * end],
                                            self.acoustic[i][k * target_start:k * target_end]]),
                "semantic": np.concatenate([self.semantic[p][start:end], self.semantic[i][target_start:target_end]]),
                "prompt_frames": k * (end - start)}


def collate(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """acoustic [B, T] and semantic [B, T/k] right-padded with 0 (beyond `frames`: never seen or scored),
    prompt_frames [B] and frames [B]."""
    frames = [len(e["acoustic"]) for e in examples]
    acoustic = torch.zeros(len(examples), max(frames), dtype=torch.long)
    semantic = torch.zeros(len(examples), max(len(e["semantic"]) for e in examples), dtype=torch.long)
    for row, example in enumerate(examples):
        acoustic[row, :frames[row]] = torch.from_numpy(example["acoustic"])
        semantic[row, :len(example["semantic"])] = torch.from_numpy(example["semantic"])
    return {"acoustic": acoustic, "semantic": semantic, "frames": torch.tensor(frames),
            "prompt_frames": torch.tensor([e["prompt_frames"] for e in examples])}
