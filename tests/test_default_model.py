"""The bundled default model (tts/default_model): the README's main command — synthesis with no --model — works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "tts" / "default_model"
EXAMPLE = ROOT / "demo" / "examples" / "male_us"

pytestmark = pytest.mark.skipif(not (BUNDLED / "codec").is_dir(), reason="no bundled default model in tts/")


def test_bundled_model_fits_the_repository_limits():
    files = [p for p in BUNDLED.rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= 16 * 2**20 for p in files), [p.name for p in files if p.stat().st_size > 16 * 2**20]
    assert sum(p.stat().st_size for p in files) <= 60e6
    assert (BUNDLED / "README.md").is_file()  # the model card


def test_synthesize_without_model_speaks_in_the_prompt_voice(tmp_path, monkeypatch):
    from tts.cli import main

    monkeypatch.delenv("SAC_TTS_MODEL", raising=False)
    out = tmp_path / "hello.wav"
    code = main(["synthesize", "Hello, this is a cloned voice.", "--voice", str(EXAMPLE.with_suffix(".wav")),
                 "--voice-text", EXAMPLE.with_suffix(".txt").read_text().strip(), "-o", str(out), "--seed", "0"])
    assert code in (0, None)
    audio, sample_rate = soundfile.read(out)
    assert sample_rate == 16000 and 0.8 < len(audio) / sample_rate < 8  # bounded by the text, not runaway
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    assert json.loads((BUNDLED / "export.json").read_text())["files"]
