"""Second-stage speed: unmasking steps/s and real-time factor of `flow.generate` alone.

    python benchmarks/flow_generate.py --model tiny --device cpu --out flow_cpu.json
    python benchmarks/flow_generate.py --model base --device cuda --dtype bfloat16 --out flow_h100.json

Random weights (speed does not depend on them). Each request has a `--prompt-seconds` voice prompt and a
`--target-seconds` target; RTF = generation seconds / seconds of audio produced (per batch: all rows together).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from flow import AcousticFlow, FlowConfig, FlowRequest, FlowSamplingConfig, generate

SEMANTIC_RATE_HZ = 12.5
MODELS = {
    "tiny": FlowConfig(dim=128, num_layers=4, num_heads=4, intermediate_size=352, max_frames=1500),
    "base": FlowConfig(),  # dim 1024, 16 layers
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model: AcousticFlow, batch_size: int, sampling: FlowSamplingConfig, prompt_s: float, target_s: float,
          repeats: int) -> dict:
    k, g = model.config.acoustic_per_semantic, torch.Generator().manual_seed(0)
    prompt, target = int(prompt_s * SEMANTIC_RATE_HZ), int(target_s * SEMANTIC_RATE_HZ)
    requests = [FlowRequest(torch.randint(0, model.config.semantic_vocab_size, (target,), generator=g),
                            torch.randint(0, model.config.acoustic_vocab_size, (k * prompt,), generator=g),
                            torch.randint(0, model.config.semantic_vocab_size, (prompt,), generator=g))
                for _ in range(batch_size)]
    generate(model, requests, sampling, seed=0)  # warm-up
    _sync(model.device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, requests, sampling, seed=0)
        _sync(model.device)
        best = min(best, time.perf_counter() - start)
    audio_s = batch_size * target / SEMANTIC_RATE_HZ
    return {"batch_size": batch_size, "steps": sampling.steps, "cfg_scale": sampling.cfg_scale,
            "prompt_seconds": prompt / SEMANTIC_RATE_HZ, "target_seconds": target / SEMANTIC_RATE_HZ,
            "seconds": round(best, 4), "steps_per_s": round(sampling.steps / best, 2), "rtf": round(best / audio_s, 5)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, base, or a FlowConfig JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--target-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    config = MODELS[args.model] if args.model in MODELS else FlowConfig.load(args.model)
    torch.manual_seed(0)
    model = AcousticFlow(config).to(device=device, dtype=dtype).eval()
    sampling = FlowSamplingConfig(steps=args.steps, cfg_scale=args.cfg_scale)
    report = {
        "benchmark": "flow_generate", "model": args.model, "config": config.to_dict(),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "dtype": str(dtype),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__, "results": [],
    }
    for batch_size in args.batch_sizes:
        report["results"].append(bench(model, batch_size, sampling, args.prompt_seconds, args.target_seconds,
                                       args.repeats))
        print(json.dumps(report["results"][-1]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
