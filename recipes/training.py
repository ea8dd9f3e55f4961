"""The training machinery the recipes share, on accelerate: AdamW with warm-up + cosine, checkpoints (atomic,
resumable exactly), the token-weighted step, evaluation, logging and the loop (settings: recipes/train_config.py).

A recipe (train_lm.py, train_flow.py) reads its data and builds its model, then hands both over as a `Task`:
`train_task(start_run(args, DataConfig), Task(model, new_model, loss, counts, collate), ...)`. `Task.loss(model,
seed=..., **batch)` returns (summed loss, scored tokens): summing lets every scored token weigh the same across
micro-batches and processes. `seed` comes from (train.seed, step, global micro-batch index), so a loss with
randomness of its own (masking) repeats exactly after a resume.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import is_tensorboard_available, set_seed
from safetensors.torch import load_model
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from recipes.data import BucketedDataset, LengthBucketBatchSampler, eval_rounds
from recipes.train_config import TrainConfig, load_config

POSITION_FILE = "position.json"
BEST_FILE = "best.json"  # {"step", "eval_loss"} of OUTPUT_DIR/best
WEIGHTS_NAME = "model.safetensors"  # what the recipes' models write in save_pretrained, next to config.json
STEP_DIR = re.compile(r"step_(\d+)")
TRAIN_SEEDS, EVAL_SEEDS = 0, 1  # streams of per-batch loss seeds
Batch = dict[str, torch.Tensor]


# ---- the run -----------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """What a recipe supplies: its model, loss and batches."""

    model: nn.Module  # the bare model to train; save_pretrained(folder) writes config.json + WEIGHTS_NAME
    new_model: Callable[[], nn.Module]  # a fresh CPU instance, to gather FSDP-sharded weights into for saving
    loss: Callable[..., tuple[torch.Tensor, ...]]  # (model, seed=int, **batch) -> (summed loss, scored tokens, ...)
    counts: Callable[[Batch], tuple[int, int]]  # (scored tokens as far as known before the forward, input tokens)
    collate: Callable[[list], Batch]  # the dataset's examples -> a batch of tensors
    # eval: `loss(..., **eval_inputs)` summed over the eval set (float64 [N]) -> metrics, at least "loss"
    metrics: Callable[[torch.Tensor], dict[str, float]] = lambda sums: {"loss": (sums[0] / sums[1]).item()}
    eval_inputs: dict[str, Any] = field(default_factory=dict)
    # False when the forward decides how many tokens it scores (random masking): the step then rescales its
    # gradients once the count is in, which DeepSpeed (it steps inside backward) cannot do.
    exact_counts: bool = True
    save_extras: Callable[[Path], None] | None = None  # more files for every model folder (a tokenizer)


class Objective(nn.Module):
    """Runs `loss(model, **inputs)` as `forward`: DDP, FSDP and DeepSpeed wrappers only hook `forward`."""

    def __init__(self, model: nn.Module, loss: Callable[..., tuple[torch.Tensor, ...]]):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, **inputs: Any) -> tuple[torch.Tensor, ...]:
        return self.loss(self.model, **inputs)


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch of the next micro-batch
    batches_done: int = 0  # this rank's micro-batches already consumed in that epoch


@dataclass
class Start:
    """The resolved config, the accelerator and where the run starts from."""

    model: dict  # the config's model section, as written
    data: Any  # the recipe's DataConfig
    train: TrainConfig
    output_dir: Path
    accelerator: Accelerator
    resume: Path | None  # the checkpoint to resume from; None = a fresh start


@dataclass
class Run:
    accelerator: Accelerator
    model: nn.Module  # the Objective, wrapped by accelerate
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    task: Task
    data: Any  # the recipe's DataConfig: a ManifestDataConfig
    train: TrainConfig
    output_dir: Path
    resolved: dict  # the resolved config, written next to every checkpoint


@dataclass
class TrainResult:
    output_dir: Path
    losses: dict[int, float] = field(default_factory=dict)  # step -> mean train loss per scored token
    eval_losses: dict[int, float] = field(default_factory=dict)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> every eval metric


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then a cosine down to min_ratio at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    # no decay on norms (1-D): decay would pull their gains towards zero
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas)


def make_accelerator(train: TrainConfig, output_dir: Path) -> Accelerator:
    precision = train.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    tracker = "tensorboard" if is_tensorboard_available() else None
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=train.grad_accum,
                              step_scheduler_with_optimizer=False,  # else it steps once per process per step
                              log_with=tracker, project_dir=str(output_dir))
    if tracker is None:
        accelerator.print("tensorboard is not installed: logging to log.jsonl and the console only "
                          "(pip install tensorboard)")
    return accelerator


def find_resume(resume: str | None, checkpoints: Path, marker: str = f"train_state/{POSITION_FILE}",
                what: str = "training checkpoint") -> Path | None:
    """The checkpoint folder to resume from, or None for a fresh start (which must not overwrite a run). A folder is
    complete when it holds `marker`, the file its recipe writes last."""
    if resume is None:
        if any(STEP_DIR.fullmatch(p.name) for p in checkpoints.glob("step_*")):
            raise FileExistsError(f"{checkpoints} already holds checkpoints: pass --resume auto to continue that "
                                  "run, or choose another --output-dir")
        return None
    if resume != "auto":
        if not (Path(resume) / marker).is_file():
            raise FileNotFoundError(f"{resume} is not a {what} (no {marker}); pass a checkpoints/step_XXXXXX folder "
                                    "or --resume auto")
        return Path(resume)
    complete = [(int(m.group(1)), p) for p in checkpoints.glob("step_*")
                if (m := STEP_DIR.fullmatch(p.name)) and (p / marker).is_file()]
    return max(complete)[1] if complete else None


def start_run(args: argparse.Namespace, data_cls: type) -> Start:
    model, data, train = load_config(args, data_cls)
    output_dir = Path(train.output_dir or Path("runs") / args.config.stem)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(train, output_dir)
    resume = find_resume(args.resume, output_dir / "checkpoints")
    accelerator.print(f"resuming from {resume}" if resume else f"starting a fresh run in {output_dir}")
    set_seed(train.seed)  # for the model init; the data draws from its own seeded streams
    return Start(model, data, train, output_dir, accelerator, resume)


def prepare_run(start: Start, task: Task, model_config: dict) -> tuple[Run, Position]:
    """Optimizer, schedule and accelerate around `task.model`; restored from `start.resume` when there is one."""
    acc, train = start.accelerator, start.train
    model_config = json.loads(json.dumps(model_config))  # as config.json holds it: tuples become lists
    if start.resume is not None and (saved := json.loads((start.resume / "config.json").read_text())) != model_config:
        diff = {k: (saved.get(k), model_config.get(k)) for k in {*saved, *model_config}
                if saved.get(k) != model_config.get(k)}
        raise ValueError(f"the model config differs from the checkpoint {start.resume} (checkpoint, now): {diff}")
    if start.resume is None and train.init_from:
        init_weights(task.model, Path(train.init_from))
        acc.print(f"weights from {train.init_from}")
    resolved = {"model": model_config, "data": asdict(start.data), "train": asdict(train)}
    if acc.is_main_process:
        (start.output_dir / "train_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    acc.init_trackers("tb", config={f"{s}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
                                    for s, section in resolved.items() for k, v in section.items()})
    optimizer = build_optimizer(task.model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_factor, warmup_steps=train.warmup_steps, max_steps=train.max_steps, min_ratio=train.min_lr_ratio))
    if acc.distributed_type == DistributedType.DEEPSPEED:
        if not task.exact_counts:
            raise ValueError("this loss scores a random number of tokens, so its gradients are normalised after the "
                             "backward passes, which DeepSpeed does not allow: use DDP or FSDP")
        acc.state.deepspeed_plugin.deepspeed_config.update(  # DeepSpeed owns clipping; it wants a batch size for
            gradient_clipping=train.clip_norm, train_micro_batch_size_per_gpu=1)  # bookkeeping only
    model, optimizer, scheduler = acc.prepare(Objective(task.model, task.loss), optimizer, scheduler)
    # The weights live once per checkpoint, as its model.safetensors; train_state/ holds everything else.
    acc.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    acc.register_load_state_pre_hook(lambda models, folder: models.clear())
    run = Run(acc, model, optimizer, scheduler, task, start.data, train, start.output_dir, resolved)
    return run, (load_checkpoint(run, start.resume) if start.resume else Position())


def init_weights(model: nn.Module, folder: Path) -> None:
    """Fine-tuning: every weight from `folder`'s model.safetensors, strictly (same architecture). The training-only
    settings of the model section (a warm-up of the quantiser, loss weights) may differ from that run's."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"train.init_from: no {WEIGHTS_NAME} in {folder}; give a run's final/ or one of its "
                                "checkpoints/step_N/ folders")
    try:
        load_model(model, str(weights), strict=True)
    except RuntimeError as error:  # missing/unexpected keys or other shapes: another architecture
        raise ValueError(f"train.init_from: {weights} does not fit this model (another architecture?): "
                         f"{str(error)[:600]}") from None


