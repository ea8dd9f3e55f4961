"""SAC's training losses (research/sac.md §4): the multi-scale log-mel L1 loss of audiotools' MelSpectrogramLoss,
LSGAN adversarial losses and feature matching, in plain torch (no torchaudio, no librosa at run time)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The released loss config: 7 scales, hop = window / 4.
MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)
FeatureMaps = list[list[torch.Tensor]]  # per discriminator, its feature maps; the last one is its logits


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above."""
    linear = hz * 3.0 / 200.0
    log = 15.0 + torch.log(hz.clamp(min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(hz >= 1000.0, log, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mel - 15.0))
    return torch.where(mel >= 15.0, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
                   ) -> torch.Tensor:
    """float64 [n_mels, n_fft // 2 + 1]: librosa.filters.mel's triangles with Slaney area normalisation."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(float(fmin), dtype=torch.float64))),
                                     float(hz_to_mel(torch.tensor(float(fmax), dtype=torch.float64))),
                                     n_mels + 2, dtype=torch.float64))
    widths = edges.diff()
    ramps = edges[:, None] - fft_hz[None]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.minimum(lower, upper).clamp(min=0)
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per band


class MultiScaleMelLoss(nn.Module):
    """Sum over scales of L1(log10 mel(x), log10 mel(y)) with magnitudes clamped at `clamp_eps` (audiotools'
    MelSpectrogramLoss with log_weight 1, mag_weight 0, pow 1)."""

    def __init__(self, sample_rate: int = 16000, windows: tuple[int, ...] = MEL_WINDOWS,
                 n_mels: tuple[int, ...] = MEL_BANDS, clamp_eps: float = 1e-5, power: float = 1.0):
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError(f"{len(windows)} windows but {len(n_mels)} mel sizes")
        self.windows, self.clamp_eps, self.power = tuple(windows), clamp_eps, power
        for w, m in zip(windows, n_mels):
            # buffers, not constants: they follow .to(device) and are not saved (persistent=False)
            self.register_buffer(f"mel_{w}", mel_filterbank(sample_rate, w, m).float(), persistent=False)
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)

    def log_mel(self, wav: torch.Tensor, window: int) -> torch.Tensor:
        """wav [B, 1, L] or [B, L] -> log10 mel [B, n_mels, frames] at one scale."""
        wav = wav.reshape(-1, wav.shape[-1]).float()
        # audiotools: torch.stft, center=True with reflect padding, periodic Hann, not normalised
        spec = torch.stft(wav, n_fft=window, hop_length=window // 4, win_length=window,
                          window=getattr(self, f"window_{window}"), center=True, pad_mode="reflect",
                          return_complex=True).abs()
        mel = getattr(self, f"mel_{window}") @ spec
        return mel.clamp(min=self.clamp_eps).pow(self.power).log10()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y [B, 1, L] -> scalar. `x` is the reconstruction; y is trimmed to its length (the released
        `wav[..., :len(recons)]`)."""
        y = y[..., :x.shape[-1]]
        return sum(F.l1_loss(self.log_mel(x, w), self.log_mel(y, w)) for w in self.windows)


# ---- adversarial ---------------------------------------------------------------------------------------------------
def discriminator_loss(real: FeatureMaps, fake: FeatureMaps) -> torch.Tensor:
    """LSGAN: Σ over discriminators of mean(D(fake)²) + mean((1 − D(real))²). `fake` must come from a detached
    reconstruction so this step leaves the generator alone."""
    return sum(torch.mean(f[-1] ** 2) + torch.mean((1 - r[-1]) ** 2) for r, f in zip(real, fake))


def generator_adversarial_loss(fake: FeatureMaps) -> torch.Tensor:
    """LSGAN: Σ over discriminators of mean((1 − D(fake))²)."""
    return sum(torch.mean((1 - f[-1]) ** 2) for f in fake)


def feature_matching_loss(real: FeatureMaps, fake: FeatureMaps) -> torch.Tensor:
    """Σ over discriminators and their intermediate maps (all but the logits) of L1(fake, real.detach()), as DAC."""
    return sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1]))
