"""Audio I/O and the released SAC preprocessing, numerically identical to it.

The released pipeline (Soul-AILab/SAC) reads audio with soundfile as float64, keeps the first channel, resamples
with soxr "VHQ", volume-normalises, then (codec path only) applies torchaudio's 40 Hz biquad high-pass and zero-pads
to a multiple of the semantic hop (1280 samples). The semantic tokenizer sees the volume-normalised audio without
the high-pass or the padding. Every function here reproduces those steps bit for bit in float64 (checked against
vectors produced by the released code), without importing torchaudio.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.signal
import soundfile
import soxr
import torch

SEMANTIC_HOP_SAMPLES = 1280  # one GLM-4-Voice token = 80 ms at 16 kHz

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


class AudioError(ValueError):
    """An audio file or buffer that cannot be used (missing, unreadable, empty, non-finite)."""


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as float64 mono at `sample_rate` -> wav [samples].

    Like the released loader, a multi-channel file contributes only its FIRST channel (no down-mix), and a file at
    another rate is resampled with soxr quality "VHQ". Any format libsndfile reads works (WAV, FLAC, OGG, MP3 with
    libsndfile >= 1.1). Raises `AudioError` naming the file if it is missing, unreadable, empty or non-finite.
    """
    file = Path(path)
    if not file.exists():
        raise AudioError(f"{file}: no such audio file")
    if not file.is_file():
        raise AudioError(f"{file}: not a regular file")
    try:
        data, file_rate = soundfile.read(str(file), dtype="float64", always_2d=True)  # [frames, channels]
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{file}: cannot read as audio ({err})") from err
    audio = np.ascontiguousarray(data[:, 0])  # first channel only, as released
    if audio.size == 0:
        raise AudioError(f"{file}: audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError(f"{file}: audio contains NaN or infinite samples")
    if int(file_rate) != int(sample_rate):
        audio = soxr.resample(audio, int(file_rate), int(sample_rate), quality="VHQ")
    return np.asarray(audio, dtype=np.float64)


def check_samples(array: np.ndarray, name: str) -> np.ndarray:
    """Raise `AudioError` naming `name` unless `array` is non-empty, finite, 1-D audio; returns it."""
    if array.ndim != 1:
        raise AudioError(f"{name}: expected mono audio [samples], got shape {tuple(array.shape)}")
    if array.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.isfinite(array).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return array


def volume_normalize(audio: np.ndarray, coeff: float = 0.2) -> np.ndarray:
    """The released `audio_volume_normalize`, computed in float64 -> audio [samples].

    Loudness is the mean of the 90th..99th percentile of |samples| above 0.01; the gain is clipped to [0.1, 10] and
    the result is peak-limited to 1. Quirk kept on purpose: when the peak is below 0.1 the audio is first rescaled to
    a 0.1 peak, but the sorted magnitudes used for the loudness are NOT recomputed, so they still describe the
    original quiet signal.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"volume_normalize expects non-empty audio [samples], got shape {audio.shape}")
    magnitudes = np.sort(np.abs(audio))
    if magnitudes[-1] < 0.1:
        audio = audio / max(magnitudes[-1], 1e-3) * 0.1
    loud = magnitudes[magnitudes > 0.01]  # stale on purpose (see docstring)
    count = loud.shape[0]
    if count <= 10:
        return audio
    volume = np.mean(loud[int(0.9 * count): int(0.99 * count)])
    audio = audio * np.clip(coeff / volume, a_min=0.1, a_max=10)
    peak = np.max(np.abs(audio))
    if peak > 1:
        audio = audio / peak
    return audio


def _highpass_coefficients(sample_rate: int, cutoff_hz: float, q: float, dtype: torch.dtype
                           ) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook high-pass (b, a), computed in `dtype` exactly as torchaudio does, normalised by a0."""
    cutoff = torch.as_tensor(cutoff_hz, dtype=dtype)
    w0 = 2 * math.pi * cutoff / sample_rate
    alpha = torch.sin(w0) / 2.0 / torch.as_tensor(q, dtype=dtype)
    cos_w0 = torch.cos(w0)
    b = torch.stack([(1 + cos_w0) / 2, -1 - cos_w0, (1 + cos_w0) / 2])
    a = torch.stack([1 + alpha, -2 * cos_w0, 1 - alpha])
    return (b / a[0]).numpy(), (a / a[0]).numpy()


def highpass_biquad(audio: ArrayOrTensor, sample_rate: int, cutoff_hz: float = 40.0, q: float = 0.707
                    ) -> ArrayOrTensor:
    """`torchaudio.functional.highpass_biquad` without torchaudio -> same type, shape and dtype [..., samples].

    A causal second-order IIR applied along the last axis, starting from zero state. Like torchaudio's `lfilter`
    (default `clamp=True`), the output is clamped to [-1, 1]; the released pipeline relies on that default.
    Float64 results agree with torchaudio to ~1e-14 (different summation order) and round to identical float32.
    """
    is_tensor = isinstance(audio, torch.Tensor)
    array = audio.detach().cpu().numpy() if is_tensor else np.asarray(audio)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    dtype = torch.float32 if array.dtype == np.float32 else torch.float64
    array = array.astype(np.float32 if dtype == torch.float32 else np.float64, copy=False)
    b, a = _highpass_coefficients(sample_rate, cutoff_hz, q, dtype)
    out = np.clip(scipy.signal.lfilter(b, a, array, axis=-1), -1.0, 1.0).astype(array.dtype, copy=False)
    if is_tensor:
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=audio.device)
    return out


