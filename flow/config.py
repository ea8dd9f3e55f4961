"""Second-stage configuration: one dataclass, plain JSON data."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class FlowConfig:
    semantic_vocab_size: int = 16384
    acoustic_vocab_size: int = 16384
    acoustic_per_semantic: int = 2  # k: 2 for the 37.5 Hz codec, 4 for 62.5 Hz
    dim: int = 1024
    num_layers: int = 16
    num_heads: int = 16
    intermediate_size: int = 2816  # SwiGLU hidden width
    max_frames: int = 1500  # training context in acoustic frames (60 s at 25 Hz, 30 s at 50 Hz)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.acoustic_per_semantic < 1:
            raise ValueError(f"acoustic_per_semantic must be >= 1, got {self.acoustic_per_semantic}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even width (RoPE)")

    @property
    def mask_id(self) -> int:
        """The [MASK] acoustic input, one past the codebook."""
        return self.acoustic_vocab_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown flow config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> FlowConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
