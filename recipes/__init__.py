"""Training recipes: plain scripts (`python recipes/train_lm.py ...`), importable so tests can call their `main`."""
