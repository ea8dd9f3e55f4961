"""Stage 1: an autoregressive LM from text to 12.5 Hz semantic tokens (integer tokens only; never imports codec)."""
