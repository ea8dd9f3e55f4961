"""Train the semantic tokenizer (GLM-4-Voice style: Whisper-VQ encoder, CTC on transcripts) on accelerate.

    python recipes/train_tokenizer.py --config recipes/configs/tokenizer_small.json \
        --train-manifest data/train.jsonl --output-dir runs/tokenizer [--resume auto]

Manifest rows: `id`, `audio`, `text` (and `duration`). The model and its losses live in codec/semantic_training.py;
the loop, checkpoints and exact resume in recipes/training.py. Every model folder (checkpoints/step_N/, final/)
also holds `semantic_tokenizer/`: the tokenizer alone in GLM-4-Voice's released layout, ready for
`codec.SemanticTokenizer.from_pretrained`, recipes/tokenize_corpus.py --semantic-tokenizer and train_codec.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python recipes/train_tokenizer.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.semantic_training import TokenizerTrainer, TokenizerTrainingConfig
from recipes.data import train_and_eval
from recipes.tokenizer_data import SAMPLES_PER_FRAME, CTCDataset, DataConfig, collate, read_manifest
from recipes.train_config import parse_args
from recipes.training import Batch, Task, TrainResult, start_run, train_task


def tokenizer_loss(model: TokenizerTrainer, seed: int, **batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return model.loss(seed=seed, **batch)


def tokenizer_counts(batch: Batch) -> tuple[int, int]:
    """(characters scored, 50 Hz frames in)."""
    return int(batch["label_lengths"].sum()), int(batch["num_samples"].sum()) // SAMPLES_PER_FRAME


def metrics(sums: torch.Tensor) -> dict[str, float]:
    """Eval sums (loss, characters, commitment) -> loss per character and commitment per character."""
    return {"loss": (sums[0] / sums[1]).item(), "commit": (sums[2] / sums[1]).item()}


def main(argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    start = start_run(parse_args(argv, "Train the semantic tokenizer", DataConfig), DataConfig)
    acc, data, train = start.accelerator, start.data, start.train
    config = TokenizerTrainingConfig.from_dict(start.model)
    model = TokenizerTrainer(config)
    train_utterances, eval_utterances = train_and_eval(data, read_manifest, train.seed)
    n_mels = model.tokenizer.config.num_mel_bins
    train_set = CTCDataset(train_utterances, n_mels, data)
    eval_set = CTCDataset(eval_utterances, n_mels, data) if eval_utterances else None
    for name, dataset in (("train", train_set), ("eval", eval_set)):
        if dataset is not None and dataset.describe_dropped():
            acc.print(f"{name} set: {dataset.describe_dropped()}")
    hours = sum(u.seconds for u, _, _ in train_set.items) / 3600
    acc.print(f"{len(train_set)} train utterances ({hours:.2f} h) / {len(eval_set) if eval_set else 0} eval")
    task = Task(model, lambda: TokenizerTrainer(config), tokenizer_loss, tokenizer_counts, collate,
                metrics=metrics, save_extras=lambda folder: model.export(folder / "semantic_tokenizer"))
    return train_task(start, task, config.to_dict(), train_set, eval_set, on_step)


if __name__ == "__main__":
    main()
