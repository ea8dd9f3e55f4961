"""LM configuration: one dataclass, plain JSON data, mapped onto a `transformers` decoder config.

Vocabulary layout (one embedding table):
    [0, num_special)                        specials: <pad> <bos> <eos> <sep>
    [text_offset, text_offset + V_text)     text tokens (our sentencepiece BPE)
    [semantic_offset, + V_semantic)         the codec's 12.5 Hz semantic ids
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>")
PAD_ID, BOS_ID, EOS_ID, SEP_ID = range(len(SPECIAL_TOKENS))
ARCHITECTURES = ("qwen2", "llama")


@dataclass
class LMConfig:
    text_vocab_size: int = 4096
    semantic_vocab_size: int = 16384
    architecture: str = "qwen2"  # a transformers decoder family: "qwen2" or "llama"
    hidden_size: int = 1024
    intermediate_size: int = 5632
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 4
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must divide into {self.num_heads} heads, and heads "
                             f"into {self.num_kv_heads} key/value heads")
        if min(self.text_vocab_size, self.semantic_vocab_size) < 1:
            raise ValueError("text and semantic vocabularies must be non-empty")

    # ---- vocabulary ----------------------------------------------------------------------------------------
    @property
    def num_special(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def text_offset(self) -> int:
        return self.num_special

    @property
    def semantic_offset(self) -> int:
        return self.num_special + self.text_vocab_size

    @property
    def vocab_size(self) -> int:
        return self.semantic_offset + self.semantic_vocab_size

    # ---- transformers ---------------------------------------------------------------------------------------
    def to_hf_config(self):
        from transformers import LlamaConfig, Qwen2Config

        common = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps, tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
            eos_token_id=EOS_ID, use_cache=True,
        )
        return Qwen2Config(**common) if self.architecture == "qwen2" else LlamaConfig(**common)

    # ---- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LM config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LMConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
