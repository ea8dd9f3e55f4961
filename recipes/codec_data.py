"""Codec training data: audio + semantic ids, cropped as the SAC release does (research/sac.md §4).

The ids come from token folders (recipes/tokenize_corpus.py), one or several of one codec; their index rows keep the
manifest's `audio` path, relative to that manifest's folder (meta.json's plan.manifest) unless `data.audio_root` says
otherwise. Or, with `data.semantic_tokenizer`, from that tokenizer run on each whole clip in the loader (a JSONL
`manifest` then suffices: no codec needs to exist yet to train the first one); the example then also carries the
tokenizer's pre-pooling frames, the target of SAC's semantic-feature loss (the release reads them from offline files).
Each example is a random window of `segment_tokens` semantic tokens (30 = 2.4 s) and the 1280·30 samples under it,
the audio volume-normalised and 40 Hz high-passed (`codec.audio.preprocess`); short items are zero-padded (ids with 0).
With `data.acoustic_from_tokens` the example also carries the token folder's acoustic ids under the window, and the
recipe decodes those rather than re-encoding the crop: decoder-only training (encoders frozen) then skips the acoustic
encoder, and the decoder sees the ids of whole-clip encoding that the second stage predicts, not a crop's edge ids.

Crops are drawn from (seed, step, slot): a resumed run sees the batches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from codec.audio import load_audio, preprocess
from codec.semantic_tokenizer import SemanticTokenizer
from recipes.corpora.manifest import read_manifest, resolve_audio
from recipes.data import check_one_codec, sources
from recipes.shards import TokenShardReader

HOP = 1280  # samples per semantic token at 16 kHz


@dataclass
class DataConfig:
    tokens: str | list[str] = field(default="", metadata={"sources": True})  # token folders (or index.jsonl files)
    manifest: str = ""  # or a JSONL manifest (id, audio), with semantic_tokenizer
    semantic_tokenizer: str | None = None  # a tokenizer folder: ids and semantic-loss targets made on the fly
    audio_root: str | None = None  # where index rows' relative `audio` paths start; default: the manifest's folder
    segment_tokens: int = 30  # int(16000 · 2.4 // 1280)
    batch_size: int = 24
    num_workers: int = 2
    highpass_cutoff_hz: float = 40.0
    # Held-out audio, scored at every checkpoint: token folders, or a manifest (with semantic_tokenizer).
    eval_tokens: str | list[str] = field(default="", metadata={"sources": True})
    eval_manifest: str = ""
    eval_clips: int = 32  # its first clips, one fixed crop each
    acoustic_from_tokens: bool = False  # decode the token folders' acoustic ids (see the module docstring)

    def __post_init__(self) -> None:
        if bool(self.tokens) == bool(self.manifest):
            raise ValueError("give one of data.tokens (a token folder, recipes/tokenize_corpus.py writes one) or "
                             "data.manifest (JSONL, with data.semantic_tokenizer)")
        if (self.manifest or self.eval_manifest) and not self.semantic_tokenizer:
            raise ValueError("data.manifest and data.eval_manifest need data.semantic_tokenizer to make the "
                             "semantic ids")
        if self.eval_tokens and self.eval_manifest:
            raise ValueError("give at most one of data.eval_tokens and data.eval_manifest")
        if self.acoustic_from_tokens and (self.manifest or self.eval_manifest or self.semantic_tokenizer):
            raise ValueError("data.acoustic_from_tokens reads the acoustic ids of token folders: give data.tokens "
                             "(and data.eval_tokens), without data.manifest, data.eval_manifest or "
                             "data.semantic_tokenizer")
        if self.segment_tokens < 1 or self.batch_size < 1 or self.eval_clips < 1:
            raise ValueError("data.segment_tokens, data.batch_size and data.eval_clips must be at least 1")

    def held_out(self) -> DataConfig | None:
        """The eval data as a config of its own (None without any): its clips are read like training ones."""
        if not (self.eval_tokens or self.eval_manifest):
            return None
        return replace(self, tokens=self.eval_tokens, manifest=self.eval_manifest, eval_tokens="", eval_manifest="")


class CodecCrops(Dataset):
    """dataset[(index, crop_seed)] -> {"wav": float32 [1, S·1280], "semantic": int64 [S]} (+ "semantic_frames"
    float32 [S·k, D] with a tokenizer of pooling k; + "acoustic" int64 [S·a] with acoustic_from_tokens, a acoustic
    frames per semantic one)."""

    def __init__(self, data: DataConfig, sample_rate: int = 16000):
        self.data, self.sample_rate = data, sample_rate
        self._tokenizer: SemanticTokenizer | None = None  # loaded in each loader worker on first use
        self.items: list[tuple[TokenShardReader, str]] = []  # item i: its token folder's reader, its utterance id
        self.folders: list[tuple[str, range]] = []  # each token folder's items, for checks folder by folder
        if data.tokens:
            folders = sources(data.tokens)
            check_one_codec(folders)  # one codec, so one k (acoustic ids per semantic id) too
            self.paths: list[Path] = []
            for folder in folders:
                reader = TokenShardReader(folder)
                root = Path(data.audio_root or Path(reader.meta["plan"]["manifest"]).parent)
                self.folders.append((folder, range(len(self.items), len(self.items) + len(reader.rows))))
                self.items += [(reader, row["id"]) for row in reader.rows]
                self.paths += [Path(row["audio"]) if Path(row["audio"]).is_absolute() else root / row["audio"]
                               for row in reader.rows]
        else:
            self.paths = [resolve_audio(data.manifest, row["audio"]) for row in read_manifest(data.manifest)]

    def __len__(self) -> int:
        return len(self.paths)

    def tokenizer(self) -> SemanticTokenizer:
        if self._tokenizer is None:
            self._tokenizer = SemanticTokenizer.from_pretrained(self.data.semantic_tokenizer)
        return self._tokenizer

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, crop_seed = key
        tokenizer_audio, audio = preprocess(load_audio(self.paths[index], self.sample_rate),
                                            highpass_cutoff_hz=self.data.highpass_cutoff_hz)
        rng = np.random.default_rng(crop_seed)
        semantic_frames = acoustic = None
        if self.data.semantic_tokenizer:
            tokenizer = self.tokenizer()
            if len(tokenizer_audio) > tokenizer.chunk_samples:  # one chunk, so the frames line up with the ids
                offset = int(rng.integers(0, (len(tokenizer_audio) - tokenizer.chunk_samples) // HOP + 1)) * HOP
                tokenizer_audio = tokenizer_audio[offset: offset + tokenizer.chunk_samples]
                audio = audio[offset: offset + tokenizer.chunk_samples]
            semantic, semantic_frames = tokenizer.ids_and_frames(tokenizer_audio)
        else:
            reader, utterance_id = self.items[index]
            semantic, acoustic = reader.get(utterance_id)
        frames = min(len(semantic), len(audio) // HOP)  # the release trims both streams to their common length
        seg = self.data.segment_tokens
        start = int(rng.integers(0, frames - seg + 1)) if frames > seg else 0
        take = min(seg, frames)

        def window(values: np.ndarray, per_frame: int, dtype: type) -> torch.Tensor:
            """The `per_frame` rows under each of the crop's semantic frames, zero-padded to the whole segment."""
            out = np.zeros((seg * per_frame, *values.shape[1:]), dtype)
            out[:take * per_frame] = values[start * per_frame: (start + take) * per_frame]
            return torch.from_numpy(out)

        example = {"wav": window(audio, HOP, np.float32)[None], "semantic": window(semantic, 1, np.int64)}
        if self.data.acoustic_from_tokens:
            example["acoustic"] = window(acoustic, self.items[index][0].k, np.int64)
        if semantic_frames is not None:
            k = semantic_frames.shape[0] // len(semantic)
            example["semantic_frames"] = window(semantic_frames, k, np.float32)
        return example


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


class StepBatches:
    """Batch sampler: step s (from `start_step` on, forever) draws its items and crop seeds from (seed, s, rank)."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0):
        self.size, self.batch_size, self.seed, self.start_step, self.rank = size, batch_size, seed, start_step, rank

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            rng = np.random.default_rng([self.seed, step, self.rank])
            items = rng.integers(0, self.size, self.batch_size)
            crops = rng.integers(0, 2**62, self.batch_size)
            yield [(int(i), int(c)) for i, c in zip(items, crops)]
            step += 1
