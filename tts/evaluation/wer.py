"""Text normalisation for scoring, per-utterance word errors (jiwer alignment) and the two ways to pool them.

Seed-TTS-eval reports the MEAN of per-utterance WERs; the pooled WER (all errors / all reference words) weights
long utterances more. Both are reported: one bad short utterance moves the mean much more than the pooled value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lm.normalize import english_normalize

from .deps import require

_NOT_WORD = re.compile(r"[^\w\s']")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")  # quotes, not the apostrophe of "don't"


def normalize_for_wer(text: str) -> str:
    """Spoken-form, lower-case words without punctuation: "42" and "Forty-two!" both become "forty two".

    Runs the project's English normaliser first (numbers, dates, currency... to words), so that a reference
    written with digits matches an ASR hypothesis, which is always words. Hyphens split words because the
    normaliser writes "forty-two" while the recogniser's dictionary says "forty two".
    """
    text = english_normalize(text).lower().replace("’", "'").replace("-", " ")
    text = _NOT_WORD.sub(" ", text).replace("_", " ")
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class WordErrors:
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        """Reference words the recogniser heard right: near the noise floor the WER hides these."""
        return self.ref_words - self.substitutions - self.deletions

    @property
    def wer(self) -> float:
        # An empty reference (nothing to say) scores 0 if nothing was heard, else every heard word is an error.
        return self.errors / self.ref_words if self.ref_words else float(self.insertions > 0)

    def to_dict(self) -> dict:
        return {"wer": self.wer, "errors": self.errors, "ref_words": self.ref_words, "sub": self.substitutions,
                "del": self.deletions, "ins": self.insertions}

    @classmethod
    def from_dict(cls, data: dict) -> WordErrors:
        """The counts of a `to_dict` (as a results JSON stores them)."""
        return cls(data["sub"], data["del"], data["ins"], data["ref_words"])


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Align the normalised texts with jiwer and count substitutions, deletions and insertions."""
    ref, hyp = normalize_for_wer(reference), normalize_for_wer(hypothesis)
    if not ref:
        return WordErrors(0, 0, len(hyp.split()), 0)
    if not hyp:  # jiwer refuses an empty hypothesis in some versions; every reference word is deleted
        return WordErrors(0, len(ref.split()), 0, len(ref.split()))
    out = require("jiwer").process_words(ref, hyp)
    return WordErrors(out.substitutions, out.deletions, out.insertions, len(ref.split()))


def mean_wer(items: Iterable[WordErrors]) -> float | None:
    """Mean of per-utterance WERs (Seed-TTS-eval's number)."""
    values = [e.wer for e in items]
    return sum(values) / len(values) if values else None


def word_totals(items: Iterable[WordErrors]) -> dict[str, int]:
    """Summed counts over utterances: reference words, words right, substitutions, deletions, insertions."""
    items = list(items)
    return {"ref_words": sum(e.ref_words for e in items), "hits": sum(e.hits for e in items),
            "sub": sum(e.substitutions for e in items), "del": sum(e.deletions for e in items),
            "ins": sum(e.insertions for e in items)}


def pooled_wer(items: Iterable[WordErrors]) -> float | None:
    """All errors over all reference words."""
    items = list(items)
    words = sum(e.ref_words for e in items)
    return sum(e.errors for e in items) / words if words else None
