"""Check a semantic-tokenizer run before training a codec on it: do its ids say what was said?

    python recipes/check_tokenizer.py runs/tokenizer/final [--limit 64] [--manifest heldout.jsonl] [--json report.json]

FOLDER is a model folder of recipes/train_tokenizer.py (`final/` or `checkpoints/step_N/`, with its
`train_config.json`); the run's own held-out utterances are read, or `--manifest`'s (the same utterances for two
runs whose held-out sets differ, or unseen speakers). Reported:
- `cer` / `wer`: greedy CTC read-out through the quantiser against the transcripts (what the ids still say);
  `aux_cer` the same from the auxiliary head before pooling, when the run has one.
- `position_share`: of the variance of the quantiser's input over the first 16 utterances of at least 6 s, the part
  that is the same at a position in every utterance. Near 1 the ids encode the frame position, not the speech.
- `same_id_rate`: how often two different utterances get the same id at the same position (near 0 is healthy).
- `codes_used`: distinct ids among those utterances' tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python recipes/check_tokenizer.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.semantic_training import CTC_ALPHABET, TokenizerTrainer
from recipes.data import train_and_eval
from recipes.tokenizer_data import CTCDataset, DataConfig, collate, read_manifest

PROBE_SECONDS, PROBE_UTTERANCES, PROBE_TOKENS = 6.0, 16, 70  # 70 tokens = 5.6 s, inside every probe utterance


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def error_rate(refs: list[list], hyps: list[list]) -> float:
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


def read_outs(model: TokenizerTrainer, dataset: CTCDataset, batch_size: int = 8) -> dict[str, float]:
    refs, hyps, aux = [], [], []
    for start in range(0, len(dataset), batch_size):
        keys = range(start, min(start + batch_size, len(dataset)))
        batch = collate([dataset[k] for k in keys])
        read = model.transcribe(batch["features"], batch["num_samples"])
        hyps += read["codes"]
        aux += read.get("aux", [])
        refs += ["".join(CTC_ALPHABET[c - 1] for c in dataset.items[k][1]) for k in keys]
    report = {"cer": error_rate([list(r) for r in refs], [list(h) for h in hyps]),
              "wer": error_rate([r.split() for r in refs], [h.split() for h in hyps]),
              "examples": [{"ref": r, "hyp": h} for r, h in zip(refs[:3], hyps[:3])]}
    if aux:
        report["aux_cer"] = error_rate([list(r) for r in refs], [list(h) for h in aux])
    return report


@torch.no_grad()
def id_health(model: TokenizerTrainer, dataset: CTCDataset) -> dict[str, float]:
    keys = [k for k, (u, _, _) in enumerate(dataset.items) if u.seconds >= PROBE_SECONDS][:PROBE_UTTERANCES]
    if len(keys) < 2:
        return {}
    batch = collate([dataset[k] for k in keys])
    z = model.tokenizer.encode(batch["features"], batch["num_samples"])["hidden"][:, :PROBE_TOKENS]  # [N, T, D]
    position = z.mean(0, keepdim=True)  # [1, T, D]: what every utterance shares at a position
    total = z.var(dim=(0, 1)).sum()
    ids = model.tokenizer._nearest_code(z.reshape(-1, z.shape[-1])).reshape(z.shape[:2])  # [N, T]
    pairs = [(a, b) for a in range(len(keys)) for b in range(a + 1, len(keys))]
    same = sum((ids[a] == ids[b]).float().mean().item() for a, b in pairs) / len(pairs)
    return {"position_share": (position.var(dim=1).sum() / total).item(), "same_id_rate": same,
            "codes_used": int(ids.unique().numel()), "probe_utterances": len(keys)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Check a semantic-tokenizer run: read-out CER and id health")
    parser.add_argument("folder", type=Path, help="final/ or checkpoints/step_N/ of recipes/train_tokenizer.py")
    parser.add_argument("--limit", type=int, default=64, help="held-out utterances read out (default 64)")
    parser.add_argument("--manifest", type=Path, help="read these utterances (id, audio, text) instead of the run's "
                        "held-out ones")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    run_config = args.folder / "train_config.json"
    if not run_config.is_file():
        parser.error(f"{args.folder} has no train_config.json: pass a final/ or checkpoints/step_N/ folder of "
                     "recipes/train_tokenizer.py")
    saved = json.loads(run_config.read_text())
    data = DataConfig(**saved["data"])
    if args.manifest:
        held_out = read_manifest(args.manifest)
    else:
        _, held_out = train_and_eval(data, read_manifest, saved["train"]["seed"])
    if not held_out:
        parser.error("the run held nothing out (eval_fraction 0 and no eval_manifest): nothing to check on")
    model = TokenizerTrainer.from_pretrained(args.folder).eval()
    dataset = CTCDataset(held_out[: args.limit], model.tokenizer.config.num_mel_bins, data)
    report = {"folder": str(args.folder), "manifest": str(args.manifest or "the run's held-out utterances"),
              "utterances": len(dataset), **read_outs(model, dataset),
              **id_health(model, dataset)}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
