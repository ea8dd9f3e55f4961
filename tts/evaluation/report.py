"""Aggregates over the rows, the environment record and the markdown table."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from .deps import versions
from .wer import WordErrors, mean_wer, pooled_wer, word_totals


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _errors(scores: list[dict], key: str) -> list[WordErrors]:
    return [WordErrors.from_dict(s[key]) for s in scores]


def summarize(scores: list[dict]) -> dict:
    """Aggregate per-utterance score dicts of one side (system or ground truth)."""
    out: dict = {"n": len(scores)}
    if not scores:
        return out
    for key in ("wer_open", "wer_lm"):
        errors = _errors(scores, key)
        out[key] = {"mean": mean_wer(errors), "pooled": pooled_wer(errors), **word_totals(errors)}
    out["sim"] = _mean([s.get("sim") for s in scores])
    if any("dnsmos" in s for s in scores):
        out["dnsmos"] = {k: _mean([s["dnsmos"][k] for s in scores if "dnsmos" in s])
                         for k in ("sig", "bak", "ovrl", "p808")}
    out["audio_s"] = sum(s["duration_s"] for s in scores)
    computed = [s for s in scores if s.get("compute_s") is not None]
    # total compute over total audio, and the mean of per-utterance RTFs
    if computed and sum(s["duration_s"] for s in computed) > 0:
        out["rtf"] = {"total": sum(s["compute_s"] for s in computed) / sum(s["duration_s"] for s in computed),
                      "mean": _mean([s["rtf"] for s in computed])}
    first = [s["first_audio_s"] for s in scores if s.get("first_audio_s") is not None]
    if first:  # streamed systems: seconds from the request to the first audio chunk
        out["first_audio_s"] = {"mean": _mean(first), "max": max(first)}
    other = [s["sim_other_speaker"] for s in scores if s.get("sim_other_speaker") is not None]
    if other:
        out["sim_other_speaker"] = _mean(other)
    return out


def aggregate(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    gt = [r["ground_truth"] for r in rows if r.get("ground_truth") and "error" not in r["ground_truth"]]
    return {"counts": {"total": len(rows), "ok": len(ok), "failed": sum(r["status"] == "failed" for r in rows),
                       "skipped": sum(r["status"] == "skipped" for r in rows),
                       "ground_truth_failed": sum(bool(r.get("ground_truth")) and "error" in r["ground_truth"]
                                                  for r in rows)},
            "system": summarize([r["system"] for r in ok]),
            "ground_truth": summarize(gt),
            # the system on exactly the rows that have a ground truth: the like-for-like comparison
            "system_on_ground_truth_rows": summarize([r["system"] for r in ok if r.get("ground_truth")
                                                     and "error" not in r["ground_truth"]])}


def list_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git(*args: str) -> str | None:
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                             check=False)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import torch

    status = _git("status", "--porcelain")
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": bool(status) if status is not None else None, "packages": versions()}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _hits(totals: dict | None) -> str:
    return "–" if not totals else f"{totals['hits']} / {totals['ref_words']}"


def _table(system: str, agg: dict) -> list[str]:
    s, g = agg["system"], agg["ground_truth"]

    def both(fn) -> str:
        return f"{fn(s)} | {fn(g)}"

    def dn(side: dict) -> str:
        d = side.get("dnsmos")
        return "–" if not d else f"{d['sig']:.2f} / {d['bak']:.2f} / {d['ovrl']:.2f}"

    rows = [f"| metric | {system} | ground truth |", "|---|---|---|",
            "| utterances scored | " + both(lambda x: str(x["n"])) + " |",
            "| WER open vocabulary, mean per utt (%) | "
            + both(lambda x: _pct(x.get("wer_open", {}).get("mean"))) + " |",
            "| WER open vocabulary, pooled (%) | " + both(lambda x: _pct(x.get("wer_open", {}).get("pooled"))) + " |",
            "| WER list LM, mean per utt (%) | " + both(lambda x: _pct(x.get("wer_lm", {}).get("mean"))) + " |",
            "| WER list LM, pooled (%) | " + both(lambda x: _pct(x.get("wer_lm", {}).get("pooled"))) + " |",
            "| words right / reference words, list LM | " + both(lambda x: _hits(x.get("wer_lm"))) + " |",
            "| speaker similarity to prompt | " + both(lambda x: _num(x.get("sim"))) + " |",
            f"| different-speaker similarity (prompt vs other GT) | – | {_num(g.get('sim_other_speaker'))} |",
            "| DNSMOS SIG / BAK / OVRL | " + both(dn) + " |",
            "| RTF (compute s / audio s, total) | " + both(lambda x: _num(x.get("rtf", {}).get("total"))) + " |",
            "| audio (s) | " + both(lambda x: _num(x.get("audio_s"), 1)) + " |"]
    if "first_audio_s" in s:  # streamed systems only
        first = s["first_audio_s"]
        rows.append(f"| seconds to first audio, mean / max | {_num(first['mean'])} / {_num(first['max'])} | – |")
    return rows


def write_markdown(report: dict, path: Path) -> None:
    settings, agg, counts = report["settings"], report["aggregates"], report["aggregates"]["counts"]
    lm = settings["list_lm"]
    lines = [f"# Evaluation: `{settings['system']}` on `{Path(settings['list']).name}`", "",
             (f"{counts['ok']} of {counts['total']} utterances scored, {counts['failed']} failed, "
             f"{counts['skipped']} skipped; seed {settings['seed']}; {report['environment']['date_utc']}; "
             f"{report['timing']['total_s']:.0f} s in all."), "", *_table(settings["system"], agg), "",
             ("- WER: pocketsphinx en-us; *open vocabulary* uses its general LM (real read speech scores 15-30 %, so "
             "compare systems only); *list LM* is a trigram of the list's target texts plus "
             f"{lm['distractor_sentences']} distractor sentences ({lm['vocabulary']} words), an intelligibility gate "
             "(clear read speech ~0-5 %, noise ~100 %; compare with the ground-truth column). Mean per utt is "
             "Seed-TTS-eval's number; pooled = errors / words."),
             "- Texts are normalised (numbers to words, lower case, no punctuation) before alignment with jiwer.",
             ("- Similarity: resemblyzer d-vector cosine. Ground-truth column: the recording vs its prompt "
             "(same speaker); different speaker: the prompt vs another speaker's recording."),
             "- DNSMOS is a noise sanity check, not a naturalness score."]
    same = agg["system_on_ground_truth_rows"]
    if settings["system"] != "ground-truth" and same["n"] and same["n"] != agg["system"]["n"]:
        g = agg["ground_truth"]
        lines.append(f"- Like for like, on the {same['n']} rows with ground truth: {settings['system']} WER list LM "
                     f"{_pct(same['wer_lm']['mean'])} % (ground truth {_pct(g['wer_lm']['mean'])} %), open "
                     f"{_pct(same['wer_open']['mean'])} % ({_pct(g['wer_open']['mean'])} %), similarity "
                     f"{_num(same['sim'])} ({_num(g['sim'])}).")
    if lm["oov_words_dropped"]:
        lines.append(f"- Words missing from the recogniser's dictionary (never recognised): "
                     f"{', '.join(lm['oov_words_dropped'][:30])}{' ...' if len(lm['oov_words_dropped']) > 30 else ''}")
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed utterances", ""] + [f"- `{r['utt']}`: {r['error']}" for r in failed]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
