"""Splitting long text into chunks the LM can speak in one go."""

from __future__ import annotations

import re
from collections.abc import Callable

# A sentence ends at . ! ? ; or CJK stops, followed by space or the end (keeps "3.5" and "e.g." mostly whole).
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:，、])\s+")


def _pack(pieces: list[str], fits: Callable[[str], bool], joiner: str = " ") -> list[str]:
    """Greedily join consecutive pieces while the result still fits."""
    chunks: list[str] = []
    for piece in pieces:
        if chunks and fits(chunks[-1] + joiner + piece):
            chunks[-1] = chunks[-1] + joiner + piece
        else:
            chunks.append(piece)
    return chunks


def split_text(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Sentences (then clauses, then words) packed into chunks of at most `max_tokens` text tokens.

    A single word longer than the limit stays one chunk: the LM's own length bounds still hold for it.
    """
    def fits(piece: str) -> bool:
        return count_tokens(piece) <= max_tokens

    chunks: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text.strip())):
        if not sentence:
            continue
        if fits(sentence):
            chunks.append(sentence)
            continue
        for clause in _pack([c for c in _CLAUSE_END.split(sentence) if c], fits):
            chunks.extend([clause] if fits(clause) else _pack(clause.split(), fits))
    return _pack(chunks, fits)
