"""`VoiceStore`: a folder of saved voices, one sub-folder each, safe under concurrent threads and processes.

Each voice is one file, `NAME.safetensors`, written to a temporary file and renamed into place
(`VoicePrompt.save`), so a reader sees either the old voice or the new one, never a half-written one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import TTSError
from .voice import SUFFIX, VoicePrompt

VOICES_ENV = "SAC_TTS_VOICES_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class VoiceNotFound(TTSError):
    """A voice name that is not in the store."""


def default_voices_dir() -> Path:
    if os.environ.get(VOICES_ENV):
        return Path(os.environ[VOICES_ENV])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "sac-tts" / "voices"


class VoiceStore:
    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else default_voices_dir()

    @staticmethod
    def check_name(name: str) -> str:
        """Raise TTSError unless `name` is a valid voice name (before any costly cloning)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise TTSError(f"voice name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
                           "starting with a letter or digit")
        return name

    def _path(self, name: str) -> Path:
        return self.folder / f"{self.check_name(name)}{SUFFIX}"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))

    def add(self, name: str, voice: VoicePrompt) -> None:
        voice.save(self._path(name))

    def get(self, name: str) -> VoicePrompt:
        path = self._path(name)
        try:
            return VoicePrompt.load(path)
        except TTSError:
            if path.is_file():
                raise
        known = ", ".join(self.names()) or "none saved yet"
        raise VoiceNotFound(f"no voice named {name!r} (known voices: {known}); add it with "
                            f"`sac-tts voice add {name} prompt.wav --text ...`")

    def list(self) -> list[dict]:
        out = []
        for name in self.names():
            try:
                voice = VoicePrompt.load(self._path(name))
            except (TTSError, OSError, ValueError):
                continue  # removed or replaced while listing
            out.append({"name": name, "text": voice.text, "duration_s": round(voice.duration_s, 2)})
        return out

    def remove(self, name: str) -> None:
        try:
            self._path(name).unlink()  # atomic: readers see the voice or nothing
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise VoiceNotFound(f"no voice named {name!r} to remove (known voices: {known})") from None
