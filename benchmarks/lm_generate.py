"""Semantic-LM decoding speed: our KV-cache loop vs transformers `generate`, same weights, same run.

    python benchmarks/lm_generate.py --model tiny --device cpu --out lm_cpu.json
    python benchmarks/lm_generate.py --model base --device cuda --dtype bfloat16 --out lm_h100.json

Greedy decoding of exactly `--new-tokens` tokens per row (random weights: speed does not depend on them). On CUDA
it adds our batch-1 fast path (static KV cache + torch.compile) and the fraction of the HBM-bandwidth roofline:
each decode step must read every weight and the KV cache once, so tokens/s <= bandwidth / bytes per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from lm.config import EOS_ID, PAD_ID, LMConfig
from lm.generate import Request, SamplingConfig, fast_decoder, generate
from lm.model import SemanticLM, pad_batch

MODELS = {
    "tiny": LMConfig(text_vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
                     num_kv_heads=2, max_position_embeddings=2048),
    "base": LMConfig(text_vocab_size=4096),  # ~0.5B: the LMConfig defaults
}
# Peak HBM bandwidth (GB/s) by device name, for the roofline fraction (override with --hbm-gbps).
HBM_GBPS = {"H100 SXM": 3350, "H100 PCIe": 2000, "H100": 3350, "H200": 4800, "A100-SXM4-80GB": 2039, "A100": 1555}
TEXT_TOKENS = 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (and compilation, for compiled paths)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _requests(batch_size: int, prompt_semantic: int) -> list[Request]:
    return [Request(text_ids=[(7 * i + j) % 500 for j in range(TEXT_TOKENS)],
                    prompt_text_ids=[(3 * i + j) % 500 for j in range(8)],
                    prompt_semantic_ids=[(11 * i + j) % 16384 for j in range(prompt_semantic)])
            for i in range(batch_size)]


def bench(lm: SemanticLM, batch_size: int, new_tokens: int, repeats: int, fast: bool) -> list[dict]:
    device = lm.device
    requests = _requests(batch_size, prompt_semantic=50)
    ratio = new_tokens / TEXT_TOKENS
    sampling = SamplingConfig(temperature=0, min_tokens_per_text_token=ratio, max_tokens_per_text_token=ratio)
    prefixes = [lm.build_prefix(r.text_ids, r.prompt_text_ids, r.prompt_semantic_ids) for r in requests]
    ids, mask = (t.to(device) for t in pad_batch(prefixes, left=True))

    def hf() -> None:
        lm.decoder.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            do_sample=False, pad_token_id=PAD_ID, eos_token_id=EOS_ID)

    runs = {"ours": lambda: generate(lm, requests, sampling), "hf_generate": hf}
    if fast:
        step = fast_decoder(lm, compile=True)
        runs["ours_static_compiled"] = lambda: generate(lm, requests, sampling, cache="static", step_fn=step)
    rows = []
    for name, fn in runs.items():
        seconds = _timed(fn, device, repeats)
        rows.append({"impl": name, "batch_size": batch_size, "new_tokens": new_tokens, "seconds": round(seconds, 4),
                     "tokens_per_s": round(batch_size * new_tokens / seconds, 1)})
        print(json.dumps(rows[-1]))
    return rows


def roofline(lm: SemanticLM, row: dict, hbm_gbps: float) -> dict:
    """Fraction of peak bandwidth used, counting weight bytes + mean KV-cache bytes read per decode step."""
    cfg = lm.config
    weight_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    head_dim = cfg.hidden_size // cfg.num_heads
    context = TEXT_TOKENS + 8 + 2 + 50 + row["new_tokens"] / 2  # mean sequence length while decoding
    kv_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * head_dim * context * row["batch_size"] * lm.dtype.itemsize
    steps_per_s = row["tokens_per_s"] / row["batch_size"]
    achieved = steps_per_s * (weight_bytes + kv_bytes) / 1e9
    return {**row, "achieved_gbps": round(achieved, 1), "roofline_fraction": round(achieved / hbm_gbps, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, base, or an LMConfig JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hbm-gbps", type=float, help="peak HBM bandwidth for the roofline (default: by GPU name)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    config = MODELS[args.model] if args.model in MODELS else LMConfig.load(args.model)
    torch.manual_seed(0)
    lm = SemanticLM(config).to(device=device, dtype=dtype).eval()
    report = {
        "benchmark": "lm_generate", "model": args.model, "config": config.to_dict(),
        "parameters_m": round(sum(p.numel() for p in lm.parameters()) / 1e6, 1), "dtype": str(dtype),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "attention": lm.decoder.config._attn_implementation, "greedy": True, "results": [],
    }
    for batch_size in args.batch_sizes:
        rows = bench(lm, batch_size, args.new_tokens, args.repeats, fast=device.type == "cuda" and batch_size == 1)
        report["results"].extend(rows)
    if device.type == "cuda":
        name = report["device"]
        peak = args.hbm_gbps or next((v for k, v in HBM_GBPS.items() if k in name), None)
        if peak:
            report["hbm_peak_gbps"] = peak
            report["results"] = [roofline(lm, row, peak) for row in report["results"]]
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
