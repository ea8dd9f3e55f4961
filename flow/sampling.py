"""Iterative unmasking (MaskGIT) with classifier-free guidance, prompt infilling and windows for long targets.

Each step predicts every still-masked target frame, keeps the most confident predictions and re-masks the rest,
following a cosine schedule, so after N steps every frame is fixed. The prompt's frames are given and never change.
The unconditional pass for guidance sees the target alone (no voice prompt), as the model saw it in training when
the prompt was dropped. Targets longer than the context are generated window by window: each window sees the
prompt, the last committed frames (so the next frames continue them: no seam) and a look-ahead it does not commit.

Given the codec's code vectors, a frame's output is not its sampled id but the code nearest the mean code vector of
the distribution it was committed from. The sampled ids still condition the later steps of its window; later
windows re-read the output. With tens of plausible ids per frame a sampled id is a noisy pick, and the decoder,
which reads code vectors, speaks the mean more clearly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .model import AcousticFlow


@dataclass
class FlowSamplingConfig:
    steps: int = 12
    temperature: float = 1.0  # token sampling temperature; 0 = argmax
    top_k: int = 0  # 0 = full distribution
    choice_temperature: float = 4.5  # Gumbel noise on confidences, annealed to 0 (MaskGIT)
    cfg_scale: float = 2.0  # 1 = conditional pass only
    window_frames: int | None = None  # committed frames per window (default: fits the model context)
    lookahead_frames: int = 50
    context_frames: int = 100  # committed frames re-read by the next window

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 64 or self.temperature < 0 or self.cfg_scale < 0 or self.top_k < 0:
            raise ValueError(f"invalid flow sampling settings: steps {self.steps} (1..64), temperature "
                             f"{self.temperature}, cfg_scale {self.cfg_scale}, top_k {self.top_k} (all >= 0)")


@dataclass
class FlowRequest:
    """Target semantic ids [Ts] plus the voice prompt's acoustic [k·Tp] and semantic [Tp] ids."""

    semantic: torch.Tensor
    prompt_acoustic: torch.Tensor
    prompt_semantic: torch.Tensor


