"""Train the semantic LM (text -> 12.5 Hz semantic tokens): the loop written out, on accelerate.

    python recipes/train_lm.py --config recipes/configs/lm_tiny.json --output-dir runs/lm-tiny [--max-steps 50]
    python recipes/train_lm.py --config ... --output-dir runs/lm-tiny --resume auto       # continue after a kill
    accelerate launch --multi_gpu --num_processes 8 recipes/train_lm.py --config recipes/configs/lm_base.json ...

The output folder holds train_config.json, text_tokenizer/, log.jsonl, tb/, checkpoints/step_XXXXXX/ (a model folder
+ train_state/) and final/ (a model folder: SemanticLM and TextTokenizer .from_pretrained); recipes/README.md has
the details. A checkpoint is written to `step_XXXXXX.tmp/` and renamed when complete, so a kill never leaves half
of one.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as `python recipes/train_lm.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator, DistributedType
from accelerate.utils import is_tensorboard_available, set_seed
from safetensors.torch import load_model

from lm.config import LMConfig
from lm.model import CONFIG_NAME, IGNORE_INDEX, WEIGHTS_NAME, SemanticLM, default_attn_implementation
from lm.text import TextTokenizer, train_text_tokenizer
from recipes.lm_data import (
    DataConfig,
    LengthBucketBatchSampler,
    SemanticLMDataset,
    collate,
    eval_rounds,
    read_manifest,
    split_eval,
)

POSITION_FILE = "position.json"
STEP_DIR = re.compile(r"step_(\d+)")


# ---- configuration -----------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    seed: int = 0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at max_steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2000
    max_steps: int = 200_000
    grad_accum: int = 1
    clip_norm: float = 1.0  # 0 = no clipping (the norm is still logged)
    eval_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    keep_last: int = 3
    mixed_precision: str = "auto"  # auto = bf16 on a GPU that has it, else no
    output_dir: str | None = None  # default runs/<config file stem>

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("max_steps", "grad_accum", "eval_every", "save_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")


def _section(cls: type, name: str, values: dict) -> DataConfig | TrainConfig:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {name} settings {unknown}; known: {sorted(f.name for f in fields(cls))}")
    return cls(**values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the semantic LM; every data.* and train.* setting of the "
                                     "config can be overridden on the command line.")
    parser.add_argument("--config", type=Path, required=True, help="JSON with model, data and train sections")
    parser.add_argument("--resume", help="'auto': the newest checkpoint in OUTPUT_DIR/checkpoints (a fresh start "
                        "when there is none), or a checkpoint folder")
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        for f in fields(cls):
            kind = type(f.default) if f.default is not None else str
            shape = {"nargs": 2, "type": float} if kind is tuple else {"type": kind}
            flag, dest = f"--{f.name.replace('_', '-')}", f"{section}.{f.name}"
            parser.add_argument(flag, dest=dest, help=dest, **shape)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> tuple[dict, DataConfig, TrainConfig]:
    """(model dict with text_vocab_size possibly null, data, train): the JSON file, then command-line overrides."""
    raw = json.loads(args.config.read_text())
    unknown = sorted(set(raw) - {"model", "data", "train"})
    if unknown:
        raise ValueError(f"{args.config}: unknown sections {unknown}; expected model, data and train")
    sections = {name: dict(raw.get(name, {})) for name in ("data", "train")}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            sections[section][name] = value
    return (dict(raw.get("model", {})), _section(DataConfig, "data", sections["data"]),
            _section(TrainConfig, "train", sections["train"]))


# ---- the run -----------------------------------------------------------------------------------------------------
class TokenLoss(nn.Module):
    """Routes `SemanticLM.loss` through `forward`: DDP, FSDP and DeepSpeed wrappers only hook `forward`."""

    def __init__(self, lm: SemanticLM):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lm.loss(input_ids, labels, attention_mask)


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch of the next micro-batch
    batches_done: int = 0  # this rank's micro-batches already consumed in that epoch


@dataclass
class Run:
    accelerator: Accelerator
    model: nn.Module  # TokenLoss, wrapped by accelerate
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokenizer: TextTokenizer
    config: LMConfig
    data: DataConfig
    train: TrainConfig
    output_dir: Path
    resolved: dict  # the resolved config, written next to every checkpoint


@dataclass
class TrainResult:
    output_dir: Path
    losses: dict[int, float] = field(default_factory=dict)  # step -> mean train loss per target token
    eval_losses: dict[int, float] = field(default_factory=dict)


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then a cosine down to min_ratio at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(lm: SemanticLM, train: TrainConfig) -> torch.optim.AdamW:
    # no decay on norms (1-D): decay would pull their gains towards zero
    params = list(lm.parameters())
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


def find_resume(resume: str | None, checkpoints: Path) -> Path | None:
    """The checkpoint folder to resume from, or None for a fresh start."""
    if resume is None:
        if any(STEP_DIR.fullmatch(p.name) for p in checkpoints.glob("step_*")):
            raise FileExistsError(f"{checkpoints} already holds checkpoints: pass --resume auto to continue that "
                                  "run, or choose another --output-dir")
        return None
    if resume != "auto":
        if not (Path(resume) / "train_state" / POSITION_FILE).is_file():
            raise FileNotFoundError(f"{resume} is not a training checkpoint (no train_state/{POSITION_FILE}); pass "
                                    "a checkpoints/step_XXXXXX folder or --resume auto")
        return Path(resume)
    complete = [(int(m.group(1)), p) for p in checkpoints.glob("step_*")
                if (m := STEP_DIR.fullmatch(p.name)) and (p / "train_state" / POSITION_FILE).is_file()]
    return max(complete)[1] if complete else None


def load_text_tokenizer(data: DataConfig, output_dir: Path, resume: Path | None, texts: list[str],
                        accelerator: Accelerator) -> TextTokenizer:
    if resume is not None:
        return TextTokenizer.from_pretrained(resume)  # the one these weights were trained with
    if data.text_tokenizer:
        return TextTokenizer.from_pretrained(data.text_tokenizer)
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


def resolve_model_config(model: dict, tokenizer: TextTokenizer, resume: Path | None) -> LMConfig:
    values = {**model, "text_vocab_size": model.get("text_vocab_size") or tokenizer.vocab_size}
    config = LMConfig.from_dict(values)
    if tokenizer.vocab_size > config.text_vocab_size:
        raise ValueError(f"the text tokenizer has {tokenizer.vocab_size} ids but model.text_vocab_size is "
                         f"{config.text_vocab_size}; set it to null to take it from the tokenizer")
    if resume is not None and (saved := LMConfig.load(resume / CONFIG_NAME)) != config:
        diff = {k: (v, config.to_dict()[k]) for k, v in saved.to_dict().items() if config.to_dict()[k] != v}
        raise ValueError(f"the model config differs from the checkpoint {resume} (checkpoint, now): {diff}")
    return config


def setup(args: argparse.Namespace) -> tuple[Run, Position, SemanticLMDataset, SemanticLMDataset | None]:
    model_section, data, train = load_config(args)
    output_dir = Path(train.output_dir or Path("runs") / args.config.stem)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator(train, output_dir)
    resume = find_resume(args.resume, output_dir / "checkpoints")
    accelerator.print(f"resuming from {resume}" if resume else f"starting a fresh run in {output_dir}")
    set_seed(train.seed)  # for the model init; the data draws from its own seeded streams

    semantic_vocab_size = model_section.get("semantic_vocab_size", LMConfig.semantic_vocab_size)
    train_utterances = read_manifest(data.train_manifest, semantic_vocab_size)
    eval_utterances = []
    if data.eval_manifest:
        eval_utterances = read_manifest(data.eval_manifest, semantic_vocab_size)
    elif data.eval_fraction > 0:
        train_utterances, eval_utterances = split_eval(train_utterances, data.eval_fraction, train.seed)
    tokenizer = load_text_tokenizer(data, output_dir, resume, [u.text for u in train_utterances], accelerator)
    config = resolve_model_config(model_section, tokenizer, resume)
    make_set = partial(SemanticLMDataset, encode=tokenizer.encode, config=config, prompt_prob=data.prompt_prob,
                       seed=train.seed, max_length=data.max_tokens)
    train_set = make_set(train_utterances)
    eval_set = make_set(eval_utterances) if eval_utterances else None
    eval_set = eval_set if eval_set else None  # every eval utterance dropped: nothing to evaluate
    for name, dataset in (("train", train_set), ("eval", eval_set)):
        if dataset is not None and dataset.describe_dropped():
            accelerator.print(f"{name} set: {dataset.describe_dropped()}")
    accelerator.print(f"{len(train_set)} train / {len(eval_set) if eval_set else 0} eval utterances; "
                      f"{tokenizer.vocab_size} text ids")

    resolved = {"model": config.to_dict(), "data": asdict(data), "train": asdict(train)}
    if accelerator.is_main_process:
        (output_dir / "train_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    accelerator.init_trackers("tb", config={f"{s}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
                                            for s, section in resolved.items() for k, v in section.items()})
    half = accelerator.mixed_precision in ("bf16", "fp16")
    lm = SemanticLM(config, default_attn_implementation(accelerator.device, torch.bfloat16 if half else torch.float32))
    optimizer = build_optimizer(lm, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_factor, warmup_steps=train.warmup_steps, max_steps=train.max_steps, min_ratio=train.min_lr_ratio))
    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # DeepSpeed owns clipping; it wants a batch size
        accelerator.state.deepspeed_plugin.deepspeed_config.update(  # for bookkeeping only: ours are token-bounded
            gradient_clipping=train.clip_norm, train_micro_batch_size_per_gpu=1)
    model, optimizer, scheduler = accelerator.prepare(TokenLoss(lm), optimizer, scheduler)
    # The weights live once per checkpoint, as its model.safetensors; train_state/ holds everything else.
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, folder: models.clear())
    run = Run(accelerator, model, optimizer, scheduler, tokenizer, config, data, train, output_dir, resolved)
    return run, (load_checkpoint(run, resume) if resume else Position()), train_set, eval_set


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
            lm = SemanticLM(run.config)
            lm.load_state_dict({k.removeprefix("lm."): v for k, v in state.items()})
            lm.save_pretrained(tmp)
    elif acc.is_main_process:
        acc.unwrap_model(run.model).lm.save_pretrained(tmp)
    if position is not None:
        acc.save_state(str(tmp / "train_state"))  # every rank: per-rank RNG states
    if acc.is_main_process:
        run.tokenizer.save(tmp)
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


def load_checkpoint(run: Run, folder: Path) -> Position:
    # FSDP shards the weights and DeepSpeed checkpoints its engine whole: accelerate keeps those in train_state/
    if run.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        load_model(run.accelerator.unwrap_model(run.model).lm, str(folder / WEIGHTS_NAME), strict=True)
    run.accelerator.load_state(str(folder / "train_state"))  # optimizer, scheduler, RNG, accelerate's step count
    return Position(**json.loads((folder / "train_state" / POSITION_FILE).read_text()))


# ---- training ----------------------------------------------------------------------------------------------------
def batch_stream(sampler: LengthBucketBatchSampler, dataset: SemanticLMDataset, start: Position, num_workers: int,
                 device: torch.device) -> Iterator[tuple[dict[str, torch.Tensor], int, int]]:
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


def train_step(run: Run, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches. The loss is the mean over every target token of the step
    on every rank, so long and short micro-batches weigh what their tokens weigh."""
    acc, lr = run.accelerator, run.scheduler.get_last_lr()[0]  # read now: DeepSpeed steps inside backward
    counts = torch.tensor([sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches),
                           sum(int(b["attention_mask"].sum()) for b in batches)], device=acc.device)
    n_target, n_input = acc.reduce(counts, "sum").tolist()
    # DDP averages gradients over ranks and accelerate divides by grad_accum: scaling the summed loss by both over
    # the step's target tokens makes the gradient sum(per-token gradients) / n_target.
    scale = acc.num_processes * acc.gradient_accumulation_steps / n_target
    loss_sum = torch.zeros((), device=acc.device)
    for batch in batches:
        with acc.accumulate(run.model):
            batch_loss, _ = run.model(**batch)
            acc.backward(batch_loss * scale)
            loss_sum += batch_loss.detach().float()
    if not acc.sync_gradients:
        raise RuntimeError("micro-batches out of step with accelerate's gradient accumulation count")
    grad_norm = acc.clip_grad_norm_(run.model.parameters(), run.train.clip_norm or math.inf)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": acc.reduce(loss_sum, "sum").item() / n_target, "lr": lr,
            "grad_norm": math.nan if grad_norm is None else float(grad_norm), "tokens": n_input}


