"""KV-cache generation of semantic tokens: batched, seeded, streamable, with runaway guards.

Sampling follows CosyVoice: top-k / top-p nucleus sampling with repetition-aware sampling (RAS): if the sampled
token already fills `ras_threshold` of the last `ras_window` tokens, it is redrawn from the full distribution,
which breaks the loops AR speech LMs fall into. A repetition penalty is available too. Every row is confined to
semantic tokens + <eos>, and its length to [min, max] semantic tokens derived from its text length. With a voice
prompt the minimum can also follow the prompt's pace (semantic tokens per text token), as F5-TTS derives its whole
duration from it, against an early <eos> that drops a sentence's last words.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
    # lower bound as a fraction of the length the prompt's pace predicts (its semantic per text tokens x the text
    # tokens); on held-out synthetic voices 95 % of same-speaker recording pairs measure >= 0.76 of it; 0 = off
    min_length_vs_prompt: float = 0.0
    # upper bound as a multiple of that length: far slower than the prompt is babble or silence; 0 = off
    max_length_vs_prompt: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"invalid sampling settings: temperature {self.temperature} (>= 0), top_p "
                             f"{self.top_p} (0, 1], top_k {self.top_k} (>= 0), repetition_penalty "
                             f"{self.repetition_penalty} (> 0)")
        if not 0 <= self.min_tokens_per_text_token <= self.max_tokens_per_text_token:
            raise ValueError("need 0 <= min_tokens_per_text_token <= max_tokens_per_text_token")
        if not 0 <= self.min_length_vs_prompt <= 2:
            raise ValueError(f"min_length_vs_prompt must lie in [0, 2], got {self.min_length_vs_prompt}")
        if self.max_length_vs_prompt < 0:
            raise ValueError(f"max_length_vs_prompt must be >= 0 (0 = off), got {self.max_length_vs_prompt}")


@dataclass
class Request:
    """One utterance to continue: target text ids plus an optional voice prompt (text ids + semantic ids)."""

    text_ids: Sequence[int]
    prompt_text_ids: Sequence[int] = ()
    prompt_semantic_ids: Sequence[int] = ()


def length_bounds(request: Request, sampling: SamplingConfig) -> tuple[int, int]:
    """(min, max) semantic tokens the request may generate, before the model's context limits them."""
    n_text = len(request.text_ids)
    low = math.ceil(n_text * sampling.min_tokens_per_text_token)
    high = max(low + 1, math.floor(n_text * sampling.max_tokens_per_text_token))
    if request.prompt_text_ids and request.prompt_semantic_ids:
        pace = len(request.prompt_semantic_ids) / len(request.prompt_text_ids)  # semantic tokens per text token
        low = max(low, min(high - 1, math.ceil(sampling.min_length_vs_prompt * pace * n_text)))
        if sampling.max_length_vs_prompt > 0:
            high = min(high, max(low + 1, math.ceil(sampling.max_length_vs_prompt * pace * n_text)))
    if sampling.max_new_tokens is not None:
        high = min(high, sampling.max_new_tokens)
    return low, high


def _length_bounds(lm: SemanticLM, request: Request, prefix_len: int, sampling: SamplingConfig) -> tuple[int, int]:
    low, high = length_bounds(request, sampling)
    room = lm.config.max_position_embeddings - prefix_len - 1  # keep a slot for <eos>
    if room < 1:
        raise ValueError(f"prompt + text take {prefix_len} tokens: no room left to speak within "
                         f"max_position_embeddings {lm.config.max_position_embeddings}; shorten the prompt or text")
    return min(low, room), min(high, room)