def _stack(rows: Sequence[torch.Tensor], fill: int, device: torch.device) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _guided_logits(model: AcousticFlow, acoustic: torch.Tensor, semantic: torch.Tensor, valid: torch.Tensor,
                   prompts: list[int], lengths: list[int], sampling: FlowSamplingConfig) -> torch.Tensor:
    """Logits [B, T, V] over [prompt | target] sequences; target frames guided towards the prompt's voice."""
    logits = model(acoustic, semantic, valid)
    if sampling.cfg_scale == 1.0:
        return logits
    k, device = model.config.acoustic_per_semantic, acoustic.device
    target_acoustic = _stack([acoustic[i, p: p + n] for i, (p, n) in enumerate(zip(prompts, lengths))],
                             model.config.mask_id, device)
    target_semantic = _stack([semantic[i, p // k: (p + n) // k] for i, (p, n) in enumerate(zip(prompts, lengths))],
                             0, device)
    target_lengths = torch.tensor(lengths, device=device)[:, None]
    target_valid = torch.arange(target_acoustic.shape[1], device=device)[None] < target_lengths
    unconditional = model(target_acoustic, target_semantic, target_valid)  # the same frames without the prompt
    guided = logits.clone()
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        guided[i, p: p + n] = unconditional[i, :n] + sampling.cfg_scale * (logits[i, p: p + n] - unconditional[i, :n])
    return guided


def _sample(logits: torch.Tensor, sampling: FlowSamplingConfig, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V] -> (sampled ids [N], their log-probabilities [N]).

    Gumbel-max (argmax of logits/τ + Gumbel noise) draws from softmax(logits/τ) exactly and, unlike
    torch.multinomial over a 16384-way vocabulary, is one vectorised pass.
    """
    logits = logits.float()
    log_probs = logits.log_softmax(-1)
    if sampling.temperature == 0:
        ids = logits.argmax(-1)
    else:
        scaled = logits / sampling.temperature
        if sampling.top_k:
            kth = scaled.topk(sampling.top_k, dim=-1).values[..., -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        uniform = torch.rand(scaled.shape, device=scaled.device, generator=generator).clamp_(1e-20, 1.0)
        ids = (scaled - torch.log(-torch.log(uniform))).argmax(-1)
    return ids, log_probs.gather(-1, ids[..., None]).squeeze(-1)


def mean_codes(logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """logits [N, V], codebook [V, d] -> ids [N]: the code nearest (L2) the mean code vector under softmax(logits)."""
    mean = logits.float().softmax(-1) @ codebook  # [N, d]
    return torch.cdist(mean, codebook).argmin(-1)


def check_codebook(model: AcousticFlow, codebook: torch.Tensor | None) -> None:
    if codebook is not None and (codebook.dim() != 2 or codebook.shape[0] != model.config.acoustic_vocab_size):
        raise ValueError(f"codebook must be [acoustic_vocab_size={model.config.acoustic_vocab_size}, code_dim], got "
                         f"shape {tuple(codebook.shape)}: pass the codec's acoustic codebook that this model predicts")


@torch.inference_mode()
def fill(model: AcousticFlow, requests: Sequence[FlowRequest], sampling: FlowSamplingConfig,
         generator: torch.Generator, codebook: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One window per request, all in one batch: the full [prompt | target] acoustic ids of each request.

    Only target frames are ever masked or written; the prompt frames come back as they went in. With `codebook`
    [V, d] each target frame's id is its mean code's nearest (`mean_codes`), else the sampled one.
    """
    device, k, mask_id = model.device, model.config.acoustic_per_semantic, model.config.mask_id
    prompts = [len(r.prompt_acoustic) for r in requests]
    lengths = [len(r.semantic) * k for r in requests]
    acoustic = _stack([torch.cat([r.prompt_acoustic, torch.full((n,), mask_id)]) for r, n in zip(requests, lengths)],
                      mask_id, device)  # [B, T]
    semantic = _stack([torch.cat([r.prompt_semantic, r.semantic]) for r in requests], 0, device)  # [B, T / k]
    positions = torch.arange(acoustic.shape[1], device=device)[None]
    start = torch.tensor(prompts, device=device)[:, None]
    target_frames = torch.tensor(lengths, device=device)
    valid = positions < start + target_frames[:, None]
    generable = valid & (positions >= start)
    out = acoustic.clone()
    for step in range(sampling.steps):
        masked = (acoustic == mask_id) & generable
        logits = _guided_logits(model, acoustic, semantic, valid, prompts, lengths, sampling)
        ids, confidence = torch.zeros_like(acoustic), torch.zeros(acoustic.shape, device=device)
        ids[masked], confidence[masked] = _sample(logits[masked], sampling, generator)  # only frames still open
        progress = (step + 1) / sampling.steps
        # Frames each row keeps masked after this step: the cosine schedule, always making progress.
        remaining = torch.floor(target_frames * math.cos(math.pi / 2 * progress)).long()
        remaining = torch.minimum(remaining, (masked.sum(1) - 1).clamp(min=0))
        noise = -torch.log(-torch.log(torch.rand(acoustic.shape, device=device, generator=generator).clamp(1e-20, 1)))
        confidence = confidence + sampling.choice_temperature * (1 - progress) * noise
        confidence = confidence.masked_fill(~masked, float("inf"))  # prompt, fixed and padding frames stay
        acoustic = torch.where(masked, ids, acoustic)
        rank = confidence.argsort(dim=1).argsort(dim=1)  # 0 = least confident
        acoustic = torch.where(rank < remaining[:, None], torch.full_like(acoustic, mask_id), acoustic)
        committed = masked & (acoustic != mask_id)
        out[committed] = acoustic[committed] if codebook is None else mean_codes(logits[committed], codebook)
    return [out[i, : p + n].cpu() for i, (p, n) in enumerate(zip(prompts, lengths))]


def check_request(model: AcousticFlow, request: FlowRequest) -> None:
    k = model.config.acoustic_per_semantic
    if request.semantic.dim() != 1 or len(request.semantic) == 0:
        raise ValueError("target semantic ids must be a non-empty 1-D tensor, got shape "
                         f"{tuple(request.semantic.shape)}")
    if request.prompt_acoustic.dim() != 1 or request.prompt_semantic.dim() != 1:
        raise ValueError("prompt acoustic and semantic ids must be 1-D tensors")
    if len(request.prompt_acoustic) != k * len(request.prompt_semantic):
        raise ValueError(f"the prompt needs exactly {k} acoustic tokens per semantic token: got "
                         f"{len(request.prompt_acoustic)} acoustic for {len(request.prompt_semantic)} semantic")
    if len(request.prompt_acoustic) and int(request.prompt_acoustic.max()) >= model.config.acoustic_vocab_size:
        raise ValueError(f"prompt acoustic ids must lie in [0, {model.config.acoustic_vocab_size - 1}]")
    semantic = torch.cat([request.prompt_semantic, request.semantic])
    model.check_inputs(torch.zeros(1, k * len(semantic), dtype=torch.long), semantic[None].long())


def _window_sizes(model: AcousticFlow, request: FlowRequest, sampling: FlowSamplingConfig) -> tuple[int, int, int, int]:
    """(prompt, context, window, look-ahead) sizes in semantic tokens for a target too long for one pass."""
    k, budget = model.config.acoustic_per_semantic, model.config.max_frames // model.config.acoustic_per_semantic
    context, lookahead = sampling.context_frames // k, sampling.lookahead_frames // k
    prompt = min(len(request.prompt_semantic), budget // 3)
    window = sampling.window_frames // k if sampling.window_frames else budget - prompt - context - lookahead
    if window < 1 or prompt + context + window + lookahead > budget:
        raise ValueError(f"window settings (context {context}, window {window}, look-ahead {lookahead} semantic "
                         f"tokens, prompt {prompt}) do not fit the model context of {budget} semantic tokens")
    return prompt, context, window, lookahead


def fill_window(model: AcousticFlow, semantic: torch.Tensor, committed: torch.Tensor, span: tuple[int, int, int],
                context: int, prompt: tuple[torch.Tensor, torch.Tensor], sampling: FlowSamplingConfig,
                generator: torch.Generator, codebook: torch.Tensor | None = None) -> torch.Tensor:
    """One window of a long or streamed target: acoustic ids [(end - start)·k] for semantic[start:end].

    semantic [T] the target's ids so far; committed [start·k] the acoustic ids already chosen before `start`, of which
    the last `context` semantic tokens' worth condition this window; span (start, end, ahead): semantic[end:ahead] is
    look-ahead, filled but not returned; prompt (semantic [P], acoustic [P·k]) the voice prompt's tail.
    """
    start, end, ahead = span
    k, back = model.config.acoustic_per_semantic, max(0, start - context)
    prompt_semantic, prompt_acoustic = prompt
    request = FlowRequest(semantic[start:ahead], torch.cat([prompt_acoustic, committed[back * k:]]),
                          torch.cat([prompt_semantic, semantic[back:start]]))
    frames = fill(model, [request], sampling, generator, codebook)[0]  # [k·(prompt + context + window + look-ahead)]
    return frames[len(request.prompt_acoustic):][: (end - start) * k]


def _generate_windowed(model: AcousticFlow, request: FlowRequest, sampling: FlowSamplingConfig,
                       generator: torch.Generator, codebook: torch.Tensor | None) -> torch.Tensor:
    k = model.config.acoustic_per_semantic
    prompt, context, window, lookahead = _window_sizes(model, request, sampling)
    voice = (request.prompt_semantic[len(request.prompt_semantic) - prompt:],
             request.prompt_acoustic[len(request.prompt_acoustic) - prompt * k:])
    semantic, committed = request.semantic, request.prompt_acoustic.new_zeros(0)
    for start in range(0, len(semantic), window):
        span = (start, min(len(semantic), start + window), min(len(semantic), start + window + lookahead))
        committed = torch.cat([committed, fill_window(model, semantic, committed, span, context, voice, sampling,
                                                      generator, codebook)])
    return committed


def generate(model: AcousticFlow, requests: Sequence[FlowRequest], sampling: FlowSamplingConfig = FlowSamplingConfig(),
             seed: int | None = None, codebook: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Acoustic ids [k·Ts] for each request (CPU int64). Randomness comes only from `seed`.

    codebook [V, d]: the codec's acoustic code vectors; given, each frame gets the code nearest its predicted mean
    code (`fill`) instead of a sampled id.
    """
    if not requests:
        raise ValueError("no requests to generate")
    requests = [FlowRequest(r.semantic.long().cpu(), r.prompt_acoustic.long().cpu(), r.prompt_semantic.long().cpu())
                for r in requests]
    for request in requests:
        check_request(model, request)
    check_codebook(model, codebook)
    codebook = None if codebook is None else codebook.to(model.device, torch.float32)
    generator = torch.Generator(device=model.device)
    generator.manual_seed(seed if seed is not None else random.SystemRandom().randrange(2**63))
    k = model.config.acoustic_per_semantic
    fits = [i for i, r in enumerate(requests)
            if k * (len(r.semantic) + len(r.prompt_semantic)) <= model.config.max_frames]
    out: list[torch.Tensor | None] = [None] * len(requests)
    if fits:
        for i, ids in zip(fits, fill(model, [requests[i] for i in fits], sampling, generator, codebook)):
            out[i] = ids[len(requests[i].prompt_acoustic):]
    for i, request in enumerate(requests):
        if out[i] is None:
            out[i] = _generate_windowed(model, request, sampling, generator, codebook)
    return out  # type: ignore[return-value]
