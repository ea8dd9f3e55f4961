"""Train the SAC codec (research/sac.md §4) on accelerate: mel + VQ losses, then MPD + MRD adversarial training.

    python recipes/train_codec.py --config recipes/configs/codec_tiny.json --tokens TOKEN_DIR --output-dir runs/c
    python recipes/train_codec.py --config ... --output-dir runs/c --resume auto

A GAN needs two optimizers, so this recipe runs its own loop rather than recipes/training.py's single-optimizer one
(it reuses train_config.py's command line and training.py's accelerator). Each step: once past
`generator_warmup_steps`, a discriminator step on the detached reconstruction, then the generator step (the release's
order), whose adversarial and feature-matching losses start `discriminator_warmup_steps` later (0 in the release).
Both use AdamW with an exponential LR stepped per iteration; EMA weights (ema_pytorch's defaults) are saved with every
checkpoint as ema/.

The semantic-feature MSE (`semantic_weight`) regresses the tokenizer's pre-pooling frames from the decoder
features through the model's `semantic_decoder`; it runs when the config builds that head and the data carries the
frames (data.semantic_tokenizer, see recipes/codec_data.py). Not implemented: the speaker-similarity head (it needs
ERes2Net embeddings); configs set speaker_predictor to null.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from torch.utils.data import DataLoader

if __package__ in (None, ""):  # run as `python recipes/train_codec.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import SAC, SACConfig
from codec.checkpoint import load_state_dict_strict
from codec.discriminator import Discriminator
from codec.losses import MultiScaleMelLoss, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from codec.semantic_tokenizer import SemanticTokenizer
from codec.weights import read_weights
from recipes.codec_data import CodecCrops, DataConfig, StepBatches, collate
from recipes.train_config import load_config, parse_args
from recipes.training import STEP_DIR, find_resume, make_accelerator, past


@dataclass
class CodecTrainConfig:
    seed: int = 0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.9)
    weight_decay: float = 0.01
    lr_gamma: float = 0.999996  # per iteration
    min_lr: float = 1e-6
    generator_warmup_steps: int = 1500  # mel + VQ only until then
    # then the discriminator trains alone for this many steps before the generator gets its adversarial and
    # feature-matching losses: a fresh discriminator's first verdicts on an already trained decoder are noise
    discriminator_warmup_steps: int = 0
    max_steps: int = 1_000_000
    clip_norm: float = 5.0
    mel_weight: float = 15.0
    vq_weight: float = 1.0
    semantic_weight: float = 1000.0  # the release's `mse_loss` weight (for Whisper-large features)
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    ema_beta: float = 0.9999
    ema_update_after_step: int = 100
    ema_update_every: int = 10
    ema_power: float = 2 / 3
    save_every: int = 2000
    log_every: int = 10
    keep_last: int = 3
    mixed_precision: str = "no"  # the release trains in fp32
    output_dir: str | None = None
    init_from: str | None = None  # a SAC model folder whose generator weights a fresh run starts from (fine-tuning)
    init_skip: list[str] = field(default_factory=list)  # modules (e.g. acoustic_decoder) that keep their fresh init
    # modules that keep their start weights: no gradients, no weight decay, eval mode (the acoustic VQ revives no
    # codes). Freezing the encoders and quantiser trains the decoder on without changing any token a corpus holds.
    freeze: list[str] = field(default_factory=list)
    # each clip's share of acoustic codes replaced by random ones is drawn from U(0, acoustic_noise): the decoder
    # learns to read the words from the semantic stream (SAC.noisy_acoustic); 0 = off, as in the release
    acoustic_noise: float = 0.0
    max_minutes: float = 0.0  # wall-time budget of this invocation: stop, checkpoint and write final/ (0 = none)
    # what recipes.training.make_accelerator reads
    grad_accum: int = 1

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.discriminator_warmup_steps < 0:
            raise ValueError(f"train.discriminator_warmup_steps must be >= 0, got {self.discriminator_warmup_steps}")
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes must be 0 (no budget) or positive, got {self.max_minutes}")
        if not 0 <= self.acoustic_noise <= 1:
            raise ValueError(f"train.acoustic_noise is a share of frames in [0, 1], got {self.acoustic_noise}")


class EMA:
    """ema_pytorch.EMA's schedule: copy until `update_after_step`, then every `update_every` calls lerp towards the
    model with decay 1 − (1 + n)^−power capped at beta, so early averages forget their random start quickly."""

    def __init__(self, model: nn.Module, beta: float, update_after_step: int, update_every: int, power: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.beta, self.after, self.every, self.power, self.step = beta, update_after_step, update_every, power, 0

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        step, self.step = self.step, self.step + 1
        if step % self.every:
            return
        source = online.state_dict()
        if step <= self.after:
            self.model.load_state_dict(source)
            return
        n = max(0, self.step - self.after - 1)
        decay = min(self.beta, 1 - (1 + n) ** -self.power) if n > 0 else 0.0
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.lerp_(source[name].to(value.dtype), 1 - decay)
            else:
                value.copy_(source[name])


def exponential_lr(optimizer: torch.optim.Optimizer, train: CodecTrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(train.min_lr / train.lr, train.lr_gamma ** step))


@dataclass
class CodecRun:
    accelerator: object
    generator: nn.Module
    discriminator: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    g_sched: torch.optim.lr_scheduler.LRScheduler
    d_sched: torch.optim.lr_scheduler.LRScheduler
    mel: MultiScaleMelLoss
    ema: EMA | None  # main process only
    train: CodecTrainConfig
    # copied into every saved model folder, so that a checkpoint encodes as well as decodes (SpeechCodec loads it)
    semantic_tokenizer: Path | None = None


def train_step(run: CodecRun, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
    """One iteration (`step` counts from 1): D step (after G's warm-up), then G step (adversarial after D's)."""
    acc, t = run.accelerator, run.train
    wav, critic_trains = batch["wav"], step > t.generator_warmup_steps
    adversarial = step > t.generator_warmup_steps + t.discriminator_warmup_steps
    seed = t.seed * 1_000_003 + step
    noise = None
    if t.acoustic_noise:
        noise = t.acoustic_noise * torch.rand(wav.shape[0], generator=torch.Generator().manual_seed(seed))  # [B]
    out = run.generator(wav, batch["semantic"], seed=seed, acoustic_noise=noise, acoustic_ids=batch.get("acoustic"))
    recon, stats = out["recon"], {}
    target = wav[..., :recon.shape[-1]]
    if critic_trains:
        d_loss = discriminator_loss(run.discriminator(target), run.discriminator(recon.detach()))
        acc.backward(d_loss)
        acc.clip_grad_norm_(run.discriminator.parameters(), t.clip_norm)
        run.d_opt.step()
        run.d_opt.zero_grad(set_to_none=True)
        run.d_sched.step()  # per D step: D's decay starts when it starts training
        stats["d_loss"] = d_loss.item()
    mel, vq = run.mel(recon, target), out["vq_loss"].mean()
    g_loss = t.mel_weight * mel + t.vq_weight * vq
    semantic = semantic_loss(out, batch)
    if semantic is not None:
        g_loss = g_loss + t.semantic_weight * semantic
        stats["semantic"] = semantic.item()
    if adversarial:
        # The G step needs D's gradient with respect to the reconstruction only: no weight gradients, no graph for
        # the real side (feature matching detaches it), and, through the unwrapped module, no DDP all-reduce.
        critic = acc.unwrap_model(run.discriminator).requires_grad_(False)
        with torch.no_grad():
            real = critic(target)
        fake = critic(recon)
        adv, fm = generator_adversarial_loss(fake), feature_matching_loss(real, fake)
        g_loss = g_loss + t.adv_weight * adv + t.fm_weight * fm
        stats.update(adv=adv.item(), fm=fm.item())
    acc.backward(g_loss)
    if adversarial:
        critic.requires_grad_(True)
    grad = acc.clip_grad_norm_(run.generator.parameters(), t.clip_norm)
    run.g_opt.step()
    run.g_opt.zero_grad(set_to_none=True)
    stats.update(loss=g_loss.item(), mel=mel.item(), vq=vq.item(), lr=run.g_sched.get_last_lr()[0],
                 grad_norm=float(grad))
    run.g_sched.step()
    if run.ema is not None:
        run.ema.update(acc.unwrap_model(run.generator))
    return stats


def semantic_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """MSE of the semantic head's prediction [B, D, T_decoder] against the tokenizer's frames, when both exist."""
    if "semantic_pred" not in out or "semantic_frames" not in batch:
        return None
    pred = out["semantic_pred"]
    return F.mse_loss(pred, batch["semantic_frames"].transpose(1, 2)[..., :pred.shape[-1]])


@torch.no_grad()
def evaluate(run: CodecRun, dataset: CodecCrops, clips: int, batch_size: int) -> dict[str, float]:
    """Held-out losses of the EMA generator (the online one without EMA) on fixed crops (clip i, crop seed i), and
    how many acoustic codes those crops use."""
    model = run.ema.model if run.ema is not None else run.accelerator.unwrap_model(run.generator)
    was_training, device = model.training, run.accelerator.device
    model.eval()  # no dead-code revival
    keys = [(i, i) for i in range(min(clips, len(dataset)))]
    totals, codes = {"mel": 0.0, "vq": 0.0}, set()
    for start in range(0, len(keys), batch_size):
        batch = {k: v.to(device) for k, v in collate([dataset[key] for key in keys[start: start + batch_size]]).items()}
        out, n = model(batch["wav"], batch["semantic"], acoustic_ids=batch.get("acoustic")), len(batch["wav"])
        totals["mel"] += run.mel(out["recon"], batch["wav"]).item() * n
        totals["vq"] += out["vq_loss"].mean().item() * n
        semantic = semantic_loss(out, batch)
        if semantic is not None:
            totals["semantic"] = totals.get("semantic", 0.0) + semantic.item() * n
        codes.update(out["acoustic_ids"].unique().tolist())
    if was_training:  # the online generator, whose frozen modules stay in eval mode
        set_train_mode(run)
    return {**{f"eval/{k}": v / len(keys) for k, v in totals.items()}, "eval/codes_used": len(codes)}


def save_checkpoint(run: CodecRun, folder: Path, step: int, keep_last: int | None) -> None:
    """folder/: the generator (a SAC model folder), ema/, discriminator.safetensors and train_state.pt, written
    to folder.tmp then renamed, so a folder with train_state.pt is complete."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    acc.unwrap_model(run.generator).save_pretrained(tmp)
    if run.ema is not None:
        run.ema.model.save_pretrained(tmp / "ema")
    if run.semantic_tokenizer is not None:
        for model_folder in (tmp, tmp / "ema") if run.ema is not None else (tmp,):
            shutil.copytree(run.semantic_tokenizer, model_folder / "semantic_tokenizer")
    save_model(acc.unwrap_model(run.discriminator), str(tmp / "discriminator.safetensors"))
    if keep_last is not None:  # a final folder needs no optimizer state
        torch.save({"step": step, "ema_step": run.ema.step if run.ema else 0,
                    **{k: getattr(run, k).state_dict() for k in ("g_opt", "d_opt", "g_sched", "d_sched")}},
                   tmp / "train_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    if keep_last:
        done = sorted((int(m.group(1)), p) for p in folder.parent.iterdir() if (m := STEP_DIR.fullmatch(p.name)))
        for _, old in done[:-keep_last]:
            shutil.rmtree(old)


def load_checkpoint(run: CodecRun, folder: Path) -> int:
    acc = run.accelerator
    load_model(acc.unwrap_model(run.generator), str(folder / "model.safetensors"), strict=True)
    load_model(acc.unwrap_model(run.discriminator), str(folder / "discriminator.safetensors"), strict=True)
    state = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)
    for k in ("g_opt", "d_opt", "g_sched", "d_sched"):
        getattr(run, k).load_state_dict(state[k])
    if run.ema is not None:
        load_model(run.ema.model, str(folder / "ema" / "model.safetensors"), strict=True)
        run.ema.step = state["ema_step"]
    return state["step"]