@torch.no_grad()
def evaluate(run: Run, dataset: SemanticLMDataset) -> float:
    """Mean loss per target token over the whole eval set (no prompt choice varies: epoch 0 always)."""
    acc = run.accelerator
    sampler = LengthBucketBatchSampler(dataset, run.data.max_tokens, run.train.seed)
    totals = torch.zeros(2, dtype=torch.float64, device=acc.device)
    run.model.eval()
    for keys, counts in eval_rounds(sampler.epoch_batches(0), acc.process_index, acc.num_processes):
        batch = {k: v.to(acc.device) for k, v in collate([dataset[key] for key in keys]).items()}
        loss_sum, n_tokens = run.model(**batch)
        if counts:
            totals += torch.stack([loss_sum.double(), n_tokens.double()])
    run.model.train()
    totals = acc.reduce(totals, "sum")
    return (totals[0] / totals[1]).item()


def log(run: Run, progress: tqdm, step: int, values: dict[str, float]) -> None:
    run.accelerator.log(values, step=step)
    if run.accelerator.is_main_process:
        with (run.output_dir / "log.jsonl").open("a") as lines:
            lines.write(json.dumps({"step": step, **values}) + "\n")
        if "eval/loss" in values:
            progress.write(f"step {step:>7}  eval loss {values['eval/loss']:.4f}")
        else:
            progress.write(f"step {step:>7}/{run.train.max_steps}  loss {values['train/loss']:.4f}  "
                           f"lr {values['train/lr']:.2e}  grad {values['train/grad_norm']:.3f}  "
                           f"{values['train/tokens_per_s']:,.0f} tok/s  epoch {values['train/epoch']}")


