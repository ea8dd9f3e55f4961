"""The sac-tts web demo (see demo/README.md)."""
