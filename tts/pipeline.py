"""`TTS`: zero-shot voice cloning by composing the codec, the LM and the second stage.

    text --LM--> 12.5 Hz semantic tokens --flow (prompt's acoustic tokens as prefix)--> acoustic tokens --codec--> wav

A model folder holds `tts_config.json`, `codec/` (with `semantic_tokenizer/`), `lm/` (with its text tokenizer) and
`flow/`; each part also loads on its own.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from codec import SpeechCodec
from codec.audio import AudioError, load_audio
from flow import AcousticFlow, FlowRequest, FlowSamplingConfig
from flow import generate as flow_generate
from flow.sampling import fill_window
from lm import Request, SamplingConfig, SemanticLM, length_bounds
from lm import generate as lm_generate
from lm import stream as lm_stream
from lm.text import TextError, load_text_tokenizer

from .config import FLOW_CODES, TTSConfig
from .effects import time_stretch
from .errors import TTSError
from .streaming import StreamingDecoder
from .text import split_text
from .voice import VoicePrompt

DEFAULT_MODEL_ENV = "SAC_TTS_MODEL"
MAX_SOURCE_SECONDS = 600.0  # voice conversion decodes the whole source at once


@dataclass
class SynthesisOptions:
    seed: int | None = None
    temperature: float = 1.0  # LM sampling
    top_k: int = 25
    top_p: float = 0.8
    min_length_vs_prompt: float = 0.0  # the LM may not stop before this fraction of the prompt's pace predicts
    flow_steps: int = 12
    cfg_scale: float = 2.0
    flow_temperature: float = 1.0
    flow_codes: str = "mean"  # "mean": each frame's code nearest its predicted mean code; "sampled": the sampled id
    speed: float = 1.0  # 0.25 .. 4.0, pitch kept

    def __post_init__(self) -> None:
        if not 0.25 <= self.speed <= 4.0:
            raise TTSError(f"speed must lie in [0.25, 4.0], got {self.speed}")
        if self.flow_codes not in FLOW_CODES:
            raise TTSError(f"flow_codes must be one of {', '.join(FLOW_CODES)}, got {self.flow_codes!r}")
        try:
            self.lm_sampling(), self.flow_sampling()
        except ValueError as exc:
            raise TTSError(str(exc)) from exc

    def lm_sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              min_length_vs_prompt=self.min_length_vs_prompt)

    def flow_sampling(self) -> FlowSamplingConfig:
        return FlowSamplingConfig(steps=self.flow_steps, cfg_scale=self.cfg_scale, temperature=self.flow_temperature)

    def merged(self, **overrides) -> SynthesisOptions:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown synthesis options {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)


def looks_degenerate(semantic: Sequence[int], max_tokens: int) -> bool:
    """A generation that ran into its length cap, or that loops on a few tokens, is retried."""
    if len(semantic) >= max_tokens:
        return True
    tail = list(semantic[-40:])
    return len(tail) >= 40 and len(set(tail)) <= 3


class TTS:
    def __init__(self, codec: SpeechCodec, lm: SemanticLM, text_tokenizer, flow: AcousticFlow,
                 config: TTSConfig | None = None):
        if codec.tokenizer is None:
            raise TTSError("the codec has no semantic tokenizer: voices cannot be cloned without it")
        k = codec.acoustic_per_semantic
        codebook = codec.model.acoustic_quantizer.codebook.weight.detach()  # [V, d]: the vectors the decoder reads
        if (flow.config.acoustic_per_semantic != k or lm.config.semantic_vocab_size != flow.config.semantic_vocab_size
                or len(codebook) != flow.config.acoustic_vocab_size):
            raise TTSError(f"the parts do not fit: codec k={k}, flow k={flow.config.acoustic_per_semantic}, LM "
                           f"semantic vocab {lm.config.semantic_vocab_size}, flow {flow.config.semantic_vocab_size}, "
                           f"codec acoustic codes {len(codebook)}, flow {flow.config.acoustic_vocab_size}")
        self.codec, self.lm, self.text_tokenizer, self.flow = codec, lm, text_tokenizer, flow
        self.acoustic_codebook = codebook.to(flow.device, torch.float32)
        self.config = config or TTSConfig()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> TTS:
        """Load a model folder; without `path`, the default model ($SAC_TTS_MODEL or the bundled one)."""
        folder = Path(path) if path is not None else default_model_path()
        for part in ("codec", "lm", "flow"):
            if not (folder / part).is_dir():
                raise FileNotFoundError(f"{folder} is not a sac-tts model folder: {part}/ is missing")
        config = TTSConfig.load(folder) if (folder / "tts_config.json").is_file() else TTSConfig()
        return cls(SpeechCodec.from_pretrained(folder / "codec", dtype=dtype, device=device),
                   SemanticLM.from_pretrained(folder / "lm", dtype=dtype, device=device),
                   load_text_tokenizer(folder / "lm"),
                   AcousticFlow.from_pretrained(folder / "flow", dtype=dtype, device=device), config)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    # ---- voices --------------------------------------------------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TTSError(f"text must be a string, got {type(text).__name__}")
        try:
            return self.text_tokenizer.encode(text)
        except TextError as exc:
            raise TTSError(str(exc)) from exc

    def clone_voice(self, audio: str | Path | np.ndarray | torch.Tensor, text: str,
                    sample_rate: int | None = None) -> VoicePrompt:
        """A few seconds of speech and its transcript -> a reusable voice prompt (tokenized once)."""
        self._encode_text(text)  # the transcript must be speakable
        cfg = self.config
        semantic, acoustic, seconds = self._tokens(audio, sample_rate, "voice prompt", cfg.min_prompt_seconds,
                                                   cfg.max_prompt_seconds, "trim it, or record more")
        return VoicePrompt(text=text, semantic=semantic, acoustic=acoustic, duration_s=seconds)

    def _tokens(self, audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int | None, what: str,
                min_seconds: float, max_seconds: float, advice: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Audio -> (semantic [Ts], acoustic [Ts * k], seconds), with its length checked."""
        try:
            if isinstance(audio, (str, Path)):
                wav, sample_rate = load_audio(audio, self.sample_rate), self.sample_rate
            elif sample_rate is None:
                raise TTSError("pass sample_rate= with an audio array")
            else:
                wav = audio
            seconds = np.asarray(wav).shape[-1] / sample_rate
            if not min_seconds <= seconds <= max_seconds:
                raise TTSError(f"the {what} is {seconds:.1f} s long; use {min_seconds:g} to {max_seconds:g} s of "
                               f"speech ({advice})")
            tokens = self.codec.encode([wav], sample_rate)
        except AudioError as exc:
            raise TTSError(str(exc)) from exc
        semantic, acoustic = tokens.clip(0)
        return semantic.clone(), acoustic.clone(), seconds

    def convert(self, audio: str | Path | np.ndarray | torch.Tensor, voice: VoicePrompt,
                sample_rate: int | None = None, options: SynthesisOptions | None = None, **overrides) -> np.ndarray:
        """Voice conversion: the words and timing of `audio` (its semantic ids) spoken in `voice` by the second stage
        and the decoder -> float32 wav [samples]. The LM is not used, so this is also the TTS with a perfect LM."""
        options, seed = self._resolve(options, overrides)
        hop_seconds = self.codec.model.config.semantic_hop_samples / self.sample_rate
        semantic, _, seconds = self._tokens(audio, sample_rate, "source speech", hop_seconds, MAX_SOURCE_SECONDS,
                                            "cut longer speech into parts")
        acoustic = self._acoustic(semantic.tolist(), voice, options, seed)
        wav = self._decode(semantic, acoustic, voice)[:round(seconds * self.sample_rate)]  # the codec's padding off
        return time_stretch(wav, options.speed, self.sample_rate)

    # ---- synthesis -----------------------------------------------------------------------------------------
    def _chunks(self, text: str) -> list[list[int]]:
        """Text ids of each chunk (sentences packed up to the chunk limit); unspeakable pieces dropped."""
        self._encode_text(text)  # raises on empty or unspeakable text

        def count(piece: str) -> int:
            try:
                return len(self.text_tokenizer.encode(piece))
            except TextError:
                return 0

        pieces = split_text(text, count, self.config.max_chunk_text_tokens)
        return [self.text_tokenizer.encode(p) for p in pieces if count(p)]

    def _lm_request(self, text_ids: list[int], voice: VoicePrompt, options: SynthesisOptions
                    ) -> tuple[Request, SamplingConfig]:
        """The LM request for one chunk, bounded by the model's `max_length_vs_prompt` too."""
        sampling = replace(options.lm_sampling(), max_length_vs_prompt=self.config.max_length_vs_prompt)
        return Request(text_ids, self._encode_text(voice.text), voice.semantic.tolist()), sampling

    def _semantic(self, text_ids: list[int], voice: VoicePrompt, options: SynthesisOptions, seed: int) -> list[int]:
        """LM generation with a guard: a degenerate result (length cap, loop) is retried with another seed."""
        request, sampling = self._lm_request(text_ids, voice, options)
        cap = length_bounds(request, sampling)[1]
        for attempt in range(self.config.max_retries + 1):
            semantic = lm_generate(self.lm, [request], sampling, seed=seed + attempt)[0]
            if not looks_degenerate(semantic, cap):
                break
        return semantic or [0]

    def _acoustic(self, semantic: list[int], voice: VoicePrompt, options: SynthesisOptions, seed: int) -> torch.Tensor:
        request = FlowRequest(torch.tensor(semantic), voice.acoustic, voice.semantic)
        return flow_generate(self.flow, [request], options.flow_sampling(), seed=seed,
                             codebook=self._flow_codebook(options))[0]

    def _flow_codebook(self, options: SynthesisOptions) -> torch.Tensor | None:
        return self.acoustic_codebook if options.flow_codes == "mean" else None

    def _decode(self, semantic: torch.Tensor, acoustic: torch.Tensor, voice: VoicePrompt) -> np.ndarray:
        """Decode after the prompt's last tokens, which give the non-causal decoder its left context."""
        context_semantic, context_acoustic = voice.tail(self.config.decode_context_tokens)
        full_semantic = torch.cat([context_semantic, semantic])
        full_acoustic = torch.cat([context_acoustic, acoustic])
        wav = self.codec.model.decode(full_semantic[None], full_acoustic[None])[0, 0].float().cpu().numpy()
        return wav[len(context_semantic) * self.codec.model.config.semantic_hop_samples:]

    def _resolve(self, options: SynthesisOptions | None, overrides: dict) -> tuple[SynthesisOptions, int]:
        options = (options or SynthesisOptions()).merged(**overrides) if overrides else (options or SynthesisOptions())
        seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**31)
        return options, seed

    def _pause(self) -> np.ndarray:
        return np.zeros(int(self.config.pause_seconds * self.sample_rate), dtype=np.float32)

    def synthesize(self, text: str, voice: VoicePrompt, options: SynthesisOptions | None = None,
                   **overrides) -> np.ndarray:
        """Speech for `text` in `voice` -> float32 wav [samples] at `sample_rate`. Text of any length."""
        options, seed = self._resolve(options, overrides)
        return self._synthesize_chunks(self._chunks(text), voice, options, seed)

    def _synthesize_chunks(self, chunks: list[list[int]], voice: VoicePrompt, options: SynthesisOptions,
                           seed: int) -> np.ndarray:
        """Text ids of each chunk -> one wav, chunks joined with pauses."""
        pieces: list[np.ndarray] = []
        for i, text_ids in enumerate(chunks):
            chunk_seed = seed + 7919 * i  # each chunk its own draw, all fixed by `seed`
            semantic = self._semantic(text_ids, voice, options, chunk_seed)
            acoustic = self._acoustic(semantic, voice, options, chunk_seed)
            if i:
                pieces.append(self._pause())
            pieces.append(time_stretch(self._decode(torch.tensor(semantic), acoustic, voice), options.speed,
                                       self.sample_rate))
        return np.concatenate(pieces)

    def synthesize_batch(self, texts: Sequence[str], voice: VoicePrompt | Sequence[VoicePrompt],
                         options: SynthesisOptions | None = None, **overrides) -> list[np.ndarray]:
        """Many texts (each in its voice, or all in one) -> one wav each; bad texts fail before any work."""
        voices = [voice] * len(texts) if isinstance(voice, VoicePrompt) else list(voice)
        if len(voices) != len(texts):
            raise TTSError(f"{len(texts)} texts but {len(voices)} voices")
        chunked = [self._chunks(text) for text in texts]  # validates every text up front
        options, seed = self._resolve(options, overrides)
        return [self._synthesize_chunks(chunks, v, options, seed + 104729 * i)
                for i, (chunks, v) in enumerate(zip(chunked, voices))]

    def stream(self, text: str, voice: VoicePrompt, options: SynthesisOptions | None = None,
               **overrides) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as soon as they are decodable: LM tokens stream into windowed second-stage
        fills, whose frames stream into the chunked decoder (`StreamingDecoder`). Runaway protection here is the
        LM's length bound (at most `max_length_vs_prompt` times the prompt's pace) and repetition-aware sampling
        (a streamed chunk cannot be retried once heard)."""
        chunks = self._chunks(text)  # errors surface before the first chunk
        options, seed = self._resolve(options, overrides)
        for i, text_ids in enumerate(chunks):
            if i:
                yield self._pause()
            for audio in self._stream_chunk(text_ids, voice, options, seed + 7919 * i):
                yield time_stretch(audio, options.speed, self.sample_rate)

    def _stream_chunk(self, text_ids: list[int], voice: VoicePrompt, options: SynthesisOptions,
                      seed: int) -> Iterator[np.ndarray]:
        cfg, k = self.config, self.codec.acoustic_per_semantic
        window, lookahead, context = cfg.stream_chunk_tokens, cfg.stream_lookahead_tokens, cfg.decode_context_tokens
        tokens = lm_stream(self.lm, *self._lm_request(text_ids, voice, options), seed=seed)
        decoder = StreamingDecoder(self.codec.model, voice, cfg)
        generator = torch.Generator(device=self.flow.device).manual_seed(seed)
        semantic: list[int] = []
        acoustic = voice.acoustic.new_zeros(0)
        done = False
        while True:
            committed = len(acoustic) // k
            while not done and len(semantic) < committed + window + lookahead:
                token = next(tokens, None)
                done = token is None
                semantic += [] if done else [token]
            if done and not semantic:
                semantic = [0]  # an immediate <eos>: speak one frame rather than nothing
            if committed >= len(semantic):
                return
            if done:
                end = ahead = len(semantic)
            else:
                end, ahead = committed + window, committed + window + lookahead
            # The prompt fills what is left of the second stage's context after this window.
            room = self.flow.config.max_frames // k - (ahead - max(0, committed - context))
            new = fill_window(self.flow, torch.tensor(semantic, dtype=torch.long), acoustic, (committed, end, ahead),
                              context, voice.tail(room), options.flow_sampling(), generator,
                              self._flow_codebook(options))
            acoustic = torch.cat([acoustic, new])
            yield from decoder.push(torch.tensor(semantic[committed:end]), new, final=done and end == len(semantic))


def default_model_path() -> Path:
    """$SAC_TTS_MODEL, else the model shipped inside the package (`tts/default_model`)."""
    if os.environ.get(DEFAULT_MODEL_ENV):
        return Path(os.environ[DEFAULT_MODEL_ENV])
    bundled = Path(__file__).resolve().parent / "default_model"
    if not (bundled / "codec").is_dir():
        raise FileNotFoundError("no default model is installed yet: pass --model PATH (a folder with codec/, lm/ "
                                f"and flow/) or set {DEFAULT_MODEL_ENV}")
    return bundled