def build_run(model_config: dict, train: CodecTrainConfig, output_dir: Path,
              semantic_tokenizer: str | None = None) -> CodecRun:
    acc = make_accelerator(train, output_dir)
    torch.manual_seed(train.seed)
    model_config = dict(model_config)
    # the model section may size the discriminator too (tiny configs); the rest is SACConfig's
    discriminator = Discriminator(**model_config.pop("discriminator", {}))
    generator = SAC(SACConfig(**model_config))
    for name in train.freeze:
        submodule(generator, name).requires_grad_(False)
    # every trained parameter decays (AdamW's 0.01), as the release does: no norm/bias exclusion group
    trained = [p for p in generator.parameters() if p.requires_grad]
    g_opt = torch.optim.AdamW(trained, train.lr, train.betas, weight_decay=train.weight_decay)
    d_opt = torch.optim.AdamW(discriminator.parameters(), train.lr, train.betas, weight_decay=train.weight_decay)
    g_sched, d_sched = exponential_lr(g_opt, train), exponential_lr(d_opt, train)
    ema = EMA(generator, train.ema_beta, train.ema_update_after_step, train.ema_update_every,
              train.ema_power) if acc.is_main_process else None
    generator, discriminator, g_opt, d_opt = acc.prepare(generator, discriminator, g_opt, d_opt)
    return CodecRun(acc, generator, discriminator, g_opt, d_opt, g_sched, d_sched,
                    MultiScaleMelLoss(generator_sample_rate(model_config)).to(acc.device), ema, train,
                    Path(semantic_tokenizer) if semantic_tokenizer else None)


