"""What is being evaluated: our TTS cloning each prompt (whole, or streamed as the server and demo stream it), voice
conversion of the ground truth into the prompt's voice (the TTS with a perfect LM), the codec reconstructing the
ground truth, or the ground truth itself. Each system turns one list item into 16 kHz audio and the compute seconds
it took."""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .lists import EvalItem

SAMPLE_RATE = 16000
SYSTEMS = ("tts", "tts-stream", "vc", "codec", "ground-truth")
RANDOM_STREAMS = (None, "semantic", "acoustic")


class SkipItem(Exception):
    """The item cannot be scored by this system (e.g. no ground truth to reconstruct); not a failure."""


@dataclass
class Output:
    wav: np.ndarray  # float32, 16 kHz
    compute_s: float | None  # None: nothing was computed (ground truth)
    extra: dict | None = None


def load_wav(path: Path) -> np.ndarray:
    """An audio file as 16 kHz float32 mono (first channel, as the codec reads it; soxr VHQ resampling).

    Not `codec.audio.load_audio`: importing `codec` pulls transformers (~6 s), too slow for scoring ground truth.
    """
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as audio ({exc})") from exc
    if data.shape[0] == 0:
        raise ValueError(f"{path}: audio is empty")
    return _to_16k(data[:, 0], int(rate))


