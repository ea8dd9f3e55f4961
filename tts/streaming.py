"""Chunked decoding of a token stream: audio out as soon as it no longer depends on unseen tokens (much).

The SAC decoder is non-causal (a sample hears about ±2-3.4 s of tokens, sac.md §1.10), so each chunk is decoded with
`decode_context_tokens` of left context and `stream_lookahead_tokens` of right context, and consecutive chunks are
joined with a 10 ms cross-fade over samples both decodes produced; the result is within a small tolerance of one
full decode, with no audible seam.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from codec import SAC

from .config import TTSConfig
from .voice import VoicePrompt

FADE_SECONDS = 0.01


class StreamingDecoder:
    """Push committed tokens as they come; get back every audio chunk that has enough look-ahead to be final."""

    def __init__(self, model: SAC, voice: VoicePrompt, config: TTSConfig):
        self.model, self.config = model, config
        self.k, self.hop = model.config.acoustic_per_semantic, model.config.semantic_hop_samples
        # [T] and [k·T]: the prompt's tail, then the target as it arrives
        self.semantic, self.acoustic = voice.tail(config.decode_context_tokens)
        self.emitted = len(self.semantic)  # tokens whose audio has been yielded
        self.fade = int(FADE_SECONDS * model.config.sample_rate)
        self.ramp = np.linspace(0.0, 1.0, self.fade, dtype=np.float32)
        self.held: np.ndarray | None = None  # the last chunk's decode of the next chunk's first `fade` samples

    def push(self, semantic: torch.Tensor, acoustic: torch.Tensor, final: bool = False) -> Iterator[np.ndarray]:
        """Append semantic [n] + acoustic [k·n]; yield float32 chunks (all the rest when `final`)."""
        cfg = self.config
        self.semantic, self.acoustic = torch.cat([self.semantic, semantic]), torch.cat([self.acoustic, acoustic])
        total = len(self.semantic)
        while self.emitted < total:
            end = min(total, self.emitted + cfg.stream_chunk_tokens)
            partial = end - self.emitted < cfg.stream_chunk_tokens
            if not final and (partial or end + cfg.stream_lookahead_tokens > total):
                return  # this chunk could still change with tokens not seen yet
            yield self._chunk(self.emitted, end, total, last=final and end == total)
            self.emitted = end

    def _chunk(self, start: int, end: int, total: int, last: bool) -> np.ndarray:
        low = max(0, start - self.config.decode_context_tokens)
        high = min(total, end + self.config.stream_lookahead_tokens)
        wav = self.model.decode(self.semantic[low:high][None], self.acoustic[low * self.k: high * self.k][None])
        wav = wav[0, 0].float().cpu().numpy()
        extra = 0 if last else min(self.fade, (high - end) * self.hop)
        chunk = wav[(start - low) * self.hop: (end - low) * self.hop + extra].copy()
        if self.held is not None:
            n = len(self.held)
            chunk[:n] = self.ramp[:n] * chunk[:n] + (1 - self.ramp[:n]) * self.held
        self.held, chunk = (chunk[len(chunk) - extra:], chunk[: len(chunk) - extra]) if extra else (None, chunk)
        return chunk

    def decode(self, semantic: torch.Tensor, acoustic: torch.Tensor) -> Iterator[np.ndarray]:
        """All of a target at once: semantic [Ts] + acoustic [k·Ts] -> chunks whose concatenation is its audio."""
        return self.push(semantic, acoustic, final=True)