def main(argv: list[str] | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train from a config (see parse_args); `on_step(step)` runs after each step and its checkpoint."""
    run, position, train_set, eval_set = setup(parse_args(argv))
    acc, train = run.accelerator, run.train
    sampler = LengthBucketBatchSampler(train_set, run.data.max_tokens, train.seed, acc.process_index,
                                       acc.num_processes)
    stream = batch_stream(sampler, train_set, position, run.data.num_workers, acc.device)
    result = TrainResult(run.output_dir)
    progress = tqdm(total=train.max_steps, initial=position.step, disable=not acc.is_main_process, desc="train")
    busy, tokens = 0.0, 0  # seconds spent in training steps and tokens they processed, since the last log line
    run.model.train()
    while position.step < train.max_steps:
        start = time.perf_counter()
        micro = [next(stream) for _ in range(train.grad_accum)]
        stats = train_step(run, [batch for batch, _, _ in micro])
        busy, tokens = busy + time.perf_counter() - start, tokens + stats["tokens"]
        position = Position(position.step + 1, epoch=micro[-1][1], batches_done=micro[-1][2])
        step, last = position.step, position.step == train.max_steps
        result.losses[step] = stats["loss"]
        progress.update()
        if step % train.log_every == 0 or last:
            log(run, progress, step, {"train/loss": stats["loss"], "train/lr": stats["lr"],
                                      "train/grad_norm": stats["grad_norm"], "train/epoch": position.epoch,
                                      "train/tokens_per_s": tokens / busy})
            busy, tokens = 0.0, 0
        if eval_set is not None and (step % train.eval_every == 0 or last):
            result.eval_losses[step] = evaluate(run, eval_set)
            log(run, progress, step, {"eval/loss": result.eval_losses[step]})
        if step % train.save_every == 0 or last:
            save_checkpoint(run, position)
        if on_step is not None:
            on_step(step)
    progress.close()
    save_folder(run, run.output_dir / "final", position=None)
    acc.print(f"done: {run.output_dir / 'final'}")
    acc.end_training()
    return result


if __name__ == "__main__":
    main()
