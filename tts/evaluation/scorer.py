"""All metric models, loaded once, and the scores of one piece of audio. Prompts and ground truths recur across
rows (and ground truth is scored in every mode), so their embeddings and scores are cached per file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .asr import ListLM, Recognizer, build_list_lm
from .lists import EvalItem
from .metrics import Dnsmos, SpeakerEncoder, check_audio, cosine, is_silent
from .systems import SAMPLE_RATE, load_wav
from .wer import word_errors


@dataclass
class ScorerOptions:
    distractors: int = 100
    distractor_file: Path | None = None
    dnsmos: bool = True
    device: str = "cpu"


def _other_speaker_partners(items: list[EvalItem]) -> dict[str, EvalItem]:
    """utt -> the next row (cyclically) with a ground truth and another speaker: the different-speaker baseline."""
    with_gt = [i for i in items if i.ground_truth_wav is not None and i.ground_truth_wav.is_file()]
    position = {other.utt: k for k, other in enumerate(with_gt)}
    partners: dict[str, EvalItem] = {}
    for item in items:
        start = position.get(item.utt, -1) + 1
        for k in range(len(with_gt)):
            other = with_gt[(start + k) % len(with_gt)]
            if other.speaker_key != item.speaker_key:
                partners[item.utt] = other
                break
    return partners


class Scorer:
    def __init__(self, items: list[EvalItem], work_dir: Path, options: ScorerOptions):
        # The list LM is built from ALL target texts of the list, so --limit does not change the recogniser.
        self.list_lm: ListLM = build_list_lm([i.target_text for i in items], work_dir, options.distractors,
                                             options.distractor_file)
        self.open_asr = Recognizer()
        self.lm_asr = Recognizer(self.list_lm.arpa, self.list_lm.dictionary)
        self.speaker = SpeakerEncoder(options.device)
        self.dnsmos = Dnsmos() if options.dnsmos else None
        self.partners = _other_speaker_partners(items)
        self._embeddings: dict[str, np.ndarray] = {}
        self._gt_scores: dict[tuple[str, str], dict] = {}

    def embedding_of_file(self, path: Path) -> np.ndarray:
        key = str(path)
        if key not in self._embeddings:
            self._embeddings[key] = self.speaker.embed(load_wav(path))
        return self._embeddings[key]

    def score(self, wav: np.ndarray, text: str) -> dict:
        """Recognise and score audio against `text`: both WERs, its DNSMOS, its duration."""
        duration = np.asarray(wav).size / SAMPLE_RATE  # before check_audio pads very short audio
        wav = check_audio(wav)
        hyp_open, hyp_lm = self.open_asr.transcribe(wav), self.lm_asr.transcribe(wav)
        out = {"duration_s": duration, "hyp_open": hyp_open, "hyp_lm": hyp_lm,
               "wer_open": word_errors(text, hyp_open).to_dict(), "wer_lm": word_errors(text, hyp_lm).to_dict()}
        if self.dnsmos is not None:
            out["dnsmos"] = self.dnsmos(wav)
        return out

    def score_output(self, item: EvalItem, wav: np.ndarray) -> dict:
        out = self.score(wav, item.target_text)
        prompt = self.embedding_of_file(item.prompt_wav)
        # Silence carries no voice: similarity 0, the floor of these non-negative (ReLU) d-vectors.
        out["sim"] = 0.0 if is_silent(wav) else cosine(self.speaker.embed(wav), prompt)
        return out

    def score_ground_truth(self, item: EvalItem) -> dict | None:
        """The same metrics on the recording, plus the same- and different-speaker similarity baselines."""
        if item.ground_truth_wav is None:
            return None
        key = (str(item.ground_truth_wav), item.target_text)
        if key not in self._gt_scores:
            self._gt_scores[key] = self.score(load_wav(item.ground_truth_wav), item.target_text)
        out = dict(self._gt_scores[key])
        prompt = self.embedding_of_file(item.prompt_wav)
        out["sim"] = cosine(self.embedding_of_file(item.ground_truth_wav), prompt)  # same speaker
        partner = self.partners.get(item.utt)
        if partner is not None:
            out["sim_other_speaker"] = cosine(self.embedding_of_file(partner.ground_truth_wav), prompt)
            out["other_speaker_utt"] = partner.utt
        return out
