"""End-to-end streaming latency: time to the first audio chunk, and the real-time factor of the whole stream.

    python benchmarks/tts_latency.py --model PATH --prompt prompt.wav --prompt-text "..." --out tts_cpu.json

Without --prompt a synthetic voiced signal stands in (timing does not depend on the voice). Each text is streamed
`--repeats` times after one warm-up; the report keeps the median of each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tts.pipeline import TTS

TEXTS = {
    "short": "Hello, this is a quick test.",
    "sentence": "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
    "paragraph": ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith slipped "
                  "quickly through the glass doors of Victory Mansions, though not quickly enough to prevent a "
                  "swirl of gritty dust from entering along with him."),
}


def synthetic_prompt(seconds: float = 4.0, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voiced = sum(np.sin(2 * np.pi * h * 130 * t) / h for h in range(1, 8))
    return (0.2 * voiced * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def measure(tts: TTS, voice, text: str, seed: int) -> dict:
    start = time.perf_counter()
    first, samples = None, 0
    for chunk in tts.stream(text, voice, seed=seed):
        if first is None:
            first = time.perf_counter() - start
        samples += len(chunk)
    total = time.perf_counter() - start
    audio_s = samples / tts.sample_rate
    return {"first_chunk_s": first, "total_s": total, "audio_s": audio_s, "rtf": total / audio_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the default model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompt", help="prompt audio file (default: a synthetic voiced signal)")
    parser.add_argument("--prompt-text", default="This is the voice to clone.")
    parser.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    tts = TTS.from_pretrained(args.model, device=args.device)
    voice = (tts.clone_voice(args.prompt, args.prompt_text) if args.prompt
             else tts.clone_voice(synthetic_prompt(), args.prompt_text, sample_rate=16000))
    report = {"benchmark": "tts_latency", "model": args.model or "default", "device": args.device,
              "cpu": platform.processor() or "cpu", "cpu_threads": torch.get_num_threads(),
              "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
              "stream_chunk_tokens": tts.config.stream_chunk_tokens,
              "stream_lookahead_tokens": tts.config.stream_lookahead_tokens, "results": []}
    for name in args.texts:
        measure(tts, voice, TEXTS[name], seed=0)  # warm-up
        runs = [measure(tts, voice, TEXTS[name], seed=i) for i in range(args.repeats)]
        row = {"text": name, "characters": len(TEXTS[name]), "repeats": args.repeats,
               **{key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}}
        report["results"].append(row)
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
