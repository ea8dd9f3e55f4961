"""Train the semantic LM (text -> 12.5 Hz semantic tokens): the loop written out, on accelerate.

    python recipes/train_lm.py --config recipes/configs/lm_tiny.json --output-dir runs/lm-tiny [--max-steps 50]
    python recipes/train_lm.py --config ... --output-dir runs/lm-tiny --resume auto       # continue after a kill
    accelerate launch --multi_gpu --num_processes 8 recipes/train_lm.py --config recipes/configs/lm_base.json ...

The output folder holds train_config.json, text_tokenizer/, log.jsonl, tb/, checkpoints/step_XXXXXX/ (a model folder
+ train_state/), best/ (the weights of the lowest eval loss; best/best.json says which step) and final/ (a model
folder: SemanticLM and TextTokenizer .from_pretrained); recipes/README.md has the details. The loop, checkpoints and
resume live in recipes/training.py; this file holds what is LM-specific.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python recipes/train_lm.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator

from lm.config import LMConfig
from lm.model import IGNORE_INDEX, SemanticLM, default_attn_implementation
from lm.text import TextTokenizer, train_text_tokenizer
from recipes.data import train_and_eval
from recipes.lm_data import DataConfig, SemanticLMDataset, collate, read_manifest
from recipes.train_config import parse_args
from recipes.training import Batch, Task, TrainResult, start_run, train_task


def load_text_tokenizer(data: DataConfig, output_dir: Path, resume: Path | None, texts: list[str],
                        accelerator: Accelerator, init_from: str | None = None) -> TextTokenizer:
    if resume is not None:
        return TextTokenizer.from_pretrained(resume)  # the one these weights were trained with
    if data.text_tokenizer or init_from:  # a fine-tune keeps the text ids its weights know, unless told otherwise
        return TextTokenizer.from_pretrained(data.text_tokenizer or init_from)
    folder = output_dir / "text_tokenizer"
    if accelerator.is_main_process:
        try:
            TextTokenizer.from_pretrained(folder)  # left by an earlier start of this run: training is deterministic
        except FileNotFoundError:
            accelerator.print(f"training a text tokenizer ({data.text_vocab_size} pieces) on {len(texts)} texts")
            with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
                train_text_tokenizer(texts, Path(scratch) / "spm", data.text_vocab_size).save(folder)
    accelerator.wait_for_everyone()
    return TextTokenizer.from_pretrained(folder)


def resolve_model_config(model: dict, tokenizer: TextTokenizer) -> LMConfig:
    config = LMConfig.from_dict({**model, "text_vocab_size": model.get("text_vocab_size") or tokenizer.vocab_size})
    if tokenizer.vocab_size > config.text_vocab_size:
        raise ValueError(f"the text tokenizer has {tokenizer.vocab_size} ids but model.text_vocab_size is "
                         f"{config.text_vocab_size}; set it to null to take it from the tokenizer")
    return config


def swap_ids(input_ids: torch.Tensor, low: int, high: int, seed: int, share: float | None = None) -> torch.Tensor:
    """input_ids [B, T] with its ids in [low, high) (one stream of the vocabulary) replaced by random ids of that
    range drawn from `seed`: all of them, or each with probability `share`. Everything else is untouched."""
    generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    chosen = (input_ids >= low) & (input_ids < high)
    if share is not None:
        chosen &= torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < share
    noise = torch.randint(low, high, input_ids.shape, generator=generator, device=input_ids.device)
    return torch.where(chosen, noise, input_ids)


def corrupt_semantic(input_ids: torch.Tensor, config: LMConfig, share: float, seed: int) -> torch.Tensor:
    """input_ids [B, T] with `share` of its semantic tokens replaced by random semantic ids (text, specials and
    padding untouched)."""
    return swap_ids(input_ids, config.semantic_offset, config.vocab_size, seed, share)


def randomize_text(input_ids: torch.Tensor, config: LMConfig, seed: int) -> torch.Tensor:
    """input_ids [B, T] with every text token (the prompt's and the target's) replaced by a random text id: the
    lengths stay, the words go."""
    return swap_ids(input_ids, config.text_offset, config.semantic_offset, seed)


def lm_loss(lm: SemanticLM, seed: int, input_noise: float = 0.0, text_check: bool = False, **batch: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
    """(summed loss, target tokens), and with `text_check` the summed loss of the same targets read with random
    text: an LM that babbles has not learnt to read, and the gap between the two says how much it has."""
    if input_noise:  # labels are a separate tensor: the targets stay the clean ids
        batch = {**batch, "input_ids": corrupt_semantic(batch["input_ids"], lm.config, input_noise, seed)}
    loss_sum, count = lm.loss(**batch)
    if not text_check:
        return loss_sum, count
    random_sum, _ = lm.loss(**{**batch, "input_ids": randomize_text(batch["input_ids"], lm.config, seed)})
    return loss_sum, count, random_sum


def lm_metrics(sums: torch.Tensor) -> dict[str, float]:
    """Eval sums [3] -> loss, loss_random_text and text_gain (nats per target token the text's words are worth)."""
    loss, random_text = (sums[0] / sums[1]).item(), (sums[2] / sums[1]).item()
    return {"loss": loss, "loss_random_text": random_text, "text_gain": random_text - loss}


def lm_counts(batch: Batch) -> tuple[int, int]:
    """(target tokens, input tokens) of a collated batch."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()), int(batch["attention_mask"].sum())


def main(argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train from a config (see parse_args); `on_step(step)` runs after each step and its checkpoint."""
    start = start_run(parse_args(argv, "Train the semantic LM", DataConfig), DataConfig)
    acc, data, train = start.accelerator, start.data, start.train
    vocab_size = start.model.get("semantic_vocab_size", LMConfig.semantic_vocab_size)
    train_utterances, eval_utterances = train_and_eval(data, partial(read_manifest, semantic_vocab_size=vocab_size),
                                                       train.seed)
    tokenizer = load_text_tokenizer(data, start.output_dir, start.resume, [u.text for u in train_utterances], acc,
                                    start.train.init_from)
    config = resolve_model_config(start.model, tokenizer)
    make_set = partial(SemanticLMDataset, encode=tokenizer.encode, config=config, prompt_prob=data.prompt_prob,
                       seed=train.seed, max_length=data.max_tokens)
    train_set = make_set(train_utterances)
    eval_set = (make_set(eval_utterances) if eval_utterances else None) or None  # all dropped: nothing to evaluate
    for name, dataset in (("train", train_set), ("eval", eval_set)):
        if dataset is not None and dataset.describe_dropped():
            acc.print(f"{name} set: {dataset.describe_dropped()}")
    acc.print(f"{len(train_set)} train / {len(eval_set) if eval_set else 0} eval utterances; "
              f"{tokenizer.vocab_size} text ids")

    half = acc.mixed_precision in ("bf16", "fp16")
    lm = SemanticLM(config, default_attn_implementation(acc.device, torch.bfloat16 if half else torch.float32))
    task = Task(lm, partial(SemanticLM, config), partial(lm_loss, input_noise=data.input_noise), lm_counts, collate,
                metrics=lm_metrics, eval_inputs={"input_noise": 0.0, "text_check": True}, save_extras=tokenizer.save)
    return train_task(start, task, config.to_dict(), train_set, eval_set, on_step)


if __name__ == "__main__":
    main()