# ---- checkpoints -------------------------------------------------------------------------------------------------
def save_folder(run: Run, folder: Path, position: Position | None) -> None:
    """Write a model folder (and train_state/ when `position` is given) via `folder.tmp`, then rename it."""
    acc = run.accelerator
    tmp = folder.with_name(folder.name + ".tmp")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if acc.distributed_type == DistributedType.FSDP:
        state = acc.get_state_dict(run.model)  # gathers the full weights onto the main process (every rank calls)
        if acc.is_main_process:
            model = run.task.new_model()
            model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
            model.save_pretrained(tmp)
    elif acc.is_main_process:
        acc.unwrap_model(run.model).model.save_pretrained(tmp)
    if position is not None:
        acc.save_state(str(tmp / "train_state"))  # every rank: per-rank RNG states
    if acc.is_main_process:
        if run.task.save_extras is not None:
            run.task.save_extras(tmp)
        (tmp / "train_config.json").write_text(json.dumps(run.resolved, indent=2) + "\n")
        if position is not None:
            (tmp / "train_state" / POSITION_FILE).write_text(json.dumps(asdict(position)) + "\n")
    acc.wait_for_everyone()  # every rank's files are in before the folder takes its final name
    if acc.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    acc.wait_for_everyone()


def save_checkpoint(run: Run, position: Position) -> Path:
    checkpoints = run.output_dir / "checkpoints"
    folder = checkpoints / f"step_{position.step:06d}"
    save_folder(run, folder, position)
    if run.accelerator.is_main_process:
        for stale in checkpoints.glob("step_*.tmp"):  # left by a kill mid-save
            shutil.rmtree(stale, ignore_errors=True)
        done = sorted((int(m.group(1)), p) for p in checkpoints.iterdir() if (m := STEP_DIR.fullmatch(p.name)))
        for _, old in done[:-run.train.keep_last]:
            shutil.rmtree(old)
    return folder


