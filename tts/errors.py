"""Errors the pipeline raises for bad input: each message names the problem and what to do."""


class TTSError(ValueError):
    """Bad input to the TTS pipeline (text, audio, voice, options)."""
