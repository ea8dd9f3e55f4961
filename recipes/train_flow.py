"""Train the second stage (semantic tokens + voice prompt -> acoustic tokens, `flow.AcousticFlow`) on accelerate.

    python recipes/train_flow.py --config recipes/configs/flow_tiny.json --output-dir runs/flow-tiny [--max-steps 50]
    python recipes/train_flow.py --config ... --output-dir runs/flow-tiny --resume auto      # continue after a kill
    accelerate launch --multi_gpu --num_processes 8 recipes/train_flow.py --config recipes/configs/flow_base.json ...

The output folder holds train_config.json, log.jsonl, tb/, checkpoints/step_XXXXXX/ (a model folder + train_state/)
and final/ (`AcousticFlow.from_pretrained`); recipes/README.md has the details. The loop, checkpoints and resume
live in recipes/training.py; this file holds what is specific to the flow model.

The loss masks a random (cosine-scheduled) share of each example's target frames, seeded per micro-batch from
(seed, step, process), so a resumed run masks what the uninterrupted one would have. Eval reports that loss and, at
a fixed 50 % mask, the loss and the accuracy of the most likely token: deterministic, comparable across runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as `python recipes/train_flow.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.config import FlowConfig
from flow.model import AcousticFlow
from recipes.data import train_and_eval
from recipes.flow_data import DataConfig, FlowDataset, collate, read_manifest
from recipes.train_config import parse_args
from recipes.training import Batch, Task, TrainResult, start_run, train_task

EVAL_MASK_RATIO = 0.5


def fixed_ratio_mask(prompt_frames: torch.Tensor, frames: torch.Tensor, length: int, ratio: float,
                     generator: torch.Generator) -> torch.Tensor:
    """bool [B, length]: round(ratio · target frames) of each row's target frames [prompt_frames, frames), at least
    one, picked uniformly at random from `generator`."""
    positions = torch.arange(length, device=frames.device)[None]
    target = (positions >= prompt_frames[:, None]) & (positions < frames[:, None])
    scores = torch.rand(target.shape, device=frames.device, generator=generator).masked_fill(~target, 2.0)
    order = scores.argsort(dim=1).argsort(dim=1)  # the target frames first, in random order
    count = (ratio * (frames - prompt_frames)).round().clamp(min=1)
    return order < count[:, None]


def fixed_ratio_scores(flow: AcousticFlow, acoustic: torch.Tensor, semantic: torch.Tensor,
                       prompt_frames: torch.Tensor, frames: torch.Tensor, generator: torch.Generator,
                       ratio: float = EVAL_MASK_RATIO) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask `ratio` of each row's target frames, predict them from the rest: (summed cross-entropy, masked frames,
    frames whose most likely token is right). acoustic [B, T], semantic [B, T/k], prompt_frames and frames [B]."""
    masked = fixed_ratio_mask(prompt_frames, frames, acoustic.shape[1], ratio, generator)
    inputs = torch.where(masked, torch.full_like(acoustic, flow.config.mask_id), acoustic)
    valid = torch.arange(acoustic.shape[1], device=acoustic.device)[None] < frames[:, None]
    logits = flow(inputs, semantic, valid)[masked].float()  # [N, V]
    truth = acoustic[masked]
    return F.cross_entropy(logits, truth, reduction="sum"), masked.sum(), (logits.argmax(-1) == truth).sum()


def flow_loss(flow: AcousticFlow, seed: int, acoustic: torch.Tensor, semantic: torch.Tensor,
              prompt_frames: torch.Tensor, frames: torch.Tensor, evaluate: bool = False) -> tuple[torch.Tensor, ...]:
    """Training: (summed loss, scored frames) of `masked_loss`. Eval: those, then `fixed_ratio_scores`."""
    generator = torch.Generator(device=acoustic.device)
    generator.manual_seed(seed)
    scores = flow.masked_loss(acoustic, semantic, prompt_frames, frames, generator)
    return (*scores, *fixed_ratio_scores(flow, acoustic, semantic, prompt_frames, frames, generator)) if evaluate \
        else scores


def flow_counts(batch: Batch) -> tuple[int, int]:
    """(target frames, frames). The loss scores a random share of the target frames; the step renormalises."""
    return int((batch["frames"] - batch["prompt_frames"]).sum()), int(batch["frames"].sum())


def flow_metrics(sums: torch.Tensor) -> dict[str, float]:
    """Eval sums -> the training loss per scored frame, and with half of every target masked the loss and the
    accuracy of the most likely token."""
    loss, n, loss_50, n_50, correct_50 = sums.tolist()
    return {"loss": loss / n, "loss_50": loss_50 / n_50, "accuracy_50": correct_50 / n_50}


def main(argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train from a config (see parse_args); `on_step(step)` runs after each step and its checkpoint."""
    start = start_run(parse_args(argv, "Train the acoustic flow model", DataConfig), DataConfig)
    acc, data, train = start.accelerator, start.data, start.train
    config = FlowConfig.from_dict(start.model)
    train_utterances, eval_utterances = train_and_eval(data, partial(read_manifest, config=config), train.seed)
    make_set = partial(FlowDataset, config=config, data=data, seed=train.seed)
    train_set = make_set(train_utterances)
    eval_set = make_set(eval_utterances) if eval_utterances else None
    acc.print(f"{len(train_set)} train / {len(eval_set) if eval_set else 0} eval utterances; "
              f"{len(train_set.mates)} speakers with prompts from their other utterances")

    task = Task(AcousticFlow(config), partial(AcousticFlow, config), flow_loss, flow_counts, collate, flow_metrics,
                eval_inputs={"evaluate": True}, exact_counts=False)
    return train_task(start, task, config.to_dict(), train_set, eval_set, on_step)


if __name__ == "__main__":
    main()
