"""`SpeechCodec`: audio <-> SAC tokens, with the released preprocessing and the GLM-4-Voice tokenizer.

Batches of clips of different lengths give the ids and audio of one clip at a time: clips are grouped by
(padded) length and each group runs as one batch, so no clip ever sees another's padding through the
non-causal convolutions. In float64 the results are identical; in float32 a batched kernel may round differently
from a single one (~1e-8 in the audio), which can flip an id only at an exact near-tie.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soxr
import torch

from .audio import AudioError, check_samples, load_audio, preprocess
from .checkpoint import is_hub_id, load_sac
from .model import SAC
from .semantic_tokenizer import SemanticTokenizer
from .tokens import CodecTokens

# Below this peak (about -80 dBFS, under 16-bit dither) a clip carries no speech to encode.
SILENCE_PEAK = 1e-4


def _as_mono_float64(wav: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """1-D audio, or [channels, samples] of which the first channel is used (as the released loader does)."""
    array = wav.detach().cpu().double().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float64)
    if array.ndim == 2:
        array = array[0]
    check_samples(array, name)
    if np.abs(array).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent (peak {np.abs(array).max():.2g}); nothing to encode")
    return array


def _resolve_tokenizer_path(source: str | Path) -> Path:
    if not is_hub_id(source):
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"]))


def _grouped(lengths: Sequence[int], batch_size: int) -> Iterable[list[int]]:
    """Indices of equal-length items, in batches of at most `batch_size`."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, length in enumerate(lengths):
        groups[length].append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start: start + batch_size]


class SpeechCodec:
    def __init__(self, model: SAC, tokenizer: SemanticTokenizer | None = None):
        self.model, self.tokenizer = model, tokenizer
        if tokenizer is not None:
            ours, theirs = model.semantic_encoder.codebook.weight, tokenizer.codebook.weight
            if ours.shape != theirs.shape or not torch.allclose(ours.double().cpu(), theirs.double().cpu(), atol=1e-5):
                raise ValueError(f"the codec's semantic codebook {tuple(ours.shape)} is not the tokenizer's "
                                 f"{tuple(theirs.shape)}: this codec was not trained on this tokenizer's ids")

    @classmethod
    def from_pretrained(cls, codec: str | Path, *, codec_config: str | Path | None = None,
                        semantic_tokenizer: str | Path | None = None, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> SpeechCodec:
        """Load the codec (our folder, a released `.pt`, or a hub id) and, if given, the semantic tokenizer.

        A folder in our format may hold the tokenizer as `semantic_tokenizer/`; without one, only `decode` works.
        """
        if semantic_tokenizer is None and (Path(codec) / "semantic_tokenizer").is_dir():
            semantic_tokenizer = Path(codec) / "semantic_tokenizer"
        tokenizer_path = _resolve_tokenizer_path(semantic_tokenizer) if semantic_tokenizer is not None else None
        model = load_sac(codec, config=codec_config, semantic_tokenizer=tokenizer_path, dtype=dtype, device=device)
        tokenizer = (SemanticTokenizer.from_pretrained(tokenizer_path, dtype=dtype, device=device)
                     if tokenizer_path is not None else None)
        return cls(model, tokenizer)

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def acoustic_per_semantic(self) -> int:
        return self.model.config.acoustic_per_semantic

    # ---- encoding ------------------------------------------------------------------------------------------
    def prepare(self, wav: np.ndarray | torch.Tensor, sample_rate: int, name: str = "audio"
                ) -> tuple[np.ndarray, np.ndarray]:
        """Raw audio -> (tokenizer input [samples], codec input [samples padded to the semantic hop])."""
        if int(sample_rate) <= 0:
            raise AudioError(f"{name}: sample rate must be positive, got {sample_rate}")
        audio = _as_mono_float64(wav, name)
        if sample_rate != self.sample_rate:
            audio = soxr.resample(audio, sample_rate, self.sample_rate, quality="VHQ")
        cfg = self.model.config
        return preprocess(audio, volume_norm=cfg.volume_normalize, highpass_cutoff_hz=cfg.highpass_cutoff_hz,
                          hop=cfg.semantic_hop_samples)

    def encode(self, wavs: Sequence[np.ndarray | torch.Tensor], sample_rate: int = 16000,
               batch_size: int = 8) -> CodecTokens:
        """Clips of raw audio (any rate, 1-D or [channels, samples]) -> tokens of each, with lengths."""
        if self.tokenizer is None:
            raise RuntimeError("this codec was loaded without a semantic tokenizer; pass semantic_tokenizer= "
                               "(the GLM-4-Voice tokenizer folder) to encode audio")
        prepared = [self.prepare(w, sample_rate, name=f"clip {i}") for i, w in enumerate(wavs)]
        semantic = self.tokenizer.tokenize([p[0] for p in prepared], batch_size=batch_size)
        acoustic: list[torch.Tensor | None] = [None] * len(prepared)
        for batch in _grouped([len(p[1]) for p in prepared], batch_size):
            wav = torch.from_numpy(np.stack([prepared[i][1] for i in batch]))[:, None]  # [B, 1, L]
            ids = self.model.encode_acoustic(wav).cpu()
            for row, i in enumerate(batch):
                acoustic[i] = ids[row]
        k = self.acoustic_per_semantic
        for i, (s, a) in enumerate(zip(semantic, acoustic)):
            if len(a) != k * len(s):  # the two streams must cover the same padded audio
                raise RuntimeError(f"clip {i}: {len(s)} semantic vs {len(a)} acoustic tokens (k={k})")
        return CodecTokens.from_clips(list(zip(semantic, acoustic)), [len(p[0]) for p in prepared])

    def encode_file(self, path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        """One audio file -> (semantic [Ts], acoustic [k·Ts])."""
        return self.encode([load_audio(path, self.sample_rate)], self.sample_rate).clip(0)

    # ---- decoding ------------------------------------------------------------------------------------------
    def decode(self, tokens: CodecTokens, batch_size: int = 8) -> list[torch.Tensor]:
        """Tokens -> one float waveform [Ts · semantic_hop] per clip (16 kHz, CPU, float32)."""
        clips = [tokens.clip(i) for i in range(len(tokens))]
        for i, (s, a) in enumerate(clips):
            self.model.check_tokens(s[None], a[None])  # validate everything before decoding anything
        out: list[torch.Tensor | None] = [None] * len(clips)
        for batch in _grouped([len(s) for s, _ in clips], batch_size):
            semantic = torch.stack([clips[i][0] for i in batch])
            acoustic = torch.stack([clips[i][1] for i in batch])
            wav = self.model.decode(semantic, acoustic).float().cpu()  # [B, 1, L]
            for row, i in enumerate(batch):
                out[i] = wav[row, 0]
        return out  # type: ignore[return-value]

    def reconstruct(self, wavs: Sequence[np.ndarray | torch.Tensor], sample_rate: int = 16000,
                    batch_size: int = 8) -> list[torch.Tensor]:
        """Encode then decode; each output is trimmed to its input's duration at the codec rate."""
        tokens = self.encode(wavs, sample_rate, batch_size)
        decoded = self.decode(tokens, batch_size)
        return [audio[: int(n)] for audio, n in zip(decoded, tokens.audio_lengths)]
