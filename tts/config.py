"""The TTS folder's `tts_config.json`: how the pipeline joins codec, LM and second stage."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the second stage hands the decoder (SynthesisOptions.flow_codes): each frame's code nearest the mean code vector
# of its predicted distribution, or its sampled id. Here, not in the pipeline, so the CLI names them without loading it.
FLOW_CODES = ("mean", "sampled")

CONFIG_NAME = "tts_config.json"


@dataclass
class TTSConfig:
    language: str = "en"
    min_prompt_seconds: float = 1.0  # below this a prompt carries too little voice to clone
    max_prompt_seconds: float = 30.0  # above this the LM context is wasted on the prompt
    max_chunk_text_tokens: int = 80  # longer sentences are split at commas, then words
    pause_seconds: float = 0.12  # silence between synthesized chunks
    decode_context_tokens: int = 40  # prompt tokens decoded ahead of the target (non-causal decoder)
    stream_chunk_tokens: int = 25  # semantic tokens (2 s) per streamed audio chunk
    stream_lookahead_tokens: int = 12  # decoder look-ahead before a streamed chunk is final (~1 s)
    max_retries: int = 2  # new attempts when a generation looks degenerate
    # Longer than this times what the prompt's pace predicts (its semantic tokens per text token) is babble or
    # silence, not speech: retried, and where a stream cannot retry, cut. Recordings measure at most 2.6 on the eval
    # lists; 0 = off.
    max_length_vs_prompt: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TTSConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TTS config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, folder: str | Path) -> None:
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TTSConfig:
        return cls.from_dict(json.loads((Path(folder) / CONFIG_NAME).read_text()))
