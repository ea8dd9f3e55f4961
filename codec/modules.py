"""Building blocks of SAC, with the released module tree so that checkpoints load key-for-key.

Attribute names and `nn.Sequential` indices (parameter-free layers included) are part of the checkpoint format:
do not rename or reorder them. Weight norm uses `torch.nn.utils.parametrizations.weight_norm`, giving
`...parametrizations.weight.original0/1` keys like the released models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .config import ConvNeXtStackConfig, SpeakerPredictorConfig, VocosDecoderConfig


def wn_conv1d(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


class Snake1d(nn.Module):
    """x + sin²(αx)/(α + 1e-9), per channel; the 1e-9 is the released value and changes outputs if altered."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            wn_conv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        crop = (x.shape[-1] - y.shape[-1]) // 2
        if crop > 0:
            x = x[..., crop:-crop]
        return x + y


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, 1), ResidualUnit(dim // 2, 3), ResidualUnit(dim // 2, 9),
            Snake1d(dim // 2),
            wn_conv1d(dim // 2, dim, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AcousticEncoder(nn.Module):
    """DAC-style waveform encoder: wav [B, 1, L] -> latent [B, latent_dim, L / prod(rates)]."""

    def __init__(self, encoder_dim: int, rates: list[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(1, encoder_dim, kernel_size=7, padding=3)]
        for stride in rates:
            encoder_dim *= 2
            layers.append(EncoderBlock(encoder_dim, stride))
        layers += [Snake1d(encoder_dim), wn_conv1d(encoder_dim, latent_dim, kernel_size=3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.block(wav)


class DecoderBlock(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(input_dim),
            wn_conv_transpose1d(input_dim, output_dim, kernel_size=kernel_size, stride=stride,
                                padding=(kernel_size - stride) // 2),
            ResidualUnit(output_dim, 1), ResidualUnit(output_dim, 3), ResidualUnit(output_dim, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class WaveGenerator(nn.Module):
    """DAC-style decoder: features [B, C, T] -> wav [B, 1, T * prod(rates)] in (-1, 1)."""

    def __init__(self, input_channels: int, channels: int, rates: list[int], kernel_sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = [wn_conv1d(input_channels, channels, kernel_size=7, padding=3)]
        out_dim = channels
        for i, (kernel_size, stride) in enumerate(zip(kernel_sizes, rates)):
            in_dim, out_dim = channels // 2**i, channels // 2 ** (i + 1)
            layers.append(DecoderBlock(in_dim, out_dim, kernel_size, stride))
        layers += [Snake1d(out_dim), wn_conv1d(out_dim, 1, kernel_size=7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SamplingBlock(nn.Module):
    """Upsampling by `scale`, reproducing the released arithmetic exactly.

    Released output = conv_res + skip1 + skip2 with no downsampling, i.e. 3·repeat + 2·deconv for scale > 1
    and 3·x for scale 1. The factor 3 is a quirk the trained weights expect.
    """

    def __init__(self, dim: int, scale: int):
        super().__init__()
        self.scale = scale
        if scale > 1:
            self.de_conv_upsampler = nn.Sequential(
                nn.LeakyReLU(0.2),
                nn.ConvTranspose1d(dim, dim, kernel_size=2 * scale, stride=scale,
                                   padding=scale // 2 + scale % 2, output_padding=scale % 2, groups=dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, D] -> [B, D, T * scale]
        x = x.transpose(1, 2)
        if self.scale == 1:
            return 3 * x
        repeated = x.repeat_interleave(self.scale, dim=2)
        merged = repeated + self.de_conv_upsampler(x)
        return merged + repeated + merged


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, D, T]
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    """Conv embed + ConvNeXt blocks: x [B, C_in, T] -> [B, T, D] (note the time-major output)."""

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(
            [ConvNeXtBlock(dim, intermediate_dim, 1 / num_layers) for _ in range(num_layers)])
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_linear_and_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


def _init_linear_and_conv(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class ISTFTHead(nn.Module):
    """Backbone frames [B, T, D] -> wav [B, 1, T * hop]: a linear layer gives each frame's log-magnitude and phase
    (n_fft / 2 + 1 bins each), inverted by windowed overlap-add with "same" padding: frame t is centred on the middle
    of samples [t * hop, (t + 1) * hop), and (n_fft - hop) / 2 samples are trimmed at each end."""

    def __init__(self, dim: int, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.out = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_magnitude, phase = self.out(x).transpose(1, 2).float().chunk(2, dim=1)  # [B, F, T] each
        # The clamp is the release's guard against overflow early in training.
        return self.inverse(torch.polar(log_magnitude.exp().clamp(max=1e2), phase)).to(x.dtype)

    def inverse(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Complex spectrum [B, F, T] -> wav [B, 1, T * hop]: the exact inverse of a Hann-windowed STFT whose frame t
        starts at sample t * hop - (n_fft - hop) / 2 of the signal."""
        frames = torch.fft.irfft(spectrum, n=self.n_fft, dim=1) * self.window[:, None]  # [B, n_fft, T]
        count, length = frames.shape[-1], (frames.shape[-1] - 1) * self.hop + self.n_fft
        audio = F.fold(frames, (1, length), (1, self.n_fft), stride=(1, self.hop))  # overlap-add: [B, 1, 1, L]
        envelope = F.fold(self.window.square()[None, :, None].expand(1, -1, count), (1, length), (1, self.n_fft),
                          stride=(1, self.hop))
        trim = (self.n_fft - self.hop) // 2  # trimmed before dividing: the envelope is 0 at the very ends
        return (audio[..., trim: length - trim] / envelope[..., trim: length - trim]).reshape(len(spectrum), 1, -1)


class VocosDecoder(nn.Module):
    """The release code's `VocosDecoder`: features [B, C, T] -> wav [B, 1, T * hop], not clipped."""

    def __init__(self, input_channels: int, cfg: VocosDecoderConfig, hop: int):
        super().__init__()
        self.backbone = VocosBackbone(input_channels, cfg.dim, cfg.intermediate_dim, cfg.num_layers)
        self.head = ISTFTHead(cfg.dim, cfg.n_fft, hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ConvNeXtUpsampler(nn.Module):
    """The released `Decoder_with_upsample`: x [B, C_in, T] -> [B, C_out, T * prod(sample_ratios)]."""

    def __init__(self, cfg: ConvNeXtStackConfig):
        super().__init__()
        self.linear_pre = nn.Linear(cfg.input_channels, cfg.dim)
        self.upsample = nn.Sequential(*[
            nn.Sequential(SamplingBlock(cfg.dim, ratio), VocosBackbone(cfg.dim, cfg.dim, cfg.intermediate_dim, 2))
            for ratio in cfg.sample_ratios
        ])
        self.vocos_backbone = VocosBackbone(cfg.dim, cfg.dim, cfg.intermediate_dim, cfg.num_layers)
        self.linear = nn.Linear(cfg.dim, cfg.output_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample(self.linear_pre(x.transpose(1, 2)))  # [B, T', D]
        x = self.vocos_backbone(x.transpose(1, 2))  # [B, T', D]
        return self.linear(x).transpose(1, 2)


class FactorizedVQ(nn.Module):
    """One factorized VQ: project to a small code space, search by cosine, look up the *raw* code.

    The search L2-normalises both sides but the lookup returns the un-normalised codebook row: a released quirk.
    """

    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int,
                 commitment: float = 0.25, codebook_loss_weight: float = 4.0, dead_code_threshold: float = 2.0):
        super().__init__()
        self.codebook_size = codebook_size
        self.commitment, self.codebook_loss_weight = commitment, codebook_loss_weight
        self.dead_code_threshold = dead_code_threshold
        self.in_project = wn_conv1d(input_dim, codebook_dim, kernel_size=1)
        self.out_project = wn_conv1d(codebook_dim, input_dim, kernel_size=1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        # Training statistic of code usage (EMA of counts); stored in released checkpoints.
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def nearest_codes(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e [B, d, T] in code space -> ids [B, T]."""
        batch = z_e.shape[0]
        e = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        c = F.normalize(self.codebook.weight)
        # The released distance formula, kept as is so near-ties break the same way.
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1).indices.reshape(batch, -1)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """latent [B, C, T] -> ids [B, T] (int64)."""
        return self.nearest_codes(self.in_project(z))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> [B, C, T] (codebook lookup + out-projection)."""
        return self.out_project(self.codebook(ids).transpose(1, 2))

    def forward(self, z: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: returns (z_q [B, C, T], ids [B, T], vq_loss [B]) with a straight-through estimator.

        In training mode the dead codes are then revived from this batch (`seed` draws which latents).
        """
        z_e = self.in_project(z)
        ids = self.nearest_codes(z_e)
        z_q = self.codebook(ids).transpose(1, 2)
        commit = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2]) * self.commitment
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2]) * self.codebook_loss_weight
        if self.training:
            self.revive_dead_codes(z_e.detach(), ids, seed)
        z_q = z_e + (z_q - z_e).detach()
        return self.out_project(z_q), ids, commit + codebook

    @torch.no_grad()
    def revive_dead_codes(self, z_e: torch.Tensor, ids: torch.Tensor, seed: int | None) -> int:
        """The released `forced_activation`: codes whose usage EMA `cluster_size` is under `dead_code_threshold`
        jump to random latents z_e [B, d, T] of this batch, then the EMA takes this batch's counts of ids [B, T].

        Without it the raw (un-normalised) codes drift away from the encoder's scale and the VQ loss grows. As
        `cluster_size` starts at zero, the first call puts the whole codebook on data. Returns how many revived.
        """
        latents = z_e.transpose(1, 2).reshape(-1, z_e.shape[1])  # [N, d]
        counts = torch.bincount(ids.flatten(), minlength=self.codebook_size).to(self.cluster_size.dtype)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:  # every rank must keep the same codebook: rank 0's revival wins, usage is global
            torch.distributed.all_reduce(counts)
        dead = torch.nonzero(self.cluster_size < self.dead_code_threshold).flatten()
        if len(dead):
            generator = torch.Generator(device=latents.device)
            if seed is not None:
                generator.manual_seed(seed)
            else:
                generator.seed()
            pick = torch.randint(0, latents.shape[0], (len(dead),), generator=generator, device=latents.device)
            self.codebook.weight[dead] = latents[pick].to(self.codebook.weight.dtype)
            if distributed:
                torch.distributed.broadcast(self.codebook.weight.data, 0)
        self.cluster_size.mul_(0.99).add_(counts, alpha=0.01)
        return len(dead)


class SpeakerPredictor(nn.Module):
    """Training-only head: pooled decoder features [B, C, T] -> speaker embedding [B, output_dim]."""

    def __init__(self, input_dim: int, cfg: SpeakerPredictorConfig):
        super().__init__()
        self.use_mean_std = cfg.use_mean_std
        self.proj = nn.Sequential(
            nn.Linear(input_dim * (2 if cfg.use_mean_std else 1), cfg.hidden_dim),
            nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_dim, cfg.output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=2)
        if self.use_mean_std:
            pooled = torch.cat([pooled, x.std(dim=2)], dim=-1)
        return self.proj(pooled)


class SemanticCodebook(nn.Module):
    """The frozen 12.5 Hz semantic codebook (rows of the GLM-4-Voice tokenizer's VQ)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.codebook = nn.Embedding(vocab_size, dim)
        self.codebook.weight.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids [B, Ts] -> [B, Ts, dim]
        return self.codebook(ids)
