"""Speaker similarity (resemblyzer) and DNSMOS (speechmos), both on 16 kHz float audio; models ship in the wheels."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from .deps import require

SAMPLE_RATE = 16000
MIN_SECONDS = 0.5  # shorter audio is padded with silence, so that an (almost) empty output still scores
SILENT_PEAK = 1e-4  # about -80 dBFS


@contextlib.contextmanager
def one_torch_thread():
    """Run a small model on one thread: on a busy CPU, torch's thread pool makes resemblyzer's LSTM 20x slower
    (4-5 s instead of 0.2 s per clip on 2 shared cores); the TTS keeps its own thread count outside."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_audio(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Finite float32 mono audio, zero-padded to MIN_SECONDS: a TTS that says (almost) nothing must score as
    unintelligible (WER 100 %), not drop out of the averages as a failure."""
    wav = np.asarray(wav, np.float32).reshape(-1)
    if not np.isfinite(wav).all():
        raise ValueError(f"{name}: audio contains NaN or infinite samples")
    if wav.size < MIN_SECONDS * SAMPLE_RATE:
        wav = np.pad(wav, (0, int(MIN_SECONDS * SAMPLE_RATE) - wav.size))
    return wav


def is_silent(wav: np.ndarray) -> bool:
    return wav.size == 0 or float(np.abs(wav).max()) < SILENT_PEAK


class SpeakerEncoder:
    """Resemblyzer's GE2E d-vector: 256-d, L2-normalised, so the cosine is a dot product."""

    def __init__(self, device: str = "cpu"):
        with warnings.catch_warnings():  # its `scipy.ndimage.morphology` import is deprecated, not yet broken
            warnings.simplefilter("ignore", DeprecationWarning)
            resemblyzer = require("resemblyzer")
        require("webrtcvad")  # resemblyzer's VAD; a clear message beats its pkg_resources traceback
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a load banner
            self.encoder = resemblyzer.VoiceEncoder(device)
        self._preprocess = resemblyzer.preprocess_wav

    def embed(self, wav: np.ndarray) -> np.ndarray:
        wav = check_audio(wav)
        if is_silent(wav):  # resemblyzer's volume normalisation divides by the RMS
            raise ValueError("silent audio has no speaker embedding")
        trimmed = self._preprocess(wav)  # volume normalisation + VAD trimming of long silences
        # Noise or a very short clip can lose all its frames to the VAD; embed the untrimmed audio then.
        if trimmed.size < 0.5 * SAMPLE_RATE:
            trimmed = wav
        with one_torch_thread():
            return np.asarray(self.encoder.embed_utterance(trimmed), np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


class Dnsmos:
    """Microsoft DNSMOS P.835 (SIG/BAK/OVRL) + P.808, via speechmos's ONNX files; a noise sanity check, not MOS."""

    def __init__(self):
        ort = require("onnxruntime")
        require("librosa")
        dnsmos = require("speechmos.dnsmos")
        folder = Path(dnsmos.__file__).resolve().parent / "dnsmos_models"
        self.model = dnsmos.DNSMOS(str(folder / "sig_bak_ovr.onnx"), str(folder / "model_v8.onnx"))
        # speechmos opens its sessions with every core; one thread gives the same scores and does not stall
        # when the CPU is shared (5 s -> 1 s per clip measured on 2 busy cores).
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.model.onnx_sess = ort.InferenceSession(str(folder / "sig_bak_ovr.onnx"), options, providers=providers)
        self.model.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), options, providers=providers)

    def __call__(self, wav: np.ndarray) -> dict[str, float]:
        # speechmos rejects samples outside [-1, 1] and tiles short clips to 9 s (an empty one never ends).
        wav = np.clip(check_audio(wav), -1.0, 1.0)
        out = self.model(wav, SAMPLE_RATE, False)  # False: the standard (not personalised) DNSMOS
        return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]), "ovrl": float(out["ovrl_mos"]),
                "p808": float(out["p808_mos"])}
