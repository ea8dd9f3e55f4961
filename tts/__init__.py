"""sac-tts: the pipeline that composes `codec`, `lm` and `flow`, its command line and servers."""

from .errors import TTSError

_LAZY = {"TTS": "pipeline", "SynthesisOptions": "pipeline", "VoicePrompt": "voice", "VoiceStore": "voices",
         "VoiceNotFound": "voices"}
__all__ = ["TTSError", *_LAZY]


def __getattr__(name: str):
    # Imported on first use so that `sac-tts --help` and light sub-commands start without torch/transformers.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tts' has no attribute {name!r}")
