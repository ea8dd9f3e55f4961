"""Token containers and the released on-disk order of SAC tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CodecTokens:
    """A batch of token streams, right-padded with 0 and described by their lengths."""

    semantic: torch.Tensor  # [B, Ts_max] int64
    acoustic: torch.Tensor  # [B, Ta_max] int64, Ta = k·Ts per clip
    semantic_lengths: torch.Tensor  # [B] int64
    acoustic_lengths: torch.Tensor  # [B] int64
    audio_lengths: torch.Tensor | None = None  # [B] samples of each input at the codec rate, before padding

    def __len__(self) -> int:
        return self.semantic.shape[0]

    def clip(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic [Ts], acoustic [Ta]) of clip i, without padding."""
        return self.semantic[i, : self.semantic_lengths[i]], self.acoustic[i, : self.acoustic_lengths[i]]

    @classmethod
    def from_clips(cls, clips: list[tuple[torch.Tensor, torch.Tensor]],
                   audio_lengths: list[int] | None = None) -> CodecTokens:
        semantic_lengths = torch.tensor([len(s) for s, _ in clips], dtype=torch.long)
        acoustic_lengths = torch.tensor([len(a) for _, a in clips], dtype=torch.long)
        semantic = torch.zeros(len(clips), max(semantic_lengths.tolist(), default=0), dtype=torch.long)
        acoustic = torch.zeros(len(clips), max(acoustic_lengths.tolist(), default=0), dtype=torch.long)
        for i, (s, a) in enumerate(clips):
            semantic[i, : len(s)] = s
            acoustic[i, : len(a)] = a
        lengths = torch.tensor(audio_lengths, dtype=torch.long) if audio_lengths is not None else None
        return cls(semantic, acoustic, semantic_lengths, acoustic_lengths, lengths)


def interleave(semantic: torch.Tensor | np.ndarray, acoustic: torch.Tensor | np.ndarray) -> np.ndarray:
    """semantic [Ts] + acoustic [k·Ts] -> [Ts·(1+k)] int64 in the released order s0, a0..a(k-1), s1, ..."""
    semantic, acoustic = np.asarray(semantic, dtype=np.int64), np.asarray(acoustic, dtype=np.int64)
    if semantic.ndim != 1 or acoustic.ndim != 1 or len(semantic) == 0 or len(acoustic) % len(semantic):
        raise ValueError(f"cannot interleave {semantic.shape} semantic with {acoustic.shape} acoustic tokens: "
                         "need 1-D streams with a whole number of acoustic tokens per semantic token")
    k = len(acoustic) // len(semantic)
    return np.concatenate([semantic[:, None], acoustic.reshape(-1, k)], axis=1).reshape(-1)


def deinterleave(tokens: torch.Tensor | np.ndarray, acoustic_per_semantic: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `interleave`: [Ts·(1+k)] -> (semantic [Ts], acoustic [k·Ts])."""
    tokens = np.asarray(tokens)
    group = 1 + acoustic_per_semantic
    if tokens.ndim != 1 or len(tokens) == 0 or len(tokens) % group:
        raise ValueError(f"{len(tokens) if tokens.ndim == 1 else tokens.shape} interleaved tokens is not a whole "
                         f"number of groups of {group} (1 semantic + {acoustic_per_semantic} acoustic); "
                         "was it written for the other codec layout?")
    if np.issubdtype(tokens.dtype, np.floating):
        raise ValueError(f"token files must hold integers, got {tokens.dtype}")
    groups = tokens.astype(np.int64).reshape(-1, group)
    return groups[:, 0].copy(), groups[:, 1:].reshape(-1).copy()
