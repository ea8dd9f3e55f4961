"""Audio I/O and the released SAC preprocessing (codec/audio.py)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile
import soxr
import torch
from safetensors.numpy import load_file

from codec.audio import AudioError, highpass_biquad, load_audio, pad_to_multiple, preprocess, save_wav, volume_normalize


def _released_vectors(reference_dir) -> dict[str, np.ndarray]:
    return load_file(str(reference_dir / "sac_preprocess_audio_en.safetensors"))


def _torchaudio_order_highpass(x: np.ndarray, sample_rate: int, cutoff_hz: float, q: float = 0.707,
                               clamp: bool = True) -> np.ndarray:
    """Independent float64 re-derivation of torchaudio's biquad: FIR part / a0, then the recursion, then clamp."""
    w0 = 2 * math.pi * cutoff_hz / sample_rate
    alpha = math.sin(w0) / 2.0 / q
    b = [(1 + math.cos(w0)) / 2, -1 - math.cos(w0), (1 + math.cos(w0)) / 2]
    a = [1 + alpha, -2 * math.cos(w0), 1 - alpha]
    padded = np.concatenate([np.zeros(2), x])
    fir = (b[2] * padded[:-2] + b[1] * padded[1:-1] + b[0] * padded[2:]) / a[0]
    out = np.zeros(len(x) + 2)
    for n in range(len(x)):
        out[n + 2] = fir[n] - out[n] * a[2] / a[0] - out[n + 1] * a[1] / a[0]
    return np.clip(out[2:], -1.0, 1.0) if clamp else out[2:]


# ---- parity with the released code ---------------------------------------------------------------------------
def test_load_audio_matches_released_raw(reference_dir, fixtures_dir):
    raw = load_audio(fixtures_dir / "audio-en.wav")
    assert raw.dtype == np.float64 and raw.ndim == 1
    np.testing.assert_array_equal(raw, _released_vectors(reference_dir)["raw"].astype(np.float64))


def test_volume_normalize_matches_released_reference(reference_dir):
    ref = _released_vectors(reference_dir)
    out = volume_normalize(ref["raw"].astype(np.float64))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.astype(np.float32), ref["volume_normalized"])


def test_quiet_branch_keeps_released_stale_loudness_quirk(reference_dir):
    ref = _released_vectors(reference_dir)
    quiet = ref["quiet_in"].astype(np.float64)
    assert np.abs(quiet).max() < 0.1  # the branch under test
    out = volume_normalize(quiet)
    np.testing.assert_array_equal(out.astype(np.float32), ref["quiet_volume_normalized"])
    # "fixing" the quirk (recomputing loudness after the 0.1-peak rescale) would give a different result
    rescaled = quiet / np.abs(quiet).max() * 0.1
    assert not np.allclose(volume_normalize(rescaled), out)


def test_highpass_matches_released_reference(reference_dir):
    ref = _released_vectors(reference_dir)
    out = highpass_biquad(ref["volume_normalized"].astype(np.float64), 16000, 40.0)
    assert np.abs(out - ref["highpassed"]).max() < 1e-6
    np.testing.assert_array_equal(
        highpass_biquad(volume_normalize(ref["raw"].astype(np.float64)), 16000).astype(np.float32), ref["highpassed"])


def test_preprocess_matches_released_process_audio(reference_dir, fixtures_dir):
    ref = _released_vectors(reference_dir)
    tokenizer_audio, codec_audio = preprocess(load_audio(fixtures_dir / "audio-en.wav"))
    assert tokenizer_audio.dtype == np.float64 and codec_audio.dtype == np.float32
    assert codec_audio.shape == ref["processed"].shape and codec_audio.shape[0] % 1280 == 0
    np.testing.assert_array_equal(codec_audio, ref["processed"])
    np.testing.assert_array_equal(tokenizer_audio.astype(np.float32), ref["volume_normalized"])


# ---- behaviour without ../shared -----------------------------------------------------------------------------
def test_highpass_equals_torchaudio_difference_equation():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 3000)
    for sample_rate, cutoff_hz in [(16000, 40.0), (24000, 300.0)]:
        ours = highpass_biquad(x, sample_rate, cutoff_hz)
        assert np.abs(ours - _torchaudio_order_highpass(x, sample_rate, cutoff_hz)).max() < 1e-12


def test_highpass_clamps_output_to_unit_range_like_torchaudio():
    square = np.repeat(np.tile([1.0, -1.0], 8), 400)  # full-scale square wave: the filter overshoots
    assert np.abs(_torchaudio_order_highpass(square, 16000, 40.0, clamp=False)).max() > 1.5
    out = highpass_biquad(square, 16000, 40.0)
    assert out.max() == 1.0 and out.min() == -1.0
    np.testing.assert_allclose(out, _torchaudio_order_highpass(square, 16000, 40.0), atol=1e-12)


