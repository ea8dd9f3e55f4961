"""Audio formats of the HTTP server: streamed WAV/PCM, whole-clip FLAC/MP3/Opus, and decoding of uploads."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile

from .errors import TTSError

# A streamed WAV cannot know its length up front; like other streaming TTS servers we write the largest sizes.
# soundfile/libsndfile, ffmpeg, browsers and Python's `wave` all read such a file up to its real end.
UNKNOWN_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class AudioFormat:
    name: str
    media_type: str
    streamed: bool  # sent chunk by chunk as synthesized; otherwise encoded once at the end
    soundfile_format: tuple[str, str] | None = None  # (format, subtype) for the encoded ones


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat("wav", "audio/wav", streamed=True),
    "pcm": AudioFormat("pcm", "audio/pcm", streamed=True),
    # These need the whole clip: FLAC and MP3 rewrite their header at the end, so they are not streamed.
    "flac": AudioFormat("flac", "audio/flac", streamed=False, soundfile_format=("FLAC", "PCM_16")),
    "mp3": AudioFormat("mp3", "audio/mpeg", streamed=False, soundfile_format=("MP3", "MPEG_LAYER_III")),
    "opus": AudioFormat("opus", "audio/ogg; codecs=opus", streamed=False, soundfile_format=("OGG", "OPUS")),
}


def available_formats() -> dict[str, AudioFormat]:
    """FORMATS minus the encoders this libsndfile lacks (MP3 needs libsndfile >= 1.1)."""
    have = soundfile.available_formats()
    out = {}
    for name, fmt in FORMATS.items():
        if fmt.soundfile_format is not None:
            container, subtype = fmt.soundfile_format
            if container not in have or subtype not in soundfile.available_subtypes(container):
                continue
        out[name] = fmt
    return out


def wav_header(sample_rate: int, data_bytes: int = UNKNOWN_SIZE) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV; `data_bytes` unknown -> the maximal size."""
    riff = UNKNOWN_SIZE if data_bytes == UNKNOWN_SIZE else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


def to_pcm16(audio: np.ndarray) -> bytes:
    """float audio in [-1, 1] -> 16-bit little-endian bytes (clipped, never wrapped around)."""
    scaled = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.round(scaled).astype("<i2").tobytes()


def encode(audio: np.ndarray, sample_rate: int, fmt: AudioFormat) -> bytes:
    """A whole clip in one of the non-streamed formats."""
    assert fmt.soundfile_format is not None, fmt
    container, subtype = fmt.soundfile_format
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def decode_upload(file: BinaryIO, filename: str) -> tuple[np.ndarray, int]:
    """An uploaded voice sample -> (float64 mono audio, its sample rate); TTSError naming the file otherwise.

    Like the released loader, only the first channel of a multi-channel file is kept.
    """
    try:
        data, rate = soundfile.read(file, dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)  # libsndfile's own words, without the temp file
        raise TTSError(f"file {filename!r}: cannot read as audio ({reason}); upload WAV, FLAC, OGG or MP3") from exc
    audio = np.ascontiguousarray(data[:, 0])
    if audio.size == 0:
        raise TTSError(f"file {filename!r}: audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise TTSError(f"file {filename!r}: audio contains NaN or infinite samples")
    return audio, int(rate)
