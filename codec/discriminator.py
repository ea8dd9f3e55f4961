"""The GAN discriminator SAC trains against (research/sac.md §4): DAC's `Discriminator` with multi-period (MPD)
and complex multi-band STFT (MRD) discriminators and no multi-scale one. Module names follow DAC's, so its
discriminator weights would map over key-for-key (weight norm via parametrizations, as in codec.modules)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

PERIODS = (2, 3, 5, 7, 11)
FFT_SIZES = (2048, 1024, 512)
# fractions of the n_fft // 2 + 1 frequency bins each band sees
BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
MPD_CHANNELS = (32, 128, 512, 1024, 1024)


def wn_conv2d(*args, act: bool = True, **kwargs) -> nn.Module:
    """Weight-normed Conv2d, followed by LeakyReLU(0.1) unless act=False (DAC's WNConv2d)."""
    conv = weight_norm(nn.Conv2d(*args, **kwargs))
    return nn.Sequential(conv, nn.LeakyReLU(0.1)) if act else conv


class MPD(nn.Module):
    """Period discriminator: the waveform folded into [L / p, p] columns, 2-D convs along time only."""

    def __init__(self, period: int, channels: tuple[int, ...] = MPD_CHANNELS):
        super().__init__()
        self.period = period
        ins = (1, *channels[:-1])
        self.convs = nn.ModuleList([wn_conv2d(i, o, (5, 1), (3, 1) if n < len(channels) - 1 else 1, padding=(2, 0))
                                    for n, (i, o) in enumerate(zip(ins, channels))])
        self.conv_post = wn_conv2d(channels[-1], 1, kernel_size=(3, 1), padding=(1, 0), act=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x [B, 1, L]
        # DAC pads a whole extra period even when L is already a multiple; kept so feature maps match its shapes
        x = F.pad(x, (0, self.period - x.shape[-1] % self.period), mode="reflect")
        x = x.reshape(x.shape[0], x.shape[1], -1, self.period)
        fmap = []
        for layer in self.convs:
            x = layer(x)
            fmap.append(x)
        fmap.append(self.conv_post(x))
        return fmap


def complex_spectrogram(x: torch.Tensor, window_length: int) -> torch.Tensor:
    """x [B, 1, L] -> [B, 2 (real, imag), frames, bins]: audiotools' STFT with match_stride=True (hop w/4, reflect
    padding so that frames = ceil(L / hop), the two edge frames on each side dropped)."""
    hop = window_length // 4
    length = x.shape[-1]
    right_pad = math.ceil(length / hop) * hop - length
    pad = (window_length - hop) // 2
    x = F.pad(x.reshape(-1, 1, length), (pad, pad + right_pad), mode="reflect").squeeze(1)
    window = torch.hann_window(window_length, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, window_length, hop, window=window, center=True, return_complex=True)[..., 2:-2]
    return torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, F, T, 2] -> [B, 2, T, F]


class MRD(nn.Module):
    """Complex multi-band STFT discriminator: one conv stack per frequency band, joined for the last conv."""

    def __init__(self, window_length: int, bands: tuple[tuple[float, float], ...] = BANDS, channels: int = 32):
        super().__init__()
        self.window_length = window_length
        bins = window_length // 2 + 1
        self.bands = [(int(lo * bins), int(hi * bins)) for lo, hi in bands]
        ch = channels

        def stack() -> nn.ModuleList:
            return nn.ModuleList([wn_conv2d(2, ch, (3, 9), (1, 1), padding=(1, 4)),
                                  wn_conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                                  wn_conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                                  wn_conv2d(ch, ch, (3, 9), (1, 2), padding=(1, 4)),
                                  wn_conv2d(ch, ch, (3, 3), (1, 1), padding=(1, 1))])

        self.band_convs = nn.ModuleList([stack() for _ in self.bands])
        self.conv_post = wn_conv2d(ch, 1, (3, 3), (1, 1), padding=(1, 1), act=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x [B, 1, L]
        spec = complex_spectrogram(x, self.window_length)
        fmap, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            band = spec[..., lo:hi]
            for layer in convs:
                band = layer(band)
                fmap.append(band)
            outs.append(band)
        fmap.append(self.conv_post(torch.cat(outs, dim=-1)))
        return fmap


class Discriminator(nn.Module):
    """MPDs then MRDs. forward(wav [B, 1, L]) -> one feature-map list per discriminator, logits last."""

    def __init__(self, periods: tuple[int, ...] = PERIODS, fft_sizes: tuple[int, ...] = FFT_SIZES,
                 bands: tuple[tuple[float, float], ...] = BANDS, mpd_channels: tuple[int, ...] = MPD_CHANNELS,
                 mrd_channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList([*(MPD(p, tuple(mpd_channels)) for p in periods),
                                             *(MRD(f, tuple(map(tuple, bands)), mrd_channels) for f in fft_sizes)])

    @staticmethod
    def preprocess(wav: torch.Tensor) -> torch.Tensor:
        """Remove DC and peak-normalise to 0.8, so D judges the waveform's shape, not its level."""
        wav = wav - wav.mean(dim=-1, keepdim=True)
        return 0.8 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-9)

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        wav = self.preprocess(wav)
        return [d(wav) for d in self.discriminators]
