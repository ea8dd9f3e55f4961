"""Is a change real or seed noise? Compare two sets of `sac-tts eval` runs of one list, row by row.

On the 90-row real list, four seeds of one model spanned 364-412 words right: totals alone cannot tell a 30-word
gain from chance. Averaging each row over its seeds, then pairing the rows of the two sides, can.

    python recipes/compare_evals.py --baseline runs/eval_a_s0 runs/eval_a_s1 --candidate runs/eval_b_s0 runs/eval_b_s1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .wer import WordErrors


def load_run(path: Path) -> dict:
    """A run folder (results.json) or a results JSON file -> {"list_sha256", "seed", "words": {utt: words right}}.

    Rows the system skips by design (`vc` and `codec` on rows without a recording) are left out; the runs compared
    must then skip the same rows. A failed row is refused: its words would count as zero."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no results.json (an eval --out folder or its results JSON file)")
    report = json.loads(file.read_text(encoding="utf-8"))
    words = {}
    for row in report["rows"]:
        if row["status"] == "skipped":
            continue
        if row["status"] != "ok":
            raise ValueError(f"{file}: row {row['utt']} {row['status']}: compare runs where every row was scored")
        words[row["utt"]] = WordErrors.from_dict(row["system"]["wer_lm"]).hits
    return {"file": str(file), "list_sha256": report["settings"]["list_sha256"], "seed": report["settings"]["seed"],
            "words": words}


def _side(runs: list[dict]) -> dict[str, float]:
    """Each row's words right averaged over the side's runs."""
    return {utt: sum(r["words"][utt] for r in runs) / len(runs) for utt in runs[0]["words"]}


def compare(baseline: list[dict], candidate: list[dict]) -> dict:
    """Totals per run, and the paired per-row difference (candidate - baseline) of seed-averaged words right."""
    runs = baseline + candidate
    if not baseline or not candidate:
        raise ValueError("give at least one run on each side")
    if len({r["list_sha256"] for r in runs}) > 1 or len({frozenset(r["words"]) for r in runs}) > 1:
        raise ValueError("the runs score different lists or rows: "
                         + ", ".join(f"{r['file']} ({r['list_sha256'][:12]}, {len(r['words'])} rows)" for r in runs))
    a, b = _side(baseline), _side(candidate)
    diffs = [b[utt] - a[utt] for utt in sorted(a)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return {"rows": n, "baseline": [r["file"] for r in baseline], "candidate": [r["file"] for r in candidate],
            "baseline_words_right": [sum(r["words"].values()) for r in baseline],
            "candidate_words_right": [sum(r["words"].values()) for r in candidate],
            "per_row_difference": {"mean": mean, "standard_error": sd / math.sqrt(n)},
            "rows_better": sum(d > 0 for d in diffs), "rows_worse": sum(d < 0 for d in diffs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compare_evals.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, nargs="+", required=True, help="eval runs (one per seed)")
    parser.add_argument("--candidate", type=Path, nargs="+", required=True, help="eval runs of the change")
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    try:
        result = compare([load_run(p) for p in args.baseline], [load_run(p) for p in args.candidate])
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    diff = result["per_row_difference"]
    print(f"words right (list LM) per run: baseline {result['baseline_words_right']}, "
          f"candidate {result['candidate_words_right']}")
    print(f"per row, seed-averaged, candidate - baseline: {diff['mean']:+.3f} +- {diff['standard_error']:.3f} words "
          f"(standard error; {result['rows_better']} rows better, {result['rows_worse']} worse, of {result['rows']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
