"""What the demo's buttons do, kept apart from the layout so tests can call it without a browser.

Every public method turns bad input into `DemoError` (a `gr.Error`), so the page shows a message naming the problem
instead of a stack trace, and nothing a visitor types can take the server down.
"""

from __future__ import annotations

import hashlib
import logging
import random
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from codec.audio import AudioError, load_audio, save_wav
from tts.errors import TTSError
from tts.pipeline import TTS, SynthesisOptions
from tts.voice import VoicePrompt
from tts.voices import VoiceStore

log = logging.getLogger(__name__)

PROMPT_CHOICE = "__prompt__"  # dropdown value for "clone the uploaded prompt"; saved names cannot start with "_"
PROMPT_LABEL = "The prompt below (cloned now)"
SILENCE_PEAK = 1e-4  # below this a prompt carries no voice to clone
RESULT_MAX_AGE_S = 3600  # finished files are kept this long for download, then pruned
VOICE_CACHE_SIZE = 8


class DemoError(gr.Error):
    """A problem the visitor can fix; shown in the page as a red message."""

    def __init__(self, message: str):
        super().__init__(message, duration=15, print_exception=False)


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    """Float audio -> int16, clipped; gradio would otherwise peak-normalise each streamed chunk on its own."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)


class DemoBackend:
    """The state behind one demo page: the model, the saved voices and a small cache of cloned prompts."""

    def __init__(self, tts: TTS, voices: VoiceStore, results_dir: str | Path | None = None):
        self.tts, self.voices = tts, voices
        self.results_dir = Path(results_dir or tempfile.mkdtemp(prefix="sac-tts-demo-"))
        self.results_dir.mkdir(parents=True, exist_ok=True)
        # One model on a CPU: running two requests at once only makes both slower, and the modules are not
        # guaranteed re-entrant, so synthesis and cloning take turns.
        self._model_lock = threading.Lock()
        self._cache: OrderedDict[str, VoicePrompt] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---- voices --------------------------------------------------------------------------------------------
    def voice_choices(self) -> list[tuple[str, str]]:
        rows = self.voices.list()
        return [(PROMPT_LABEL, PROMPT_CHOICE)] + [(f"{r['name']} ({r['duration_s']:.1f} s)", r["name"]) for r in rows]

    def voice_dropdown(self, value: str = PROMPT_CHOICE) -> dict[str, Any]:
        choices = self.voice_choices()
        if value not in {v for _, v in choices}:
            value = PROMPT_CHOICE
        return gr.update(choices=choices, value=value)

    def describe_voice(self, choice: str | None) -> str:
        if not choice or choice == PROMPT_CHOICE:
            return "Upload or record 3-15 s of clean speech and type exactly what it says."
        try:
            voice = self.voices.get(choice)
        except TTSError as exc:
            return f"**{exc}**"
        return f"Saved voice **{choice}** ({voice.duration_s:.1f} s): “{voice.text}”"

    def clone_prompt(self, audio_path: str | None, transcript: str | None) -> VoicePrompt:
        """The uploaded or recorded prompt as a voice; repeated clicks with the same prompt reuse the tokens."""
        if not audio_path:
            raise DemoError("No voice prompt: upload or record a few seconds of speech, or pick a saved voice.")
        transcript = (transcript or "").strip()
        if not transcript:
            raise DemoError("The prompt's transcript is empty: type exactly what is said in the prompt audio.")
        try:
            wav = load_audio(audio_path, self.tts.sample_rate)
        except AudioError as exc:
            raise DemoError(f"Cannot read the voice prompt: {exc}") from exc
        if wav.size == 0 or float(np.max(np.abs(wav))) < SILENCE_PEAK:
            raise DemoError("The voice prompt is silent: upload or record a few seconds of speech.")
        key = hashlib.sha256(wav.astype(np.float32).tobytes() + transcript.encode()).hexdigest()
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            with self._model_lock:
                voice = self.tts.clone_voice(wav, transcript, sample_rate=self.tts.sample_rate)
        except TTSError as exc:
            raise DemoError(f"Cannot clone the voice prompt: {exc}") from exc
        with self._cache_lock:
            self._cache[key] = voice
            while len(self._cache) > VOICE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return voice

    def resolve_voice(self, choice: str | None, audio_path: str | None, transcript: str | None) -> VoicePrompt:
        if choice and choice != PROMPT_CHOICE:
            try:
                return self.voices.get(choice)
            except TTSError as exc:
                raise DemoError(str(exc)) from exc
        return self.clone_prompt(audio_path, transcript)

    def save_voice(self, name: str | None, audio_path: str | None, transcript: str | None):
        """Clone the current prompt and store it under `name`; returns (dropdown update, message)."""
        name = (name or "").strip()
        if not name:
            raise DemoError("Type a name for the voice first (letters, digits, '_', '-' or '.').")
        voice = self.clone_prompt(audio_path, transcript)
        try:
            self.voices.add(name, voice)
        except TTSError as exc:
            raise DemoError(str(exc)) from exc
        except OSError as exc:
            raise DemoError(f"Cannot write the voice to {self.voices.folder}: {exc}") from exc
        gr.Info(f"Saved voice “{name}”.")
        return self.voice_dropdown(name), f"Saved voice **{name}** ({voice.duration_s:.1f} s)."

    def delete_voice(self, choice: str | None):
        if not choice or choice == PROMPT_CHOICE:
            raise DemoError("Pick a saved voice in the “Voice” list to delete it.")
        try:
            self.voices.remove(choice)
        except TTSError as exc:
            raise DemoError(str(exc)) from exc
        gr.Info(f"Deleted voice “{choice}”.")
        return self.voice_dropdown(PROMPT_CHOICE), f"Deleted voice **{choice}**."

    # ---- synthesis -----------------------------------------------------------------------------------------
    @staticmethod
    def options(temperature: float, top_p: float, top_k: float, flow_steps: float, cfg_scale: float, speed: float,
                seed: float | None) -> SynthesisOptions:
        # A seed of -1 (or none) means "pick one", but the pick is made here so the page can report it.
        seed_value = random.SystemRandom().randrange(2**31) if seed is None or int(seed) < 0 else int(seed)
        try:
            return SynthesisOptions(seed=seed_value, temperature=float(temperature), top_p=float(top_p),
                                    top_k=int(top_k), flow_steps=int(flow_steps), cfg_scale=float(cfg_scale),
                                    speed=float(speed))
        except (TTSError, TypeError, ValueError) as exc:
            raise DemoError(f"Bad sampling setting: {exc}") from exc

    def synthesize(self, choice: str | None, audio_path: str | None, transcript: str | None, text: str | None,
                   temperature: float, top_p: float, top_k: float, flow_steps: float, cfg_scale: float,
                   speed: float, seed: float | None, stream: bool = True) -> Iterator[tuple[Any, Any, str]]:
        """Yield (live chunk, result file, status); the live chunk is skipped when `stream` is off."""
        text = (text or "").strip()
        if not text:
            raise DemoError("The text to speak is empty: type a sentence or two.")
        options = self.options(temperature, top_p, top_k, flow_steps, cfg_scale, speed, seed)
        voice = self.resolve_voice(choice, audio_path, transcript)
        sr, chunks, started = self.tts.sample_rate, [], time.perf_counter()
        try:
            for chunk in self._locked_chunks(self.tts.stream(text, voice, options)):
                chunks.append(np.asarray(chunk, dtype=np.float32))
                if stream:
                    yield (sr, to_pcm16(chunk)), gr.skip(), f"Speaking… {sum(map(len, chunks)) / sr:.1f} s so far"
        except TTSError as exc:
            raise DemoError(f"Cannot synthesize: {exc}") from exc
        except Exception as exc:  # a model bug must not take the page down; show it and keep serving
            log.exception("synthesis failed")
            raise DemoError(f"Synthesis failed ({type(exc).__name__}): {exc}") from exc
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        elapsed = time.perf_counter() - started
        path = self._write_result(wav, options.seed)
        seconds = len(wav) / sr
        status = (f"Done: {seconds:.1f} s of audio in {elapsed:.1f} s "
                  f"(real-time factor {elapsed / max(seconds, 1e-6):.2f}), seed {options.seed}.")
        yield (gr.skip() if stream else (sr, to_pcm16(wav))), str(path), status

    def _locked_chunks(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        # The lock is held while a chunk is computed, never across a yield: a visitor who closes the tab leaves
        # the generator suspended, and a lock held there would block everyone else.
        while True:
            with self._model_lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    def _write_result(self, wav: np.ndarray, seed: int | None) -> Path:
        self._prune_results()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return save_wav(self.results_dir / f"sac-tts-{stamp}-seed{seed}.wav", wav, self.tts.sample_rate)

    def _prune_results(self) -> None:
        # gradio serves its own copy, so old files here are only clutter in /tmp
        cutoff = time.time() - RESULT_MAX_AGE_S
        for old in self.results_dir.glob("*.wav"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                pass
