"""sac-tts: the pipeline that composes `codec`, `lm` and `flow`, its command line and servers."""

from .errors import TTSError
from .pipeline import TTS, SynthesisOptions
from .voice import VoicePrompt
from .voices import VoiceNotFound, VoiceStore

__all__ = ["TTS", "SynthesisOptions", "TTSError", "VoicePrompt", "VoiceStore", "VoiceNotFound"]
