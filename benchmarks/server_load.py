"""HTTP server under load: concurrent clients streaming `POST /v1/audio/speech`, latency and memory.

    python benchmarks/server_load.py --model PATH --clients 32 --requests 2 --out load_cpu.json
    python benchmarks/server_load.py --url http://127.0.0.1:8000 --api-key KEY --voice alice --clients 64

With `--model`, the server runs in this process (a voice is cloned from `--voice-audio`, or from a synthetic clip
into a temporary store) and the report includes this process's RSS growth; with `--url`, an existing server is
loaded. Every client sends its requests one after another, all clients at once; time to first audio byte (TTFA)
and total time are per request, measured by the client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

TEXTS = {"short": "Hello there, how are you?",
         "medium": "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))], 3) if ordered else 0.0


def _one_request(client: httpx.Client, body: dict) -> tuple[float, float, int]:
    start = time.perf_counter()
    first, size = None, 0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.read().decode(errors='replace')[:200]}")
        for chunk in response.iter_raw():
            # The wav header comes with the first audio chunk's computation already done; pcm has no header.
            first = first if first is not None else time.perf_counter() - start
            size += len(chunk)
    return first or 0.0, time.perf_counter() - start, size


def run_load(url: str, api_key: str | None, voice: str, text: str, clients: int, requests: int,
             response_format: str = "pcm") -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    ttfa, totals, errors, audio_bytes = [], [], [], 0
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1, timeout=60)

    def client_loop(index: int) -> None:
        nonlocal audio_bytes
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            barrier.wait()
            for j in range(requests):
                body = {"model": "sac-tts", "input": text, "voice": voice, "response_format": response_format,
                        "seed": index * 1000 + j}
                try:
                    first, total, size = _one_request(client, body)
                except Exception as exc:  # noqa: BLE001 - counted and reported, the other clients go on
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    ttfa.append(first)
                    totals.append(total)
                    audio_bytes += size

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    header = 44 if response_format == "wav" else 0
    audio_s = (audio_bytes - header * len(totals)) / 2 / 16000
    return {"clients": clients, "requests": clients * requests, "ok": len(totals), "errors": len(errors),
            "error_examples": errors[:3], "wall_s": round(wall, 2), "requests_per_s": round(len(totals) / wall, 2),
            "audio_s_per_s": round(audio_s / wall, 2),
            "ttfa_p50_s": _percentile(ttfa, 0.5), "ttfa_p95_s": _percentile(ttfa, 0.95),
            "total_p50_s": _percentile(totals, 0.5), "total_p95_s": _percentile(totals, 0.95),
            "total_mean_s": round(statistics.fmean(totals), 3) if totals else 0.0}


def _local_server(args: argparse.Namespace, stack: ExitStack) -> tuple[str, str]:
    """Load the model, clone a voice into a temporary store, serve in a thread -> (url, voice name)."""
    import torch

    from tts.pipeline import TTS
    from tts.server import create_app, serve_in_thread
    from tts.voices import VoiceStore

    tts = TTS.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    voices = VoiceStore(stack.enter_context(tempfile.TemporaryDirectory(prefix="sac-tts-load-")))
    if args.voice_audio:
        prompt = tts.clone_voice(args.voice_audio, args.voice_text)
    else:  # a speech-like pulse train: enough for speed measurements
        t = np.arange(3 * 16000) / 16000
        clip = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * (np.sin(2 * np.pi * 120 * t) > 0.95)
        prompt = tts.clone_voice(clip.astype(np.float32), args.voice_text, sample_rate=16000)
    voices.add("bench", prompt)
    app = create_app(tts, voices, max_queue=max(64, args.clients), workers=args.workers)
    return stack.enter_context(serve_in_thread(app)), "bench"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="serve this model folder in-process")
    where.add_argument("--url", help="load an already running server")
    parser.add_argument("--api-key")
    parser.add_argument("--voice", default="alice", help="saved voice to use with --url (default: %(default)s)")
    parser.add_argument("--voice-audio", help="with --model: clone the voice from this file (needs --voice-text)")
    parser.add_argument("--voice-text", default="hello there, this is a test.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2, help="requests per client (default: %(default)s)")
    parser.add_argument("--text", default="short", help=f"{', '.join(TEXTS)} or any text (default: %(default)s)")
    parser.add_argument("--format", default="pcm", choices=["pcm", "wav"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    text = TEXTS.get(args.text, args.text)
    with ExitStack() as stack:
        rss = None
        if args.model:
            import psutil

            url, voice = _local_server(args, stack)
            rss = psutil.Process()
            run_load(url, None, voice, text, 1, 1, args.format)  # warm-up
            rss_before = rss.memory_info().rss
        else:
            url, voice = args.url, args.voice
        result = run_load(url, args.api_key, voice, text, args.clients, args.requests, args.format)
        if rss is not None:
            result["rss_growth_mb"] = round((rss.memory_info().rss - rss_before) / 2**20, 1)
    report = {"benchmark": "server_load", "model": args.model or args.url, "device": args.device,
              "workers": args.workers, "text": args.text, "format": args.format, "results": [result]}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
