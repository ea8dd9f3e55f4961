"""A token folder whose acoustic ids are the second stage's predictions, to train the codec decoder on what it decodes.

At synthesis the decoder reads acoustic ids that the second stage sampled from semantic ids and a voice prompt, not
the ids the acoustic encoder made from real audio. Like a vocoder fine-tuned on a TTS model's predicted features
(ground-truth-aligned training), the decoder can be trained on such ids against the real audio: they share its
timeline because the semantic ids are the audio's own. This recipe copies a token folder (same codec, semantic ids,
rows and audio paths) with each utterance's acoustic ids replaced by the second stage's, sampled as at synthesis:
the prompt is another utterance of the same speaker (its last `--prompt-seconds`), or, for a speaker with one
utterance, the utterance's own first `--self-prompt-fraction`, whose true ids it keeps. Train on the result with
`recipes/train_codec.py --acoustic-from-tokens true` and the encoders and quantisers frozen.

    python recipes/predict_acoustic.py data/default_model/tokens_w --flow tts/default_model/flow \
        --out data/default_model/tokens_w_flow --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

if __package__ in (None, ""):  # run as `python recipes/predict_acoustic.py`: make `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.model import AcousticFlow
from flow.sampling import FlowRequest, FlowSamplingConfig, generate
from recipes.shards import META_NAME, TokenShardReader, build_index, read_meta, write_json, write_shard

SEMANTIC_RATE_HZ = 12.5


def speaker_of(row: dict) -> str:
    return row.get("speaker") or row["id"]  # a row without a speaker is a speaker of its own


def requests_for(reader: TokenShardReader, ids: list[str], by_speaker: dict[str, list[str]],
                 args: argparse.Namespace, rng: random.Random) -> tuple[list[FlowRequest], list[int]]:
    """One request per utterance and the count of its leading semantic tokens kept true (a self-prompt)."""
    k, prompt_tokens = reader.k, max(1, round(args.prompt_seconds * SEMANTIC_RATE_HZ))
    requests, kept = [], []
    for utterance in ids:
        semantic, acoustic = reader.get(utterance)  # [Ts], [k·Ts]
        others = [u for u in by_speaker[speaker_of(reader.row(utterance))] if u != utterance]
        if others:
            prompt_semantic, prompt_acoustic = reader.get(rng.choice(others))
            prompt_semantic = prompt_semantic[-prompt_tokens:]
            prompt_acoustic = prompt_acoustic[len(prompt_acoustic) - k * len(prompt_semantic):]
            split = 0
        else:
            split = min(len(semantic) - 1, max(1, round(args.self_prompt_fraction * len(semantic))))
            prompt_semantic, prompt_acoustic = semantic[:split], acoustic[: k * split]
        requests.append(FlowRequest(torch.from_numpy(semantic[split:]), torch.from_numpy(prompt_acoustic),
                                    torch.from_numpy(prompt_semantic)))
        kept.append(split)
    return requests, kept


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", type=Path, help="token folder (recipes/tokenize_corpus.py)")
    parser.add_argument("--flow", type=Path, required=True, help="second-stage folder (config.json + weights)")
    parser.add_argument("--out", type=Path, required=True, help="new token folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=FlowSamplingConfig.steps)
    parser.add_argument("--temperature", type=float, default=FlowSamplingConfig.temperature)
    parser.add_argument("--cfg-scale", type=float, default=FlowSamplingConfig.cfg_scale)
    parser.add_argument("--prompt-seconds", type=float, default=6.0)
    parser.add_argument("--self-prompt-fraction", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--every", type=int, default=1, help="only every Nth utterance (a share of the folder)")
    parser.add_argument("--offset", type=int, default=0, help="starting from this one (parallel runs: 0 .. N-1)")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"--out {args.out} exists: give a new folder")
    reader = TokenShardReader(args.tokens)
    model = AcousticFlow.from_pretrained(args.flow).eval()
    if model.config.acoustic_per_semantic != reader.k:
        raise SystemExit(f"{args.flow} predicts {model.config.acoustic_per_semantic} acoustic ids per semantic one, "
                         f"{args.tokens} holds {reader.k}")
    sampling = FlowSamplingConfig(steps=args.steps, temperature=args.temperature, cfg_scale=args.cfg_scale)
    rng = random.Random(args.seed)
    by_speaker: dict[str, list[str]] = {}
    for row in reader.rows:  # prompts may come from the whole folder, not only the share predicted
        by_speaker.setdefault(speaker_of(row), []).append(row["id"])
    if not 0 <= args.offset < args.every:
        raise SystemExit(f"--offset {args.offset} must be in [0, --every {args.every})")
    ids = reader.ids[args.offset:: args.every]
    # Similar lengths share a batch: padding costs as much as frames.
    order = sorted(ids, key=lambda u: reader.row(u)["semantic_length"])
    predicted: dict[str, np.ndarray] = {}
    for start in tqdm(range(0, len(order), args.batch_size), desc="second stage", unit="batch"):
        batch = order[start: start + args.batch_size]
        requests, kept = requests_for(reader, batch, by_speaker, args, rng)
        outputs = generate(model, requests, sampling, seed=args.seed * 1_000_003 + start)
        for utterance, split, ids_out in zip(batch, kept, outputs):
            true_acoustic = reader.get(utterance)[1]
            predicted[utterance] = np.concatenate([true_acoustic[: reader.k * split], ids_out.numpy()])
    args.out.mkdir(parents=True)
    meta = read_meta(reader.folder)
    meta["plan"] = {**meta["plan"], "rows": len(ids), "num_shards": 1, "shard_size": len(ids)}
    meta["acoustic_source"] = {"flow": str(args.flow), "seed": args.seed, "steps": args.steps,
                               "temperature": args.temperature, "cfg_scale": args.cfg_scale,
                               "prompt_seconds": args.prompt_seconds, "tokens": str(args.tokens)}
    write_json(args.out / META_NAME, meta)
    utterances = []
    for utterance in ids:
        row = {key: value for key, value in reader.row(utterance).items()
               if key not in {"shard", "semantic_offset", "semantic_length", "acoustic_offset", "acoustic_length"}}
        utterances.append((row, reader.get(utterance)[0], predicted[utterance]))
    write_shard(args.out, 0, utterances, [], (0, len(ids)))
    build_index(args.out)
    changed = np.mean([np.mean(predicted[u] != reader.get(u)[1]) for u in ids])
    print(json.dumps({"utterances": len(ids), "acoustic_ids_changed": round(float(changed), 4), "out": str(args.out)}))
    return args.out


if __name__ == "__main__":
    main()
