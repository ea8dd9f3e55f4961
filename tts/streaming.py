"""Chunked decoding of a token stream: audio out as soon as it no longer depends on unseen tokens (much).

The SAC decoder is non-causal (a sample hears about ±2-3.4 s of tokens, sac.md §1.10), so each chunk is decoded with
`decode_context_tokens` of left context and `stream_lookahead_tokens` of right context, and consecutive chunks are
joined with a 10 ms cross-fade over samples both decodes produced; the result is within a small tolerance of one
full decode, with no audible seam.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from codec import SAC

from .config import TTSConfig
from .voice import VoicePrompt

FADE_SECONDS = 0.01


class StreamingDecoder:
    def __init__(self, model: SAC, voice: VoicePrompt, config: TTSConfig):
        self.model, self.voice, self.config = model, voice, config

    def decode(self, semantic: torch.Tensor, acoustic: torch.Tensor) -> Iterator[np.ndarray]:
        """semantic [Ts] + acoustic [k·Ts] of the target -> float32 chunks whose concatenation is its audio."""
        cfg, k = self.config, self.model.config.acoustic_per_semantic
        hop = self.model.config.semantic_hop_samples
        context = min(cfg.decode_context_tokens, len(self.voice.semantic))
        full_semantic = torch.cat([self.voice.semantic[len(self.voice.semantic) - context:], semantic])
        full_acoustic = torch.cat([self.voice.acoustic[len(self.voice.acoustic) - context * k:], acoustic])
        total, fade = len(full_semantic), int(FADE_SECONDS * self.model.config.sample_rate)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        held: np.ndarray | None = None  # the previous chunk's decode of the next chunk's first `fade` samples
        for start in range(context, total, cfg.stream_chunk_tokens):
            end = min(total, start + cfg.stream_chunk_tokens)
            low, high = max(0, start - cfg.decode_context_tokens), min(total, end + cfg.stream_lookahead_tokens)
            wav = self.model.decode(full_semantic[low:high][None], full_acoustic[low * k: high * k][None])
            wav = wav[0, 0].float().cpu().numpy()
            extra = fade if end < total else 0
            chunk = wav[(start - low) * hop: (end - low) * hop + extra].copy()
            if held is not None:
                chunk[:fade] = ramp * chunk[:fade] + (1 - ramp) * held
            if extra:
                held, chunk = chunk[-extra:], chunk[:-extra]
            yield chunk
