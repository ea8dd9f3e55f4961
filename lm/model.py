"""`SemanticLM`: a `transformers` decoder that continues text with 12.5 Hz semantic tokens.

Sequence layout (one example):

    <bos> prompt_text target_text <sep> prompt_semantic target_semantic <eos>
                                        '--------- prefix ends here ---'  '-- loss --'

Both texts come first so the model reads everything it must say before it speaks; the prompt's semantic tokens then
set voice and pace for the continuation (the CosyVoice / VALL-E continuation layout). The loss covers the target
semantic tokens and <eos> only.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from torch import nn

from .config import BOS_ID, EOS_ID, PAD_ID, SEP_ID, LMConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
IGNORE_INDEX = -100


def _checked(ids: Sequence[int], vocab: int, name: str) -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"{name} ids must lie in [0, {vocab - 1}], got {bad[:5]}")
    return ids


def build_prefix(config: LMConfig, text_ids: Sequence[int], prompt_text_ids: Sequence[int] = (),
                 prompt_semantic_ids: Sequence[int] = ()) -> list[int]:
    """Token ids (model vocabulary) of everything before the first generated semantic token."""
    target_text = _checked(text_ids, config.text_vocab_size, "text")
    if not target_text:
        raise ValueError("the target text is empty: there is nothing to say")
    text = _checked(prompt_text_ids, config.text_vocab_size, "prompt text") + target_text
    semantic = _checked(prompt_semantic_ids, config.semantic_vocab_size, "prompt semantic")
    return ([BOS_ID] + [t + config.text_offset for t in text] + [SEP_ID]
            + [s + config.semantic_offset for s in semantic])


def build_example(config: LMConfig, text_ids: Sequence[int], semantic_ids: Sequence[int],
                  prompt_text_ids: Sequence[int] = (), prompt_semantic_ids: Sequence[int] = ()
                  ) -> tuple[list[int], list[int]]:
    """A training example: (input_ids, labels), labels = IGNORE_INDEX outside the target speech."""
    prefix = build_prefix(config, text_ids, prompt_text_ids, prompt_semantic_ids)
    target = [s + config.semantic_offset
              for s in _checked(semantic_ids, config.semantic_vocab_size, "semantic")] + [EOS_ID]
    input_ids = prefix + target
    if len(input_ids) > config.max_position_embeddings:
        raise ValueError(f"example of {len(input_ids)} tokens exceeds max_position_embeddings "
                         f"{config.max_position_embeddings}")
    return input_ids, [IGNORE_INDEX] * len(prefix) + target


def default_attn_implementation(device: torch.device | str, dtype: torch.dtype) -> str:
    """flash-attn 2 when it is installed and usable (CUDA, half precision), else PyTorch SDPA."""
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


class SemanticLM(nn.Module):
    def __init__(self, config: LMConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.config = config
        self.decoder = AutoModelForCausalLM.from_config(config.to_hf_config(),
                                                        attn_implementation=attn_implementation)
        # The keyword the decoder takes its KV cache by: transformers 5.24 renamed `past_key_values` to `cache`
        # (the old name warns, and goes in 5.40); older releases know only `past_key_values`.
        params = inspect.signature(self.decoder.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---- sequences -----------------------------------------------------------------------------------------
    def build_prefix(self, text_ids: Sequence[int], prompt_text_ids: Sequence[int] = (),
                     prompt_semantic_ids: Sequence[int] = ()) -> list[int]:
        return build_prefix(self.config, text_ids, prompt_text_ids, prompt_semantic_ids)

    def build_example(self, text_ids: Sequence[int], semantic_ids: Sequence[int],
                      prompt_text_ids: Sequence[int] = (), prompt_semantic_ids: Sequence[int] = ()
                      ) -> tuple[list[int], list[int]]:
        return build_example(self.config, text_ids, semantic_ids, prompt_text_ids, prompt_semantic_ids)

    def to_semantic(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Model-vocabulary ids of semantic tokens -> codec semantic ids."""
        return token_ids - self.config.semantic_offset

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values=None, use_cache: bool = False,
                logits_to_keep: int = 0):
        """input_ids [B, T] -> transformers output with logits [B, T (or logits_to_keep), vocab]."""
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=use_cache, logits_to_keep=logits_to_keep, **{self.cache_arg: past_key_values})

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy over target tokens, number of target tokens): summing lets gradient
        accumulation weight every token equally whatever the micro-batch lengths. The output head runs only
        where a label is scored, so the prefix costs no [T, vocab] logits."""
        hidden = self.decoder.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        scored = targets != IGNORE_INDEX
        logits = self.decoder.lm_head(hidden[:, :-1][scored])  # [N, vocab]
        loss_sum = F.cross_entropy(logits.float(), targets[scored], reduction="sum")
        return loss_sum, scored.sum()

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:  # one storage, stored once under the output head's name
            del state["decoder.model.embed_tokens.weight"]
        # one metadata key (no save_model, which adds one per tied name): safetensors writes a map in random order,
        # so two keys would make the same weights hash differently
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu", attn_implementation: str | None = None) -> SemanticLM:
        """Load our folder (`config.json` + `model.safetensors`) strictly."""
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not an LM folder: {name} is missing")
        attn = attn_implementation or default_attn_implementation(device, dtype)
        model = cls(LMConfig.load(folder / CONFIG_NAME), attn_implementation=attn)
        missing, unexpected = load_model(model, str(folder / WEIGHTS_NAME), strict=False)
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_NAME} does not match the LM config: missing {sorted(missing)[:10]}, "
                             f"unexpected {sorted(unexpected)[:10]}")
        return model.to(device=device, dtype=dtype).eval()


def lm_config_from_text_llm(folder: str | Path, semantic_vocab_size: int = 16384) -> LMConfig:
    """An LMConfig with the shape of a pretrained Qwen2 / Llama folder; its text vocabulary is the LLM's."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(folder))
    if hf.model_type not in ("qwen2", "llama"):
        raise ValueError(f"{folder} holds a {hf.model_type!r} model; starting from a text LLM supports qwen2 and llama")
    return LMConfig(
        text_vocab_size=hf.vocab_size, semantic_vocab_size=semantic_vocab_size, architecture=hf.model_type,
        hidden_size=hf.hidden_size, intermediate_size=hf.intermediate_size, num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads, num_kv_heads=hf.num_key_value_heads or hf.num_attention_heads,
        max_position_embeddings=hf.max_position_embeddings,
        rope_theta=float(getattr(hf, "rope_theta", None) or (hf.rope_parameters or {}).get("rope_theta", 10000.0)),
        rms_norm_eps=hf.rms_norm_eps, tie_word_embeddings=bool(hf.tie_word_embeddings))


def from_text_llm(folder: str | Path, semantic_vocab_size: int = 16384) -> SemanticLM:
    """A SemanticLM initialised from a pretrained text LLM folder: every transformer weight is copied, the text
    rows of the embedding (and output) table take the LLM's rows, and the new special and semantic rows start
    fresh. Pair it with `lm.text.HFTextTokenizer(folder)`."""
    from transformers import AutoModelForCausalLM

    config = lm_config_from_text_llm(folder, semantic_vocab_size)
    model = SemanticLM(config)
    source = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).state_dict()
    target = model.decoder.state_dict()
    rows = slice(config.text_offset, config.semantic_offset)
    with torch.no_grad():
        for name, tensor in target.items():
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue  # shares the embedding table
            if name not in source:
                raise ValueError(f"{folder} has no weight {name}; is it a standard {config.architecture} checkpoint?")
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                tensor[rows] = source[name][: config.text_vocab_size]
            else:
                tensor.copy_(source[name])
    return model


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID, left: bool = False,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> (ids [B, T_max], attention_mask [B, T_max]); left padding for generation prefixes."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for i, seq in enumerate(sequences):
        span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        ids[i, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
