"""Stage 2: acoustic tokens from semantic tokens and a voice prompt (never imports codec or lm)."""