def pad_to_multiple(audio: np.ndarray, multiple: int = SEMANTIC_HOP_SAMPLES) -> np.ndarray:
    """Zero-pad the end of audio [samples] to a multiple of `multiple` samples (no-op when already aligned)."""
    remainder = audio.shape[-1] % multiple
    if remainder == 0:
        return audio
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, multiple - remainder)]
    return np.pad(audio, pad, mode="constant", constant_values=0.0)


def preprocess(audio_16k: np.ndarray, *, volume_norm: bool = True, highpass_cutoff_hz: float | None = 40.0,
               hop: int = SEMANTIC_HOP_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The released preprocessing of one 16 kHz clip [samples] -> (tokenizer_audio, codec_audio).

    tokenizer_audio: volume-normalised float64 [samples] (no high-pass, no padding), what the GLM tokenizer sees.
    codec_audio: volume-normalised, high-passed (skipped when the cutoff is 0/None), zero-padded to a multiple of
    `hop`, float32 [ceil(samples / hop) * hop], what SAC's acoustic encoder sees (released `process_audio`).
    """
    audio = np.asarray(audio_16k, dtype=np.float64)
    if audio.ndim != 1:
        raise AudioError(f"preprocess expects mono audio [samples], got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError("preprocess: audio is empty (0 samples)")
    if not np.isfinite(audio).all():
        raise AudioError("preprocess: audio contains NaN or infinite samples")
    tokenizer_audio = volume_normalize(audio) if volume_norm else audio
    codec_audio = tokenizer_audio
    if highpass_cutoff_hz:
        codec_audio = highpass_biquad(codec_audio, 16000, float(highpass_cutoff_hz))
    codec_audio = pad_to_multiple(codec_audio, hop).astype(np.float32)
    return tokenizer_audio, codec_audio


def wav_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, refused unless it names a .wav file: WAV data under another suffix misleads every player."""
    target = Path(path)
    if target.suffix.lower() != ".wav":
        raise AudioError(f"{target}: the output is 16-bit PCM WAV; name the file .wav (convert it afterwards if you "
                         "need another format)")
    return target


def save_wav(path: str | os.PathLike, wav: np.ndarray | torch.Tensor, sample_rate: int) -> Path:
    """Write mono audio (any float [samples], leading singleton dims allowed) as 16-bit PCM WAV, atomically.

    The data goes to a temporary file in the destination folder which is then renamed over `path`, so readers never
    see a half-written file. Samples are clipped to [-1, 1] first (explicitly, rather than relying on libsndfile's
    float-to-PCM conversion settings). Parent folders are created. Returns the final path.
    """
    array = wav.detach().cpu().double().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float64)
    while array.ndim > 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise AudioError(f"save_wav expects mono audio [samples], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    target = wav_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            soundfile.write(handle, np.clip(array, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; make it an ordinary file
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
