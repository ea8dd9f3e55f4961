"""The evaluation loop: generate each item with the system, score it and its ground truth, write JSON + markdown.

A failing utterance (unreadable audio, a prompt the TTS refuses, a metric error) is recorded with its error and
skipped; it never stops the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from tqdm import tqdm

from .lists import EvalItem, missing_audio, read_list
from .report import aggregate, environment, list_digest, write_markdown
from .scorer import Scorer, ScorerOptions
from .systems import SAMPLE_RATE, SkipItem, make_system


@dataclass
class EvalSettings:
    system: str = "tts"
    model: str | None = None
    codec: str | None = None
    seed: int = 0
    limit: int | None = None
    scorer: ScorerOptions = field(default_factory=ScorerOptions)
    save_audio: bool = True
    progress: bool = True
    threads: int | None = None  # torch threads for the system (RTF depends on it); None: torch's default
    options: Any = None  # SynthesisOptions (sampling) for the tts and vc systems; None: the defaults
    random_stream: str | None = None  # codec system: "semantic" or "acoustic" ids replaced by random ones


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def evaluate_item(item: EvalItem, system, scorer: Scorer, out_dir: Path, save_audio: bool) -> dict:
    row: dict = {"utt": item.utt, "target_text": item.target_text, "prompt_wav": str(item.prompt_wav),
                 "ground_truth_wav": str(item.ground_truth_wav) if item.ground_truth_wav else None,
                 "speaker": item.speaker, "status": "ok", "error": None, "system": None, "ground_truth": None}
    missing = missing_audio(item)  # one bad path fails its row, not the run
    try:
        if "ground_truth" in missing:
            raise FileNotFoundError(missing["ground_truth"])
        row["ground_truth"] = scorer.score_ground_truth(item)
    except Exception as exc:  # noqa: BLE001 -- the baseline failing must not hide the system's result
        row["ground_truth"] = {"error": _error(exc)}
    try:
        if "prompt" in missing:
            raise FileNotFoundError(missing["prompt"])
        if system.name == "ground-truth":
            if item.ground_truth_wav is None:
                raise SkipItem("no ground-truth wav in the list")
            if "error" in row["ground_truth"]:
                raise RuntimeError(row["ground_truth"]["error"])
            row["system"] = dict(row["ground_truth"], compute_s=None, rtf=None)
            return row
        output = system.generate(item)
        scores = scorer.score_output(item, output.wav)
        rtf = (output.compute_s / scores["duration_s"]
               if output.compute_s is not None and scores["duration_s"] > 0 else None)
        row["system"] = {**scores, "compute_s": output.compute_s, "rtf": rtf, **(output.extra or {})}
        if save_audio:
            path = out_dir / "wavs" / f"{item.utt}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, np.clip(output.wav, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            row["system"]["audio"] = str(path)
    except SkipItem as exc:
        row.update(status="skipped", error=str(exc))
    except Exception as exc:  # noqa: BLE001 -- any failure is this utterance's, never the run's
        row.update(status="failed", error=_error(exc))
    return row


def run_evaluation(list_path: str | Path, out_dir: str | Path, settings: EvalSettings) -> dict:
    """Evaluate every item of `list_path` (or the first `limit`); returns the report also written to `out_dir`."""
    import torch

    before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _run(list_path, out_dir, settings)
    finally:
        torch.set_num_threads(before)


def _run(list_path: str | Path, out_dir: str | Path, settings: EvalSettings) -> dict:
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_items = read_list(list_path, check_files=False)
    items = all_items[: settings.limit] if settings.limit else all_items
    missing = [m for item in items for m in missing_audio(item).values()]
    if missing:
        tqdm.write(f"warning: {len(missing)} audio files not found; their rows will fail:\n  "
                   + "\n  ".join(missing[:5]) + ("\n  ..." if len(missing) > 5 else ""))

    t0 = time.perf_counter()
    scorer = Scorer(all_items, out_dir / "list_lm", settings.scorer)
    metric_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    system = make_system(settings.system, settings.model, settings.codec, settings.seed, settings.scorer.device,
                         settings.options, settings.random_stream)
    system_load_s = time.perf_counter() - t0

    rows: list[dict] = []
    with open(out_dir / "rows.jsonl", "w", encoding="utf-8") as partial:  # survives an interrupted run
        bar = tqdm(items, desc=f"eval {settings.system}", unit="utt", disable=not settings.progress)
        for item in bar:
            row = evaluate_item(item, system, scorer, out_dir, settings.save_audio)
            if row["status"] == "failed":
                tqdm.write(f"failed {item.utt}: {row['error']}")
            rows.append(row)
            partial.write(json.dumps(row) + "\n")
            partial.flush()

    report = {
        "aggregates": aggregate(rows),
        "settings": {"list": str(Path(list_path).resolve()), "list_sha256": list_digest(list_path),
                     "list_items": len(all_items), "evaluated_items": len(items), "seed": settings.seed,
                     "limit": settings.limit, **system.describe(),
                     "scorer": {**asdict(settings.scorer), "distractor_file": str(settings.scorer.distractor_file)
                                if settings.scorer.distractor_file else "bundled"},
                     "list_lm": scorer.list_lm.info(),
                     "wer_normalisation": "lm.normalize.english_normalize, lower case, hyphens split, punctuation "
                                          "removed (apostrophes inside words kept); jiwer alignment",
                     "asr": "pocketsphinx en-us (wheel): open = default LM, lm = list LM",
                     "speaker_model": "resemblyzer VoiceEncoder (wheel), cosine of utterance embeddings",
                     "dnsmos": "speechmos dnsmos (P.835 sig_bak_ovr.onnx + P.808)" if settings.scorer.dnsmos else None},
        "environment": environment(),
        "timing": {"metric_load_s": metric_load_s, "system_load_s": system_load_s,
                   "total_s": time.perf_counter() - started},
        "rows": rows,
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    write_markdown(report, out_dir / "results.md")
    return report
