"""WER's recogniser: pocketsphinx's English model (it ships in the wheel), open-vocabulary and with a list LM.

The open-vocabulary decoder uses the wheel's general trigram LM; real read speech already scores 15-30 % WER
with it, so it only compares systems. The list LM is a trigram built with pocketsphinx's `ArpaBoLM` from the
normalised target texts of the whole list plus N distractor sentences: intelligible speech then decodes almost
perfectly (0-2 %), while noise or the wrong sentence decodes as other in-domain words (~100 %). The distractors
keep the LM from being an oracle: without them every recognised word sequence would be some target sentence.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .deps import require
from .wer import normalize_for_wer

SAMPLE_RATE = 16000
DISTRACTORS_FILE = Path(__file__).resolve().parent / "distractors.txt"


def model_dir() -> Path:
    return Path(require("pocketsphinx").__file__).resolve().parent / "model" / "en-us"


class Recognizer:
    """One pocketsphinx decoder; `lm`/`dictionary` default to the wheel's open-vocabulary English model."""

    def __init__(self, lm: Path | None = None, dictionary: Path | None = None):
        pocketsphinx = require("pocketsphinx")
        kwargs = {"samprate": SAMPLE_RATE, "logfn": os.devnull}
        if lm is not None:
            kwargs.update(lm=str(lm), dict=str(dictionary or model_dir() / "cmudict-en-us.dict"))
        self.decoder = pocketsphinx.Decoder(**kwargs)

    def transcribe(self, wav: np.ndarray) -> str:
        """16 kHz float audio -> recognised words (may be empty)."""
        pcm = (np.clip(np.asarray(wav, np.float64), -1.0, 1.0) * 32767).astype(np.int16)
        # The front end carries CMN and noise estimates over from the previous utterance, so the same audio decoded
        # after different audio gave different words (seen on 2 of 8 clips); a fresh front end makes each result
        # depend only on its own audio, as with a new decoder.
        self.decoder.reinit_feat()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def read_dictionary(path: Path) -> dict[str, list[str]]:
    """cmudict lines `word phones...` / `word(2) phones...` -> base word -> its dictionary lines."""
    entries: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word = line.split(maxsplit=1)[0] if line.strip() else ""
            if word:
                entries.setdefault(word.split("(")[0], []).append(line.rstrip("\n"))
    return entries


def load_distractors(path: Path | None = None) -> list[str]:
    path = path or DISTRACTORS_FILE
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class ListLM:
    arpa: Path
    dictionary: Path
    sentences: int
    distractors: int
    vocabulary: int
    oov_words: list[str] = field(default_factory=list)

    def info(self) -> dict:
        return {"arpa": str(self.arpa), "sentences": self.sentences, "distractor_sentences": self.distractors,
                "vocabulary": self.vocabulary, "oov_words_dropped": self.oov_words}


def build_list_lm(targets: list[str], folder: Path, distractors: int = 100,
                  distractor_file: Path | None = None) -> ListLM:
    """Write `list_lm.arpa` + a dictionary cut to its words into `folder` (see the module docstring)."""
    lm_module = require("pocketsphinx.lm")
    entries = read_dictionary(model_dir() / "cmudict-en-us.dict")
    target_lines = list(dict.fromkeys(t for t in (normalize_for_wer(x) for x in targets) if t))
    taken = set(target_lines)
    extra = [d for d in dict.fromkeys(normalize_for_wer(x) for x in load_distractors(distractor_file))
             if d and d not in taken][:max(distractors, 0)]
    # A word without a pronunciation cannot be recognised and makes pocketsphinx refuse the LM: drop it (every
    # system loses the same reference words, and the report lists them).
    oov = sorted({w for line in target_lines + extra for w in line.split() if w not in entries})
    sentences = [" ".join(w for w in line.split() if w in entries) for line in target_lines + extra]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("the list LM has no sentences: no target text has a word in the recogniser's dictionary")
    model = lm_module.ArpaBoLM(sentfile=io.StringIO("\n".join(sentences) + "\n"), add_start=True, case="lower")
    model.compute()
    folder.mkdir(parents=True, exist_ok=True)
    arpa, dictionary = folder / "list_lm.arpa", folder / "list_lm.dict"
    with open(arpa, "w", encoding="utf-8") as f:
        model.write(f)
    vocabulary = sorted({w for s in sentences for w in s.split()})
    dictionary.write_text("\n".join(line for w in vocabulary for line in entries[w]) + "\n", encoding="utf-8")
    return ListLM(arpa, dictionary, len(sentences), len(extra), len(vocabulary), oov)
