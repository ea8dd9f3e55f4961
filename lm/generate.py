"""KV-cache generation of semantic tokens: batched, seeded, streamable, with runaway guards.

Sampling follows CosyVoice: top-k / top-p nucleus sampling with repetition-aware sampling (RAS): if the sampled
token already fills `ras_threshold` of the last `ras_window` tokens, it is redrawn from the full distribution,
which breaks the loops AR speech LMs fall into. A repetition penalty is available too. Every row is confined to
semantic tokens + <eos>, and its length to [min, max] semantic tokens derived from its text length.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .config import EOS_ID
from .model import SemanticLM, pad_batch


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 25  # 0 = no top-k
    top_p: float = 0.8  # 1 = no nucleus cut
    repetition_penalty: float = 1.0  # 1 = off
    ras_window: int = 10
    ras_threshold: float = 0.1  # fraction of the window; 0 = RAS off
    min_tokens_per_text_token: float = 1.0  # 12.5 Hz tokens per BPE text token, lower bound
    max_tokens_per_text_token: float = 15.0  # upper bound: a runaway generation is cut here
    max_new_tokens: int | None = None  # absolute cap on top of the ratio

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid sampling settings: temperature {self.temperature} (>= 0), top_p "
                             f"{self.top_p} (0, 1], top_k {self.top_k} (>= 0), repetition_penalty "
                             f"{self.repetition_penalty} (> 0)")
        if not 0 <= self.min_tokens_per_text_token <= self.max_tokens_per_text_token:
            raise ValueError("need 0 <= min_tokens_per_text_token <= max_tokens_per_text_token")


@dataclass
class Request:
    """One utterance to continue: target text ids plus an optional voice prompt (text ids + semantic ids)."""

    text_ids: Sequence[int]
    prompt_text_ids: Sequence[int] = ()
    prompt_semantic_ids: Sequence[int] = ()


def _length_bounds(lm: SemanticLM, request: Request, prefix_len: int, sampling: SamplingConfig) -> tuple[int, int]:
    n_text = len(request.text_ids)
    low = math.ceil(n_text * sampling.min_tokens_per_text_token)
    high = max(low + 1, math.floor(n_text * sampling.max_tokens_per_text_token))
    if sampling.max_new_tokens is not None:
        high = min(high, sampling.max_new_tokens)
    room = lm.config.max_position_embeddings - prefix_len - 1  # keep a slot for <eos>
    if room < 1:
        raise ValueError(f"prompt + text take {prefix_len} tokens: no room left to speak within "
                         f"max_position_embeddings {lm.config.max_position_embeddings}; shorten the prompt or text")
    return min(low, room), min(high, room)


def _sample_row(logits: torch.Tensor, history: list[int], sampling: SamplingConfig,
                generator: torch.Generator) -> int:
    """logits [V] (already restricted) -> one token id."""
    if sampling.repetition_penalty != 1.0 and history:
        seen = torch.tensor(sorted(set(history)), device=logits.device)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / sampling.repetition_penalty,
                                   values * sampling.repetition_penalty)
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    sorted_probs, order = probs.sort(descending=True)
    keep = sorted_probs.cumsum(0) - sorted_probs < sampling.top_p  # smallest set reaching top_p
    if sampling.top_k:
        keep[sampling.top_k:] = False
    keep[0] = True
    nucleus = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    token = int(order[torch.multinomial(nucleus, 1, generator=generator)])
    window = history[-sampling.ras_window:] if sampling.ras_window else []
    if sampling.ras_threshold > 0 and window and window.count(token) >= sampling.ras_window * sampling.ras_threshold:
        token = int(torch.multinomial(probs, 1, generator=generator))
    return token


@torch.inference_mode()
def decode_steps(lm: SemanticLM, requests: Sequence[Request], sampling: SamplingConfig = SamplingConfig(),
                 seed: int | None = None, use_cache: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (tokens [B] in model vocabulary, active [B] bool) once per step until every row has ended.

    `active[i]` is False for rows that ended before this step (their token is meaningless); a row ends on <eos>.
    """
    if not requests:
        raise ValueError("no requests to generate")
    device, cfg = lm.device, lm.config
    prefixes = [lm.build_prefix(r.text_ids, r.prompt_text_ids, r.prompt_semantic_ids) for r in requests]
    bounds = [_length_bounds(lm, r, len(p), sampling) for r, p in zip(requests, prefixes)]
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else random.SystemRandom().randrange(2**63))

    ids, mask = (t.to(device) for t in pad_batch(prefixes, left=True))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    if use_cache:
        from transformers import DynamicCache

        cache = DynamicCache()
    out = lm(ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=use_cache,
             logits_to_keep=1)
    allowed = torch.full((cfg.vocab_size,), float("-inf"), device=device)
    allowed[cfg.semantic_offset:] = 0.0
    allowed[EOS_ID] = 0.0
    histories: list[list[int]] = [[] for _ in requests]
    active = torch.ones(len(requests), dtype=torch.bool, device=device)
    while bool(active.any()):
        logits = out.logits[:, -1].float() + allowed  # [B, V]
        tokens = torch.full((len(requests),), EOS_ID, dtype=torch.long, device=device)
        for i in active.nonzero().flatten().tolist():
            low, high = bounds[i]
            row = logits[i].clone()
            if len(histories[i]) < low:
                row[EOS_ID] = float("-inf")
            if len(histories[i]) >= high:
                tokens[i] = EOS_ID
                continue
            tokens[i] = _sample_row(row, histories[i], sampling, generator)
        yield tokens, active.clone()
        for i in active.nonzero().flatten().tolist():
            histories[i].append(int(tokens[i]))
        active &= tokens != EOS_ID
        if not bool(active.any()):
            return
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        if use_cache:
            out = lm(tokens[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache,
                     use_cache=True, logits_to_keep=1)
        else:  # the reference path: recompute the whole sequence every step
            ids = torch.cat([ids, tokens[:, None]], dim=1)
            out = lm(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1)


def generate(lm: SemanticLM, requests: Sequence[Request], sampling: SamplingConfig = SamplingConfig(),
             seed: int | None = None, use_cache: bool = True) -> list[list[int]]:
    """Semantic ids (codec vocabulary, without <eos>) for each request."""
    results: list[list[int]] = [[] for _ in requests]
    for tokens, active in decode_steps(lm, requests, sampling, seed, use_cache):
        for i in active.nonzero().flatten().tolist():
            if int(tokens[i]) != EOS_ID:
                results[i].append(int(tokens[i]) - lm.config.semantic_offset)
    return results


def stream(lm: SemanticLM, request: Request, sampling: SamplingConfig = SamplingConfig(),
           seed: int | None = None) -> Iterator[int]:
    """Yield one request's semantic ids (codec vocabulary) as soon as each is sampled."""
    for tokens, _ in decode_steps(lm, [request], sampling, seed):
        if int(tokens[0]) == EOS_ID:
            return
        yield int(tokens[0]) - lm.config.semantic_offset
