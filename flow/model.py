"""`AcousticFlow`: acoustic tokens from semantic tokens and a voice prompt, by masked discrete flow matching.

Why discrete masking (MaskGCT-S2A / MaskGIT) rather than continuous flow in SAC's 8-d code space: the acoustic stream
is ONE 16384-code VQ, so a masked transformer predicts exactly the ids the codec decodes, with no nearest-code
rounding; the training path is a plain cross-entropy; confidence-ordered unmasking reaches good samples in 8-16
steps; and the prompt is just a prefix of known tokens (in-context infilling), which is how the voice is cloned.

Input per acoustic frame t (k frames per 12.5 Hz semantic token, aligned exactly: Ta = k·Ts):
    embed_acoustic(a_t or [MASK]) + embed_semantic(s_{t // k}) + embed_phase(t mod k)  ->  bidirectional
    transformer (RoPE)  ->  logits
The phase embedding tells the k frames of one semantic token apart (RoPE alone is relative, so without it the frames
of a group look alike and tend to get the same id). Every sequence starts on a group boundary, so phases line up.
Training masks a random cosine-scheduled fraction of the target frames (never the prompt) and scores them; the
prompt is dropped for a fraction of examples, which gives the unconditional model classifier-free guidance needs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .config import FlowConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def rotary_tables(frames: int, head_dim: int, theta: float, device: torch.device, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, head_dim / 2] of the rotary position embedding (computed once per forward)."""
    half = head_dim // 2
    freqs = theta ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.arange(frames, device=device, dtype=torch.float32)[:, None] * freqs
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by position."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor]
                ) -> torch.Tensor:  # x [B, T, C]
        b, t, c = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, *rope), rotary(k, *rope)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # bidirectional
        x = x + self.out(attn.transpose(1, 2).reshape(b, t, c))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class AcousticFlow(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        self.acoustic_embed = nn.Embedding(config.acoustic_vocab_size + 1, config.dim)  # + [MASK]
        self.semantic_embed = nn.Embedding(config.semantic_vocab_size, config.dim)
        self.phase_embed = nn.Embedding(config.acoustic_per_semantic, config.dim)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.head = nn.Linear(config.dim, config.acoustic_vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def check_inputs(self, acoustic: torch.Tensor, semantic: torch.Tensor) -> None:
        """Raise ValueError unless acoustic [B, k·Ts] (ids or [MASK]) and semantic [B, Ts] are in range."""
        cfg = self.config
        if acoustic.dim() != 2 or semantic.dim() != 2 or acoustic.shape[0] != semantic.shape[0]:
            raise ValueError(f"expected acoustic [B, Ta] and semantic [B, Ts], got {tuple(acoustic.shape)} and "
                             f"{tuple(semantic.shape)}")
        if acoustic.shape[1] != cfg.acoustic_per_semantic * semantic.shape[1]:
            raise ValueError(f"acoustic frames must be exactly {cfg.acoustic_per_semantic} x semantic tokens: got "
                             f"{acoustic.shape[1]} acoustic for {semantic.shape[1]} semantic")
        streams = (("acoustic", acoustic, cfg.mask_id), ("semantic", semantic, cfg.semantic_vocab_size - 1))
        for name, ids, top in streams:
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > top):
                raise ValueError(f"{name} ids must lie in [0, {top}], got [{int(ids.min())}, {int(ids.max())}]")

    def forward(self, acoustic: torch.Tensor, semantic: torch.Tensor, valid: torch.Tensor | None = None
                ) -> torch.Tensor:
        """acoustic [B, T] (ids or mask_id), semantic [B, T/k], valid [B, T] bool -> logits [B, T, V_acoustic]."""
        x = self.acoustic_embed(acoustic)
        k = self.config.acoustic_per_semantic
        x = x + self.semantic_embed(semantic).repeat_interleave(k, dim=1)
        x = x + self.phase_embed(torch.arange(x.shape[1], device=x.device) % k)
        key_mask = None if valid is None else valid[:, None, None, :]
        rope = rotary_tables(x.shape[1], self.config.dim // self.config.num_heads, self.config.rope_theta, x.device,
                             x.dtype)
        for block in self.blocks:
            x = block(x, key_mask, rope)
        return self.head(self.norm(x))

    def masked_loss(self, acoustic: torch.Tensor, semantic: torch.Tensor, prompt_frames: torch.Tensor,
                    frames: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Training step: mask a cosine-scheduled random fraction of each row's target frames
        [prompt_frames, frames) and score them. Returns (summed cross-entropy, number of scored frames)."""
        b, t = acoustic.shape
        positions = torch.arange(t, device=acoustic.device)[None]
        target = (positions >= prompt_frames[:, None]) & (positions < frames[:, None])
        u = torch.rand(b, 1, device=acoustic.device, generator=generator)
        ratio = torch.cos(u * math.pi / 2)  # fraction masked: MaskGIT's cosine schedule
        masked = target & (torch.rand(b, t, device=acoustic.device, generator=generator) < ratio)
        first = torch.where(target, positions, t).argmin(dim=1)  # at least one scored frame per row
        masked[torch.arange(b), first] |= target[torch.arange(b), first]
        inputs = torch.where(masked, torch.full_like(acoustic, self.config.mask_id), acoustic)
        logits = self(inputs, semantic, valid=positions < frames[:, None])
        loss = F.cross_entropy(logits[masked].float(), acoustic[masked], reduction="sum")
        return loss, masked.sum()

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        # one metadata key: safetensors writes a map in random order, so two keys make the same weights hash differently
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_NAME),
                  metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> AcousticFlow:
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a flow model folder: {name} is missing")
        model = cls(FlowConfig.load(folder / CONFIG_NAME))
        state = load_file(str(folder / WEIGHTS_NAME))
        missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS_NAME} does not match its config: missing {sorted(missing)[:10]}, "
                             f"unexpected {sorted(unexpected)[:10]}")
        model.load_state_dict(state, strict=True)
        return model.to(device=device, dtype=dtype).eval()
