"""`sac-tts eval` / `python recipes/evaluate.py`: score a system on a Seed-TTS-eval list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..tts_cli import sampling_args, sampling_options
from .deps import EvalDependencyError
from .lists import ListError
from .systems import SYSTEMS


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("list", type=Path, help="utt|prompt_text|prompt_wav|target_text[|ground_truth_wav] lines")
    parser.add_argument("--system", choices=SYSTEMS, default="tts",
                        help="tts: clone each prompt and speak the target; tts-stream: the same through the "
                             "streaming path (also times the first audio); vc: the ground truth converted to the "
                             "prompt's voice (the TTS with a perfect LM); codec: reconstruct the ground truth; "
                             "ground-truth: score the recordings themselves (default: tts)")
    parser.add_argument("--model", help="TTS model folder (default: $SAC_TTS_MODEL or the bundled model)")
    parser.add_argument("--codec", help="codec folder with semantic_tokenizer/ (for --system codec)")
    parser.add_argument("--random-stream", choices=("semantic", "acoustic"),
                        help="with --system codec: decode with this stream's ids replaced by random ones (seeded), "
                             "to see which stream carries the words")
    parser.add_argument("--out", type=Path, required=True, help="output folder: results.json, results.md, wavs/")
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed (each utterance's derives from it)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N utterances")
    parser.add_argument("--distractors", type=int, default=100,
                        help="distractor sentences added to the list LM (default 100)")
    parser.add_argument("--distractor-file", type=Path, help="one sentence a line (default: the bundled set)")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (about 0.1 s per audio second)")
    parser.add_argument("--no-audio", action="store_true", help="do not keep the generated wavs")
    parser.add_argument("--threads", type=int, help="torch CPU threads for synthesis (RTF depends on it; default: "
                        "torch's choice). The metric models always run on one thread.")
    parser.add_argument("--device", default="cpu", help="device of the TTS/codec and speaker encoder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table on stdout")
    sampling_args(parser.add_argument_group("sampling (tts, tts-stream and vc systems)"), lm=True)
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `eval` on the `sac-tts` sub-command parsers."""
    return configure(subparsers.add_parser(
        "eval", help="WER, speaker similarity, DNSMOS and RTF on a Seed-TTS-eval list (needs the eval extra)",
        description="Evaluate zero-shot TTS, the codec or ground truth on a Seed-TTS-eval list. Needs "
                    "pip install -e \".[eval]\"."))


def run(args: argparse.Namespace) -> int:
    from .runner import EvalSettings, run_evaluation
    from .scorer import ScorerOptions

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    settings = EvalSettings(system=args.system, model=args.model, codec=args.codec, seed=args.seed, limit=args.limit,
                            scorer=ScorerOptions(args.distractors, args.distractor_file, not args.no_dnsmos,
                                                 args.device),
                            save_audio=not args.no_audio, progress=not args.quiet, threads=args.threads,
                            options=sampling_options(args), random_stream=args.random_stream)
    report = run_evaluation(args.list, args.out, settings)
    if not args.quiet:
        print((args.out / "results.md").read_text(encoding="utf-8"))
    return 0 if report["aggregates"]["counts"]["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="evaluate.py", description=__doc__))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (EvalDependencyError, ListError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