def _to_16k(wav: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return np.asarray(wav, np.float32)
    import soxr

    return soxr.resample(np.asarray(wav, np.float64), rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)


def ground_truth_audio(item: EvalItem) -> np.ndarray:
    """The item's ground-truth recording at 16 kHz; an item without one is skipped, not failed."""
    if item.ground_truth_wav is None:
        raise SkipItem("no ground-truth wav in the list")
    return load_wav(item.ground_truth_wav)


class GroundTruthSystem:
    name = "ground-truth"

    def describe(self) -> dict:
        return {"system": self.name}

    def generate(self, item: EvalItem) -> Output:
        return Output(ground_truth_audio(item), None)


class CodecSystem:
    """Encode + decode the ground truth: the ceiling the TTS can reach through the codec's tokens. With
    `random_stream` ("semantic" or "acoustic") that stream's ids are replaced by random ones (seeded per utterance)
    before decoding, which shows which stream carries the words."""

    name = "codec"

    def __init__(self, path: str | Path, device: str = "cpu", random_stream: str | None = None, seed: int = 0):
        from codec import SpeechCodec

        if random_stream not in RANDOM_STREAMS:
            raise ValueError(f"random_stream must be one of {RANDOM_STREAMS}, got {random_stream!r}")
        self.path, self.random_stream, self.seed = str(path), random_stream, seed
        self.codec = SpeechCodec.from_pretrained(path, device=device)
        if self.codec.tokenizer is None:
            raise FileNotFoundError(f"{path}: the codec folder has no semantic_tokenizer/, so it cannot encode")

    def describe(self) -> dict:
        described = {"system": self.name, "codec": self.path, "codec_sample_rate": self.codec.sample_rate}
        if self.random_stream:
            described.update(random_stream=self.random_stream, seed=self.seed)
        return described

    def generate(self, item: EvalItem) -> Output:
        wav = ground_truth_audio(item)
        start = time.perf_counter()
        if self.random_stream is None:
            out = self.codec.reconstruct([wav], SAMPLE_RATE)[0].numpy()
        else:
            out = self._decode_with_random_ids(wav, item_seed(self.seed, item.utt))
        seconds = time.perf_counter() - start
        return Output(_to_16k(out, self.codec.sample_rate), seconds)

    def _decode_with_random_ids(self, wav: np.ndarray, seed: int) -> np.ndarray:
        import torch

        from codec.tokens import CodecTokens

        tokens = self.codec.encode([wav], SAMPLE_RATE)
        semantic, acoustic = tokens.clip(0)  # [Ts], [k·Ts]
        config, gen = self.codec.model.config, torch.Generator().manual_seed(seed)
        if self.random_stream == "semantic":
            semantic = torch.randint(0, config.semantic_vocab_size, semantic.shape, generator=gen)
        else:
            acoustic = torch.randint(0, config.codebook_size, acoustic.shape, generator=gen)
        out = self.codec.decode(CodecTokens.from_clips([(semantic, acoustic)]))[0]
        return out[: int(tokens.audio_lengths[0])].numpy()


def item_seed(seed: int, utt: str) -> int:
    # From the id, not the position, so that --limit or a reordered list leaves each utterance's audio unchanged.
    return (seed * 1_000_003 + zlib.crc32(utt.encode())) % 2**31


class TTSSystem:
    """Zero-shot cloning: the prompt (audio + transcript) becomes a voice, then the target text is synthesized."""

    name = "tts"

    def __init__(self, model: str | Path | None = None, seed: int = 0, device: str = "cpu", options=None):
        from tts.pipeline import TTS, SynthesisOptions, default_model_path

        self.path = str(model if model is not None else default_model_path())
        self.tts = TTS.from_pretrained(self.path, device=device)
        self.seed = seed
        self.options = options if options is not None else SynthesisOptions()
        self._voices: dict[tuple[str, str], object] = {}

    def describe(self) -> dict:
        options = {name: value for name, value in asdict(self.options).items() if name != "seed"}
        return {"system": self.name, "model": self.path, "seed": self.seed, "model_sample_rate": self.tts.sample_rate,
                "options": options}

    def voice(self, item: EvalItem) -> tuple[object, float]:
        """The item's prompt as a voice, and the seconds cloning took (0 when cached)."""
        key = (str(item.prompt_wav), item.prompt_text)
        if key in self._voices:  # one prompt serves many targets; clone it once
            return self._voices[key], 0.0
        start = time.perf_counter()
        self._voices[key] = self.tts.clone_voice(item.prompt_wav, item.prompt_text)
        return self._voices[key], time.perf_counter() - start

    def generate(self, item: EvalItem) -> Output:
        voice, clone_s = self.voice(item)
        start = time.perf_counter()
        wav = self.tts.synthesize(item.target_text, voice, self.options, seed=item_seed(self.seed, item.utt))
        seconds = time.perf_counter() - start
        return Output(_to_16k(wav, self.tts.sample_rate), seconds, {"clone_s": clone_s})


class StreamingTTSSystem(TTSSystem):
    """The TTS through `TTS.stream`, as the server and demo stream it: the second stage fills short windows and the
    decoder runs chunk by chunk, so this scores what a streaming listener hears, and the seconds to its first audio."""

    name = "tts-stream"

    def generate(self, item: EvalItem) -> Output:
        voice, clone_s = self.voice(item)
        start, first_audio_s, pieces = time.perf_counter(), None, []
        for piece in self.tts.stream(item.target_text, voice, self.options, seed=item_seed(self.seed, item.utt)):
            if first_audio_s is None:
                first_audio_s = time.perf_counter() - start
            pieces.append(piece)
        seconds = time.perf_counter() - start
        return Output(_to_16k(np.concatenate(pieces), self.tts.sample_rate), seconds,
                      {"clone_s": clone_s, "first_audio_s": first_audio_s})


class VoiceConversionSystem(TTSSystem):
    """The ground truth's semantic ids spoken in the prompt's voice by the second stage and the decoder: the TTS with
    a perfect LM, so that comparing it with `tts` separates the LM's errors from the rest."""

    name = "vc"

    def generate(self, item: EvalItem) -> Output:
        source = ground_truth_audio(item)
        voice, clone_s = self.voice(item)
        start = time.perf_counter()
        wav = self.tts.convert(source, voice, sample_rate=SAMPLE_RATE, options=self.options,
                               seed=item_seed(self.seed, item.utt))
        seconds = time.perf_counter() - start
        return Output(_to_16k(wav, self.tts.sample_rate), seconds, {"clone_s": clone_s})


def make_system(name: str, model: str | Path | None = None, codec: str | Path | None = None, seed: int = 0,
                device: str = "cpu", options=None, random_stream: str | None = None):
    """`options` (SynthesisOptions: sampling) apply to the tts, tts-stream and vc systems, `random_stream` to the
    codec."""
    if random_stream is not None and name != "codec":
        raise ValueError(f"--random-stream applies to --system codec, not {name}")
    if name == "tts":
        return TTSSystem(model, seed=seed, device=device, options=options)
    if name == "tts-stream":
        return StreamingTTSSystem(model, seed=seed, device=device, options=options)
    if name == "vc":
        return VoiceConversionSystem(model, seed=seed, device=device, options=options)
    if name == "codec":
        if codec is None:
            raise ValueError("--system codec needs --codec PATH (a codec folder with semantic_tokenizer/)")
        return CodecSystem(codec, device=device, random_stream=random_stream, seed=seed)
    if name == "ground-truth":
        return GroundTruthSystem()
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
