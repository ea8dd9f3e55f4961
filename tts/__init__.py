"""sac-tts: the pipeline that composes `codec`, `lm` and `flow`, its command line and servers."""
