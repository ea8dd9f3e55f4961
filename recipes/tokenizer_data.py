"""Semantic-tokenizer training data: whole utterances (CTC needs the full transcript) as Whisper log-mel + labels.

Manifest rows need `id`, `audio` and `text`; `duration` (seconds) is used for batching when present, else the file
header is read. Rows without letters in the text, longer than `max_seconds`, or with more characters than the
CTC frames can emit are dropped and reported. Audio is volume-normalised as GLM-4-Voice's extractor does (no
high-pass). Log-mels can be cached (`feature_cache`: float16 .npy per utterance), which after the first epoch
saves the decode, resample and STFT that dominate a CPU run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import Dataset

from codec.audio import load_audio, volume_normalize
from codec.semantic_tokenizer import whisper_feature_extractor
from codec.semantic_training import ctc_labels
from recipes.data import ManifestDataConfig, ManifestError, describe_dropped, read_jsonl_manifest, require_text

SAMPLES_PER_FRAME = 320  # one encoder frame: Whisper's 100 Hz mel after the stride-2 conv is 50 Hz
HOP = 1280  # samples per token: log-mels are padded to a multiple of it, as in token extraction


@dataclass
class DataConfig(ManifestDataConfig):
    max_seconds: float = 30.0  # the tokenizer's chunk: longer utterances are dropped
    feature_cache: str | None = None  # folder for cached log-mels (None: compute every time)


@dataclass
class Utterance:
    id: str
    audio: Path
    text: str
    seconds: float


def _parse_row(row: dict, root: Path) -> Utterance:
    text = require_text(row, "text")
    audio = Path(row.get("audio") or "")
    if not row.get("audio"):
        raise ManifestError("'audio' (a path) is required")
    audio = audio if audio.is_absolute() else root / audio
    seconds = row.get("duration", row.get("duration_s"))
    if seconds is None:
        try:
            seconds = soundfile.info(str(audio)).duration
        except (RuntimeError, OSError) as error:
            raise ManifestError(f"cannot read {audio}: {error}") from None
    return Utterance(row["id"], audio, text, float(seconds))


def read_manifest(path: str | Path) -> list[Utterance]:
    return read_jsonl_manifest(path, _parse_row)


class CTCDataset(Dataset):
    """dataset[i] -> {"features": float32 [n_mels, F], "num_samples": int, "labels": int64 [L]}; key = index."""

    def __init__(self, utterances: list[Utterance], num_mel_bins: int, data: DataConfig):
        self.num_mel_bins, self.data = num_mel_bins, data
        self.dropped: dict[str, list[str]] = {"no letters in the text": [], f"longer than {data.max_seconds} s": [],
                                              "more characters than CTC frames": []}
        self.items: list[tuple[Utterance, np.ndarray, int]] = []
        for u in utterances:
            labels = np.asarray(ctc_labels(u.text), dtype=np.int64)
            frames = int(np.ceil(u.seconds * 16000 / HOP)) * HOP // SAMPLES_PER_FRAME
            if len(labels) == 0:
                self.dropped["no letters in the text"].append(u.id)
            elif u.seconds > data.max_seconds:
                self.dropped[f"longer than {data.max_seconds} s"].append(u.id)
            elif len(labels) > frames // 2:  # CTC needs a blank between repeats; keep a safe margin
                self.dropped["more characters than CTC frames"].append(u.id)
            else:
                self.items.append((u, labels, frames))
        if not self.items:
            raise ValueError("no usable utterances: " + self.describe_dropped())
        self.max_length = max(frames for _, _, frames in self.items)
        self._extractor = None

    def __len__(self) -> int:
        return len(self.items)

    def plan_epoch(self, epoch: int) -> list[int]:
        del epoch  # no per-epoch choices: the sampler shuffles
        return list(range(len(self.items)))

    def length(self, key: int) -> int:
        return self.items[key][2]

    def _log_mel(self, utterance: Utterance) -> tuple[np.ndarray, int]:
        cache = None
        if self.data.feature_cache:
            digest = hashlib.sha1(f"{utterance.audio}|{self.num_mel_bins}".encode()).hexdigest()[:16]
            cache = Path(self.data.feature_cache) / f"{digest}.npz"
            if cache.is_file():
                with np.load(cache) as saved:
                    return saved["mel"].astype(np.float32), int(saved["num_samples"])
        if self._extractor is None:
            self._extractor = whisper_feature_extractor(self.num_mel_bins)
        audio = volume_normalize(load_audio(utterance.audio, 16000)).astype(np.float32)
        mel = self._extractor([audio], sampling_rate=16000, padding="longest", pad_to_multiple_of=HOP,
                              return_tensors="np")["input_features"][0]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + f".{id(self)}.tmp.npz")
            np.savez(tmp, mel=mel.astype(np.float16), num_samples=len(audio))
            tmp.rename(cache)
        return mel, len(audio)

    def __getitem__(self, key: int) -> dict:
        utterance, labels, _ = self.items[key]
        mel, num_samples = self._log_mel(utterance)
        return {"features": mel, "num_samples": num_samples, "labels": labels}

    def describe_dropped(self) -> str:
        return describe_dropped(self.dropped)


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """features [B, n_mels, F_max] (zero-padded), num_samples [B], labels [B, L_max] (0-padded), label_lengths [B]."""
    frames = max(e["features"].shape[-1] for e in examples)
    longest = max(len(e["labels"]) for e in examples)
    features = np.zeros((len(examples), examples[0]["features"].shape[0], frames), np.float32)
    labels = np.zeros((len(examples), longest), np.int64)
    for row, e in enumerate(examples):
        features[row, :, : e["features"].shape[-1]] = e["features"]
        labels[row, : len(e["labels"])] = e["labels"]
    return {"features": torch.from_numpy(features),
            "num_samples": torch.tensor([e["num_samples"] for e in examples]),
            "labels": torch.from_numpy(labels),
            "label_lengths": torch.tensor([len(e["labels"]) for e in examples])}
