"""Corpora for training: one JSONL manifest format (`manifest`), builders for common layouts (`builders`), the
project's offline real speech (`shared`), and a multi-speaker synthetic English corpus from offline engines
(`synth`, `engines`, `texts`). Command line: `python -m recipes.corpora --help`; details in README.md here."""

from recipes.corpora.manifest import ManifestError, read_manifest, validate_manifest, write_manifest

__all__ = ["ManifestError", "read_manifest", "validate_manifest", "write_manifest"]