def submodule(generator: SAC, name: str) -> nn.Module:
    children = dict(generator.named_children())
    if name not in children:
        raise ValueError(f"train.freeze names {name!r}, which this codec does not have; its modules: "
                         f"{', '.join(children)}")
    return children[name]


def set_train_mode(run: CodecRun) -> None:
    run.generator.train(), run.discriminator.train()
    for name in run.train.freeze:
        submodule(run.accelerator.unwrap_model(run.generator), name).eval()


def start_weights(run: CodecRun, train: CodecTrainConfig, data: DataConfig) -> None:
    """A fresh run's generator: `init_from`'s weights when given; the semantic codebook is the tokenizer's, as in
    SAC (the codec embeds the tokenizer's ids with the tokenizer's own VQ codebook, frozen)."""
    generator = run.accelerator.unwrap_model(run.generator)
    if train.init_from:
        load_init(generator, Path(train.init_from), train.init_skip)
    if data.semantic_tokenizer:
        codebook = SemanticTokenizer.from_pretrained(data.semantic_tokenizer).codebook.weight
        target = generator.semantic_encoder.codebook.weight
        if codebook.shape != target.shape:
            raise ValueError(f"the tokenizer {data.semantic_tokenizer} has a {tuple(codebook.shape)} codebook but the "
                             f"codec config expects {tuple(target.shape)}: set model.semantic_vocab_size and "
                             "model.semantic_dim to the tokenizer's quantize_vocab_size and d_model")
        with torch.no_grad():
            target.copy_(codebook)
    if run.ema is not None:
        run.ema.model.load_state_dict(generator.state_dict())


