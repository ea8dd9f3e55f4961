"""`VoicePrompt`: a cloned voice, tokenized once, saved as ONE safetensors file (tokens) whose header carries the
JSON metadata (transcript, duration). One file can be replaced atomically, so concurrent readers and writers of
the same voice never see a half-written or mismatched pair."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import TTSError

SUFFIX = ".safetensors"


@dataclass
class VoicePrompt:
    text: str  # the prompt's transcript
    semantic: torch.Tensor  # [Ts] int64
    acoustic: torch.Tensor  # [k·Ts] int64
    duration_s: float

    def tail(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The last `tokens` semantic tokens (at most all of them) and their acoustic frames: (semantic [n],
        acoustic [k·n]), the context that precedes generated speech."""
        n = max(0, min(tokens, len(self.semantic)))
        k = len(self.acoustic) // max(len(self.semantic), 1)
        return self.semantic[len(self.semantic) - n:], self.acoustic[len(self.acoustic) - n * k:]

    def save(self, path: str | Path) -> Path:
        """Write `path` (a `.safetensors` file) atomically: temp file in the same folder, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"sac_tts_voice": json.dumps({"text": self.text, "duration_s": self.duration_s})}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"semantic": self.semantic.contiguous(), "acoustic": self.acoustic.contiguous()}, tmp,
                      metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> VoicePrompt:
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["sac_tts_voice"])
                semantic, acoustic = f.get_tensor("semantic"), f.get_tensor("acoustic")
        except FileNotFoundError:
            raise TTSError(f"voice file {path} not found") from None
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
            raise TTSError(f"{path} is not a saved sac-tts voice: {exc}") from exc
        return cls(text=meta["text"], semantic=semantic, acoustic=acoustic, duration_s=float(meta["duration_s"]))