def best_eval_loss(output_dir: Path) -> float:
    """The eval loss of OUTPUT_DIR/best, the lowest seen so far (inf before the first eval)."""
    record = output_dir / "best" / BEST_FILE
    return json.loads(record.read_text())["eval_loss"] if record.is_file() else math.inf


def save_best(run: Run, step: int, eval_loss: float) -> None:
    """Keep the weights of the lowest eval loss in OUTPUT_DIR/best: a small corpus overfits long before max_steps,
    and the checkpoints that keep_last leaves may all be past the best."""
    folder = run.output_dir / "best"
    save_folder(run, folder, position=None)
    if run.accelerator.is_main_process:
        (folder / BEST_FILE).write_text(json.dumps({"step": step, "eval_loss": eval_loss}) + "\n")


def load_checkpoint(run: Run, folder: Path) -> Position:
    # FSDP shards the weights and DeepSpeed checkpoints its engine whole: accelerate keeps those in train_state/
    if run.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        load_model(run.accelerator.unwrap_model(run.model).model, str(folder / WEIGHTS_NAME), strict=True)
    run.accelerator.load_state(str(folder / "train_state"))  # optimizer, scheduler, RNG, accelerate's step count
    return Position(**json.loads((folder / "train_state" / POSITION_FILE).read_text()))