def load_init(generator: SAC, folder: Path, skip: list[str]) -> None:
    """A SAC folder's weights into the generator, strictly, except the modules named in `skip`: they keep their fresh
    init (a new decoder on a trained encoder, say), and the folder's tensors for them are ignored."""
    state = read_weights(folder)
    if not skip:
        load_state_dict_strict(generator, state, folder)
        return
    prefixes = tuple(f"{name}." for name in skip)
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    expected = {k for k in generator.state_dict() if not k.startswith(prefixes)}
    if state.keys() != expected:
        raise ValueError(f"{folder} does not match this model outside {skip}: missing "
                         f"{sorted(expected - state.keys())[:5]}, unexpected {sorted(state.keys() - expected)[:5]}")
    generator.load_state_dict(state, strict=False)  # strict=False only for the skipped modules, checked above


def check_semantic_codebook(generator: SAC, tokenizer: str, checkpoint: str) -> None:
    if not torch.equal(generator.semantic_encoder.codebook.weight.cpu(),
                       SemanticTokenizer.from_pretrained(tokenizer).codebook.weight):
        raise ValueError(f"{checkpoint} was trained with another semantic codebook than the tokenizer {tokenizer}'s; "
                         "resume with the tokenizer it was started with")


def check_acoustic_ids(generator: SAC, dataset: CodecCrops, crops: int = 4) -> None:
    """Refuse a token folder whose acoustic ids this codec's encoder does not make. A crop's edge frames differ
    from whole-clip encoding (the encoder sees past the crop there), so this compares the share that agree."""
    model = generator.eval()
    for folder, items in dataset.folders:
        agree, total, checked = 0, 0, min(crops, len(items))
        for i in range(checked):
            example = dataset[(items[i * len(items) // checked], i)]
            ids = model.encode_acoustic(example["wav"][None].to(model.device))[0].cpu()  # [S·a]
            agree, total = agree + int((ids == example["acoustic"]).sum()), total + ids.numel()
        if agree < total / 2:
            raise ValueError(f"only {agree} of {total} acoustic ids in {folder} match what this codec's acoustic "
                             "encoder makes of the same audio: the folder was tokenized with another codec. Start "
                             "from that codec (train.init_from), or tokenize the corpus again with this one")


def generator_sample_rate(model_config: dict) -> int:
    return int(model_config.get("sample_rate", 16000))


def main(argv: list[str] | None = None, on_step: Callable[[int, dict], None] | None = None) -> Path:
    """Train from a config; returns the output folder (final/ holds the generator, final/ema the EMA weights)."""
    args = parse_args(argv, "Train the SAC codec", DataConfig, CodecTrainConfig)
    model_config, data, train = load_config(args, DataConfig, CodecTrainConfig)
    output_dir = Path(train.output_dir or Path("runs") / args.config.stem)
    output_dir.mkdir(parents=True, exist_ok=True)
    # before anything is built or written; save_checkpoint writes train_state.pt into folder.tmp before the rename
    resume = find_resume(args.resume, output_dir / "checkpoints", "train_state.pt", "codec training checkpoint")
    run = build_run(model_config, train, output_dir, data.semantic_tokenizer)
    acc = run.accelerator
    step = load_checkpoint(run, resume) if resume else 0
    if not resume:
        start_weights(run, train, data)
    elif data.semantic_tokenizer:
        check_semantic_codebook(acc.unwrap_model(run.generator), data.semantic_tokenizer, str(resume))
    if acc.is_main_process:
        (output_dir / "train_config.json").write_text(json.dumps(
            {"model": model_config, "data": asdict(data), "train": asdict(train)}, indent=2) + "\n")
    dataset = CodecCrops(data, generator_sample_rate(model_config))
    held_out = data.held_out()
    eval_set = CodecCrops(held_out, generator_sample_rate(model_config)) if held_out else None
    if data.acoustic_from_tokens:
        if not {"acoustic_encoder", "acoustic_quantizer"} <= set(train.freeze):
            raise ValueError("data.acoustic_from_tokens decodes the token folder's acoustic ids, which stay valid only "
                             "if the acoustic side does not train: add acoustic_encoder and acoustic_quantizer to "
                             "train.freeze")
        for crops in (dataset, eval_set) if eval_set is not None else (dataset,):
            check_acoustic_ids(acc.unwrap_model(run.generator), crops)
    loader = DataLoader(dataset, batch_sampler=StepBatches(len(dataset), data.batch_size, train.seed, step,
                                                           acc.process_index),
                        collate_fn=collate, num_workers=data.num_workers)
    set_train_mode(run)
    since, steps_since = time.perf_counter(), 0  # wall time per step (all included) since the last log line
    deadline = time.monotonic() + 60 * train.max_minutes if train.max_minutes else None
    for batch in loader:
        if step >= train.max_steps:
            break
        step, steps_since = step + 1, steps_since + 1
        stats = train_step(run, {k: v.to(acc.device) for k, v in batch.items()}, step)
        if acc.is_main_process and (step % train.log_every == 0 or step == train.max_steps):
            stats["s_per_step"] = (time.perf_counter() - since) / steps_since
            with (output_dir / "log.jsonl").open("a") as lines:
                lines.write(json.dumps({"step": step, **stats}) + "\n")
            acc.print(f"step {step:>7}/{train.max_steps}  " + "  ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            since, steps_since = time.perf_counter(), 0
        out_of_time = deadline is not None and step % train.log_every == 0 and past(acc, deadline)
        if step % train.save_every == 0 or step == train.max_steps or out_of_time:
            save_checkpoint(run, output_dir / "checkpoints" / f"step_{step:06d}", step, train.keep_last)
            if eval_set is not None and acc.is_main_process:
                scores = evaluate(run, eval_set, data.eval_clips, data.batch_size)
                with (output_dir / "log.jsonl").open("a") as lines:
                    lines.write(json.dumps({"step": step, **scores}) + "\n")
                acc.print(f"eval {step:>7}  " + "  ".join(f"{k[5:]} {v:.4g}" for k, v in scores.items()))
        if on_step is not None:
            on_step(step, stats)
        if out_of_time:
            acc.print(f"the {train.max_minutes:g}-minute budget ran out at step {step}: checkpointed; continue with "
                      "--resume auto")
            break
    save_checkpoint(run, output_dir / "final", step, None)
    acc.end_training()
    return output_dir


if __name__ == "__main__":
    main()
