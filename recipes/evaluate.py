"""Evaluate a system on a Seed-TTS-eval list (WER, speaker similarity, DNSMOS, RTF).

    python recipes/evaluate.py recipes/eval_lists/shared_speech_eval.lst --system ground-truth --out runs/eval_gt
    python recipes/evaluate.py LIST --system tts --model PATH --out DIR [--seed N] [--limit N]
    python recipes/evaluate.py LIST --system codec --codec PATH --out DIR

Needs the metric models: pip install -e ".[eval]". The same command is `sac-tts eval`.
"""

import sys

from tts.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