def test_highpass_keeps_type_dtype_and_filters_the_last_axis():
    rng = np.random.default_rng(1)
    batch = rng.uniform(-0.3, 0.3, (2, 800))
    out = highpass_biquad(torch.from_numpy(batch), 16000)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (2, 800)
    np.testing.assert_array_equal(out[1].numpy(), highpass_biquad(batch[1], 16000))
    single = highpass_biquad(torch.from_numpy(batch[0]).float(), 16000)
    assert single.dtype == torch.float32
    assert np.abs(single.numpy() - highpass_biquad(batch[0], 16000)).max() < 1e-5


def test_pad_to_multiple_zero_pads_the_end_only_when_needed():
    audio = np.arange(1, 1282, dtype=np.float64)
    padded = pad_to_multiple(audio, 1280)
    assert padded.shape == (2560,) and np.all(padded[1281:] == 0) and np.array_equal(padded[:1281], audio)
    aligned = np.ones(2560)
    assert pad_to_multiple(aligned, 1280) is aligned


def test_preprocess_options_and_input_checks():
    rng = np.random.default_rng(2)
    audio = rng.uniform(-0.5, 0.5, 1000)
    tok, codec = preprocess(audio, volume_norm=False, highpass_cutoff_hz=0)
    np.testing.assert_array_equal(tok, audio)
    assert codec.shape == (1280,) and codec.dtype == np.float32
    np.testing.assert_array_equal(codec[:1000], audio.astype(np.float32))
    with pytest.raises(AudioError, match="empty"):
        preprocess(np.zeros(0))
    with pytest.raises(AudioError, match="NaN"):
        preprocess(np.array([0.1, np.nan]))
    with pytest.raises(AudioError, match="mono"):
        preprocess(np.zeros((2, 100)))


def _tone(sample_rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def test_stereo_mp3_and_48k_inputs_load(tmp_path):
    left, right = _tone(48000, 0.5, 440.0), _tone(48000, 0.5, 1000.0)
    stereo = np.stack([left, right], axis=1)  # [frames, channels]
    wav = tmp_path / "stereo48k.wav"
    soundfile.write(wav, stereo, 48000, subtype="FLOAT")
    loaded = load_audio(wav, 16000)
    expected = soxr.resample(left, 48000, 16000, quality="VHQ")  # first channel only, no down-mix
    assert loaded.dtype == np.float64 and loaded.shape == (8000,)
    np.testing.assert_allclose(loaded, expected, atol=1e-7)
    for fmt, subtype in [("FLAC", "PCM_16"), ("OGG", "VORBIS")]:
        path = tmp_path / f"tone.{fmt.lower()}"
        soundfile.write(path, stereo, 48000, format=fmt, subtype=subtype)
        out = load_audio(path, 16000)
        assert out.ndim == 1 and abs(out.shape[0] - 8000) <= 1
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile cannot write MP3, so no MP3 fixture can be generated")
    mp3 = tmp_path / "tone.mp3"
    soundfile.write(mp3, stereo, 48000, format="MP3")
    out = load_audio(mp3, 16000)
    assert out.ndim == 1 and out.dtype == np.float64 and 7000 < out.shape[0] < 9000
    assert np.isfinite(out).all() and np.abs(out).max() > 0.1


def test_missing_file_raises_clear_error(tmp_path):
    with pytest.raises(AudioError, match="no such audio file") as info:
        load_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(info.value)


def test_corrupt_file_raises_clear_error(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(64))
    with pytest.raises(AudioError, match="cannot read as audio") as info:
        load_audio(bad)
    assert "corrupt.wav" in str(info.value)
    text = tmp_path / "notes.flac"
    text.write_text("not audio at all")
    with pytest.raises(AudioError, match="notes.flac"):
        load_audio(text)


def test_empty_and_non_finite_audio_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.array([0.0, np.nan, 0.1]), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(nan)


def test_save_wav_writes_pcm16_atomically_and_creates_folders(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "out.wav"
    audio = torch.tensor([[0.0, 0.5, -0.5, 1.5]])  # [1, samples]; 1.5 must clip, not wrap
    assert save_wav(target, audio, 16000) == target
    data, rate = soundfile.read(target, dtype="int16")
    assert rate == 16000 and soundfile.info(target).subtype == "PCM_16"
    assert data.tolist() == [0, 16384, -16384, 32767]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.wav"]

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(soundfile, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_wav(target, np.zeros(10), 16000)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.wav"]  # old file intact, no temp left
    assert soundfile.read(target, dtype="int16")[0].tolist() == [0, 16384, -16384, 32767]
    with pytest.raises(AudioError, match="mono"):
        save_wav(tmp_path / "x.wav", np.zeros((2, 10)), 16000)
    monkeypatch.undo()
    for name in ("x.mp3", "x.flac", "x"):  # WAV data under another name would mislead players
        with pytest.raises(AudioError, match="name the file .wav"):
            save_wav(tmp_path / name, np.zeros(10), 16000)
        assert not (tmp_path / name).exists()
    assert save_wav(tmp_path / "UPPER.WAV", np.zeros(10), 16000).is_file()