# ---- training ----------------------------------------------------------------------------------------------------
def batch_stream(sampler: LengthBucketBatchSampler, dataset: Any, collate: Callable[[list], Batch], start: Position,
                 num_workers: int, device: torch.device) -> Iterator[tuple[Batch, int, int]]:
    """(batch on device, epoch, this rank's batches done in that epoch) forever, from `start` on."""
    epoch, skip = start.epoch, start.batches_done
    while True:
        if not sampler.rank_batches(epoch):
            raise ValueError(f"the train set ({len(dataset)} usable utterances) makes fewer batches than processes "
                             f"({sampler.num_replicas}); lower data.max_tokens or add data")
        sampler.set_epoch(epoch, skip)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        for done, batch in enumerate(loader, start=skip + 1):
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}, epoch, done
        epoch, skip = epoch + 1, 0


def loss_seed(seed: int, stream: int, step: int, index: int) -> int:
    """The loss's own seed for a micro-batch. `index` counts micro-batches across processes (micro · W + rank), so
    W processes see the seeds one process accumulating W times as many micro-batches sees."""
    return int(np.random.default_rng([seed, stream, step, index]).integers(2**62))


def train_step(run: Run, batches: list[Batch], step: int) -> dict[str, float]:
    """Optimizer step `step` over this rank's micro-batches. The loss is the mean over every scored token of the
    step on every rank, so long and short micro-batches weigh what their tokens weigh."""
    acc, lr = run.accelerator, run.scheduler.get_last_lr()[0]  # read now: DeepSpeed steps inside backward
    counts = torch.tensor([sum(run.task.counts(b)[i] for b in batches) for i in (0, 1)], device=acc.device)
    planned, n_input = acc.reduce(counts, "sum").tolist()
    # DDP averages gradients over ranks and accelerate divides by grad_accum: scaling the summed loss by both over
    # the step's scored tokens makes the gradient sum(per-token gradients) / n_scored.
    scale = acc.num_processes * acc.gradient_accumulation_steps / planned
    sums = torch.zeros(2, dtype=torch.float64, device=acc.device)  # summed loss, scored tokens
    for micro, batch in enumerate(batches):
        with acc.accumulate(run.model):
            seed = loss_seed(run.train.seed, TRAIN_SEEDS, step, micro * acc.num_processes + acc.process_index)
            loss_sum, n_scored = run.model(**batch, seed=seed)[:2]
            acc.backward(loss_sum * scale)
            sums += torch.stack([loss_sum.detach().double(), n_scored.double()])
    if not acc.sync_gradients:
        raise RuntimeError("micro-batches out of step with accelerate's gradient accumulation count")
    loss_total, n_scored = acc.reduce(sums, "sum").tolist()
    if n_scored != planned:  # the forward picked what to score: renormalise from the planned count to the real one
        if acc.distributed_type == DistributedType.DEEPSPEED:
            raise RuntimeError(f"{n_scored:.0f} tokens scored where {planned:.0f} were counted beforehand")
        for param in run.model.parameters():
            if param.grad is not None:
                param.grad.mul_(planned / n_scored)
    grad_norm = acc.clip_grad_norm_(run.model.parameters(), run.train.clip_norm or math.inf)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_total / n_scored, "lr": lr, "grad_norm": math.nan if grad_norm is None else float(grad_norm),
            "tokens": n_input}


@torch.no_grad()
def evaluate(run: Run, dataset: BucketedDataset) -> dict[str, float]:
    """`task.metrics` of the model's outputs (sums such as loss and token counts) summed over every batch of the
    eval set on every rank. Epoch 0's examples and batch b's loss seed from (seed, b): every eval sees the same."""
    acc = run.accelerator
    batches = LengthBucketBatchSampler(dataset, run.data.max_tokens, run.train.seed).epoch_batches(0)
    totals = None
    run.model.eval()
    for index, keys, counts in eval_rounds(batches, acc.process_index, acc.num_processes):
        batch = {k: v.to(acc.device) for k, v in run.task.collate([dataset[key] for key in keys]).items()}
        seed = loss_seed(run.train.seed, EVAL_SEEDS, 0, index)
        sums = torch.stack([v.double() for v in run.model(**batch, seed=seed, **run.task.eval_inputs)])
        totals = torch.zeros_like(sums) if totals is None else totals
        if counts:
            totals += sums
    run.model.train()
    return run.task.metrics(acc.reduce(totals, "sum").cpu())