def sample_next(logits: torch.Tensor, history: torch.Tensor, sampling: SamplingConfig,
                generator: torch.Generator) -> torch.Tensor:
    """logits [B, V] (already restricted), history [B, t] of earlier tokens -> next tokens [B]."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0 and history.shape[1]:
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, history, True)
        penalised = torch.where(logits > 0, logits / sampling.repetition_penalty, logits * sampling.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p  # the smallest set reaching top_p
    if sampling.top_k:
        keep[:, sampling.top_k:] = False
    keep[:, 0] = True
    nucleus = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
    tokens = order.gather(1, torch.multinomial(nucleus, 1, generator=generator)).squeeze(1)
    if sampling.ras_threshold > 0 and sampling.ras_window and history.shape[1]:
        repeats = (history[:, -sampling.ras_window:] == tokens[:, None]).sum(1)
        looping = repeats >= sampling.ras_window * sampling.ras_threshold
        if bool(looping.any()):  # redraw from the full distribution (CosyVoice RAS)
            redrawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            tokens = torch.where(looping, redrawn, tokens)
    return tokens


def _make_cache(lm: SemanticLM, kind: str, batch_size: int, max_len: int):
    from transformers import DynamicCache, StaticCache

    if kind == "dynamic":
        return DynamicCache()
    if kind == "static":  # fixed shapes: what torch.compile / CUDA graphs need
        return StaticCache(config=lm.decoder.config, max_cache_len=max_len)
    raise ValueError(f"cache must be 'dynamic', 'static' or 'none', got {kind!r}")


@torch.inference_mode()
def decode_steps(lm: SemanticLM, requests: Sequence[Request], sampling: SamplingConfig = SamplingConfig(),
                 seed: int | None = None, cache: str = "dynamic", step_fn=None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (tokens [B] in model vocabulary, active [B] bool) once per step until every row has ended.

    `active[i]` is False for rows that ended before this step (their token is meaningless); a row ends on <eos>.
    `cache="none"` recomputes the whole sequence every step (the reference the cached paths must equal);
    `step_fn` replaces the one-token decoder call (e.g. a compiled one; see `fast_decoder`).
    """
    if not requests:
        raise ValueError("no requests to generate")
    device, cfg = lm.device, lm.config
    prefixes = [lm.build_prefix(r.text_ids, r.prompt_text_ids, r.prompt_semantic_ids) for r in requests]
    bounds = torch.tensor([_length_bounds(lm, r, len(p), sampling) for r, p in zip(requests, prefixes)],
                          device=device)  # [B, 2]: min and max semantic tokens
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else random.SystemRandom().randrange(2**63))

    ids, mask = (t.to(device) for t in pad_batch(prefixes, left=True))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kv = None if cache == "none" else _make_cache(lm, cache, len(requests), ids.shape[1] + int(bounds[:, 1].max()) + 1)
    out = lm(ids, attention_mask=mask, position_ids=positions, past_key_values=kv, use_cache=kv is not None,
             logits_to_keep=1)
    allowed = torch.full((cfg.vocab_size,), float("-inf"), device=device)
    allowed[cfg.semantic_offset:] = 0.0
    allowed[EOS_ID] = 0.0
    history = torch.empty(len(requests), 0, dtype=torch.long, device=device)
    active = torch.ones(len(requests), dtype=torch.bool, device=device)
    for step in range(int(bounds[:, 1].max()) + 1):
        logits = out.logits[:, -1].float() + allowed  # [B, V]
        logits[:, EOS_ID] = torch.where(step < bounds[:, 0], float("-inf"), logits[:, EOS_ID])
        tokens = sample_next(logits, history, sampling, generator)
        tokens = torch.where((step >= bounds[:, 1]) | ~active, EOS_ID, tokens)  # the runaway guard
        yield tokens, active.clone()
        history = torch.cat([history, tokens[:, None]], dim=1)
        active &= tokens != EOS_ID
        if not bool(active.any()):
            return
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        if kv is None:  # the reference path
            ids = torch.cat([ids, tokens[:, None]], dim=1)
            out = lm(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), logits_to_keep=1)
        elif step_fn is not None:
            out = step_fn(tokens[:, None], mask, positions, kv)
        else:
            out = lm(tokens[:, None], attention_mask=mask, position_ids=positions, past_key_values=kv,
                     use_cache=True, logits_to_keep=1)


def generate(lm: SemanticLM, requests: Sequence[Request], sampling: SamplingConfig = SamplingConfig(),
             seed: int | None = None, cache: str = "dynamic", step_fn=None) -> list[list[int]]:
    """Semantic ids (codec vocabulary, without <eos>) for each request."""
    results: list[list[int]] = [[] for _ in requests]
    for tokens, active in decode_steps(lm, requests, sampling, seed, cache, step_fn):
        for i in (active & (tokens != EOS_ID)).nonzero().flatten().tolist():
            results[i].append(int(tokens[i]) - lm.config.semantic_offset)
    return results


def stream(lm: SemanticLM, request: Request, sampling: SamplingConfig = SamplingConfig(),
           seed: int | None = None, cache: str = "dynamic", step_fn=None) -> Iterator[int]:
    """Yield one request's semantic ids (codec vocabulary) as soon as each is sampled."""
    for tokens, _ in decode_steps(lm, [request], sampling, seed, cache, step_fn):
        if int(tokens[0]) == EOS_ID:
            return
        yield int(tokens[0]) - lm.config.semantic_offset


def fast_decoder(lm: SemanticLM, compile: bool = True, mode: str = "reduce-overhead"):
    """A one-token step with fixed shapes for `cache="static"`, so torch.compile (CUDA graphs under
    "reduce-overhead") captures it once: the attention mask is padded to the cache length (future slots are
    masked anyway). The batch-1 latency path on GPU; on CPU the plain dynamic cache is the simple choice."""
    forward = torch.compile(lm.decoder, mode=mode, dynamic=False) if compile else lm.decoder

    def step(tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, kv) -> object:
        full_mask = torch.nn.functional.pad(mask, (0, kv.layers[0].max_cache_len - mask.shape[1]))
        return forward(input_ids=tokens, attention_mask=full_mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1, **{lm.cache_arg: kv})

    return step