def log(run: Run, progress: tqdm, step: int, values: dict[str, float]) -> None:
    run.accelerator.log(values, step=step)
    if not run.accelerator.is_main_process:
        return
    with (run.output_dir / "log.jsonl").open("a") as lines:
        lines.write(json.dumps({"step": step, **values}) + "\n")
    if "train/loss" in values:
        progress.write(f"step {step:>7}/{run.train.max_steps}  loss {values['train/loss']:.4f}  "
                       f"lr {values['train/lr']:.2e}  grad {values['train/grad_norm']:.3f}  "
                       f"{values['train/tokens_per_s']:,.0f} tok/s  epoch {values['train/epoch']}")
    else:
        progress.write(f"step {step:>7}  " + "  ".join(f"{k} {v:.4f}" for k, v in values.items()))


def past(acc: Accelerator, deadline: float) -> bool:
    """Whether any process has passed its `time.monotonic()` deadline, so that all of them stop at the same step."""
    late = torch.tensor([float(time.monotonic() > deadline)], device=acc.device)
    return bool(acc.reduce(late, "sum").item() > 0)


def train_task(start: Start, task: Task, model_config: dict, train_set: BucketedDataset,
               eval_set: BucketedDataset | None, on_step: Callable[[int], None] | None) -> TrainResult:
    """Train to `max_steps` (from the checkpoint `start` names, if any): log, evaluate and checkpoint on schedule,
    keep the lowest eval loss's weights in OUTPUT_DIR/best, then write OUTPUT_DIR/final. `on_step(step)` runs after
    each step and its checkpoint."""
    run, position = prepare_run(start, task, model_config)
    acc, train = run.accelerator, run.train
    sampler = LengthBucketBatchSampler(train_set, run.data.max_tokens, train.seed, acc.process_index,
                                       acc.num_processes)
    stream = batch_stream(sampler, train_set, task.collate, position, run.data.num_workers, acc.device)
    result = TrainResult(run.output_dir)
    progress = tqdm(total=train.max_steps, initial=position.step, disable=not acc.is_main_process, desc="train")
    busy, tokens = 0.0, 0  # seconds spent in training steps and tokens they processed, since the last log line
    deadline = time.monotonic() + 60 * train.max_minutes if train.max_minutes else None
    # read once, so that every rank holds the same value; a fresh start replaces whatever best/ an old run left
    best = best_eval_loss(run.output_dir) if start.resume is not None else math.inf
    run.model.train()
    while position.step < train.max_steps:
        begin = time.perf_counter()
        micro = [next(stream) for _ in range(train.grad_accum)]
        stats = train_step(run, [batch for batch, _, _ in micro], position.step + 1)
        busy, tokens = busy + time.perf_counter() - begin, tokens + stats["tokens"]
        position = Position(position.step + 1, epoch=micro[-1][1], batches_done=micro[-1][2])
        step = position.step
        out_of_time = deadline is not None and step % train.log_every == 0 and past(acc, deadline)
        last = step == train.max_steps or out_of_time
        result.losses[step] = stats["loss"]
        progress.update()
        if step % train.log_every == 0 or last:
            log(run, progress, step, {"train/loss": stats["loss"], "train/lr": stats["lr"],
                                      "train/grad_norm": stats["grad_norm"], "train/epoch": position.epoch,
                                      "train/tokens_per_s": tokens / busy})
            busy, tokens = 0.0, 0
        if eval_set is not None and (step % train.eval_every == 0 or last):
            result.evals[step] = evaluate(run, eval_set)
            result.eval_losses[step] = result.evals[step]["loss"]
            log(run, progress, step, {f"eval/{k}": v for k, v in result.evals[step].items()})
            if result.eval_losses[step] < best:  # every rank holds the same reduced loss, so all of them save
                best = result.eval_losses[step]
                save_best(run, step, best)
        if step % train.save_every == 0 or last:
            save_checkpoint(run, position)
        if on_step is not None:
            on_step(step)
        if out_of_time:
            acc.print(f"the {train.max_minutes:g}-minute budget ran out at step {step}: checkpointed; continue with "
                      "--resume auto")
            break
    progress.close()
    save_folder(run, run.output_dir / "final", position=None)
    acc.print(f"done: {run.output_dir / 'final'}")
    acc.end_training()
    return result
