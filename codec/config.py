"""SAC configuration: one dataclass, serialised as plain JSON data.

The released code describes a model with a hydra YAML (``_target_`` import paths). We keep only the numbers,
and `SACConfig.from_released_yaml` maps that schema onto them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ConvNeXtStackConfig:
    """A ConvNeXt stack with optional upsampling stages (the released `Decoder_with_upsample`)."""

    input_channels: int
    dim: int
    intermediate_dim: int
    num_layers: int
    output_channels: int
    sample_ratios: list[int] = field(default_factory=lambda: [1, 1])

    @property
    def upsample_factor(self) -> int:
        return math.prod(self.sample_ratios)


@dataclass
class SpeakerPredictorConfig:
    hidden_dim: int = 1024
    output_dim: int = 192
    dropout: float = 0.1
    use_mean_std: bool = True


@dataclass
class VocosDecoderConfig:
    """The release code's other acoustic decoder (`VocosDecoder`): a ConvNeXt backbone at the prenet's frame rate and
    an inverse-STFT head with "same" padding. No released checkpoint uses it; it trains many times faster than the
    wave generator on a CPU. The hop is the prenet frame's samples (320 in both released layouts)."""

    dim: int
    intermediate_dim: int
    num_layers: int
    n_fft: int


@dataclass
class SACConfig:
    """Every number that defines a SAC model. Defaults are the released 37.5 Hz layout."""

    sample_rate: int = 16000
    semantic_hop_samples: int = 1280  # one 12.5 Hz semantic token covers 80 ms
    semantic_vocab_size: int = 16384
    semantic_dim: int = 1280
    semantic_adapter: ConvNeXtStackConfig = field(
        default_factory=lambda: ConvNeXtStackConfig(1280, 384, 2048, 12, 1024, [1, 2]))
    acoustic_encoder_dim: int = 64
    acoustic_encoder_rates: list[int] = field(default_factory=lambda: [2, 2, 4, 5, 8])
    acoustic_latent_dim: int = 1024
    codebook_size: int = 16384
    codebook_dim: int = 8
    # Training only: codes used less than this (EMA of per-step counts) are revived from the batch. The released
    # 2 revives most of a 16384 codebook every step at its batch; small batches want a lower one.
    dead_code_threshold: float = 2.0
    prenet: ConvNeXtStackConfig = field(
        default_factory=lambda: ConvNeXtStackConfig(2048, 768, 2048, 12, 1024, [1, 2]))
    decoder_channels: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    decoder_kernel_sizes: list[int] = field(default_factory=lambda: [16, 11, 8, 4])
    # Set, it replaces the wave generator above (whose three fields are then unused).
    vocos_decoder: VocosDecoderConfig | None = None
    # Training-only heads; inference checkpoints may leave them out (None).
    semantic_decoder: ConvNeXtStackConfig | None = field(
        default_factory=lambda: ConvNeXtStackConfig(1024, 384, 2048, 6, 1280, [1, 1]))
    speaker_predictor: SpeakerPredictorConfig | None = field(default_factory=SpeakerPredictorConfig)
    # Preprocessing, as in the released YAML.
    volume_normalize: bool = True
    highpass_cutoff_hz: float = 40.0

    def __post_init__(self) -> None:
        for name in ("semantic_adapter", "prenet", "semantic_decoder"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, ConvNeXtStackConfig(**value))
        if isinstance(self.speaker_predictor, dict):
            self.speaker_predictor = SpeakerPredictorConfig(**self.speaker_predictor)
        if isinstance(self.vocos_decoder, dict):
            self.vocos_decoder = VocosDecoderConfig(**self.vocos_decoder)
        self.validate()

    # ---- derived rates -------------------------------------------------------------------------------------
    @property
    def acoustic_hop_samples(self) -> int:
        return math.prod(self.acoustic_encoder_rates)

    @property
    def acoustic_per_semantic(self) -> int:
        """k: acoustic tokens per semantic token (2 at 37.5 Hz, 4 at 62.5 Hz)."""
        return self.semantic_hop_samples // self.acoustic_hop_samples

    @property
    def semantic_frame_rate_hz(self) -> float:
        return self.sample_rate / self.semantic_hop_samples

    @property
    def acoustic_frame_rate_hz(self) -> float:
        return self.sample_rate / self.acoustic_hop_samples

    @property
    def decoder_hop_samples(self) -> int:
        """Samples per frame of the prenet's output, the rate the acoustic decoder starts from."""
        return self.acoustic_hop_samples // self.prenet.upsample_factor

    @property
    def token_rate_hz(self) -> float:
        return self.semantic_frame_rate_hz + self.acoustic_frame_rate_hz

    @property
    def layout(self) -> str:
        """'37_5' or '62_5' style name from the total token rate."""
        return f"{self.token_rate_hz:g}".replace(".", "_")

    def validate(self) -> None:
        k, rem = divmod(self.semantic_hop_samples, self.acoustic_hop_samples)
        if rem or k < 1:
            raise ValueError(f"acoustic hop {self.acoustic_hop_samples} (product of acoustic_encoder_rates "
                             f"{self.acoustic_encoder_rates}) must divide the semantic hop {self.semantic_hop_samples}")
        if self.semantic_adapter.upsample_factor != k:
            raise ValueError(f"semantic_adapter sample_ratios {self.semantic_adapter.sample_ratios} upsample by "
                             f"{self.semantic_adapter.upsample_factor}, but the acoustic stream has {k} frames per "
                             "semantic token")
        if self.acoustic_hop_samples % self.prenet.upsample_factor:
            raise ValueError(f"prenet upsampling {self.prenet.upsample_factor} must divide the acoustic hop "
                             f"({self.acoustic_hop_samples})")
        if self.vocos_decoder is not None:
            hop, n_fft = self.decoder_hop_samples, self.vocos_decoder.n_fft
            if n_fft < 2 * hop or (n_fft - hop) % 2:  # below 2 hops the window envelope has zeros
                raise ValueError(f"vocos_decoder.n_fft ({n_fft}) must be at least twice the decoder hop ({hop}) and "
                                 "differ from it by an even number (the 'same' padding trims half on each side)")
            return
        decoder_hop = self.prenet.upsample_factor * math.prod(self.decoder_rates)
        if decoder_hop != self.acoustic_hop_samples:
            raise ValueError(f"prenet x decoder upsampling ({decoder_hop}) must equal the acoustic hop "
                             f"({self.acoustic_hop_samples}) so that audio length = tokens x hop")
        if len(self.decoder_rates) != len(self.decoder_kernel_sizes):
            raise ValueError("decoder_rates and decoder_kernel_sizes must have the same length")

    # ---- presets -------------------------------------------------------------------------------------------
    @classmethod
    def layout_37_5(cls, **overrides: Any) -> SACConfig:
        """The released SAC-16k-37_5Hz layout (acoustic hop 640, 25 Hz)."""
        return cls(**overrides)

    @classmethod
    def layout_62_5(cls, **overrides: Any) -> SACConfig:
        """The released SAC-16k-62_5Hz layout (acoustic hop 320, 50 Hz)."""
        base = dict(
            semantic_adapter=ConvNeXtStackConfig(1280, 384, 2048, 12, 1024, [2, 2]),
            acoustic_encoder_rates=[2, 4, 5, 8],
            prenet=ConvNeXtStackConfig(2048, 768, 2048, 12, 1024, [1, 1]),
        )
        base.update(overrides)
        return cls(**base)

    def without_training_heads(self) -> SACConfig:
        return dataclasses.replace(self, semantic_decoder=None, speaker_predictor=None)

    # ---- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SACConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SAC config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SACConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_released_yaml(cls, yaml_cfg: dict[str, Any], *, semantic_vocab_size: int) -> SACConfig:
        """Map the released hydra YAML (`configs/sac_16k_*.yaml`) onto a config.

        The YAML does not state the semantic vocabulary (it lives in the GLM tokenizer), so the caller passes it.
        """
        try:
            gen = yaml_cfg["model"]["generator"]
            adapter, prenet = gen["semantic_adapter"], gen["prenet"]
            encoder, quantizer, decoder = gen["acoustic_encoder"], gen["acoustic_quantizer"], gen["acoustic_decoder"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a released SAC config: missing {exc} under model.generator") from exc

        def stack(section: dict[str, Any], default_ratios: list[int]) -> ConvNeXtStackConfig:
            return ConvNeXtStackConfig(
                input_channels=int(section["input_channels"]), dim=int(section["vocos_dim"]),
                intermediate_dim=int(section["vocos_intermediate_dim"]),
                num_layers=int(section["vocos_num_layers"]), output_channels=int(section["out_channels"]),
                sample_ratios=[int(r) for r in section.get("sample_ratios", default_ratios)])

        speaker = gen.get("speaker_predictor")
        return cls(
            sample_rate=int(yaml_cfg.get("sample_rate", 16000)),
            semantic_hop_samples=int(yaml_cfg.get("latent_hop_length", 1280)),
            semantic_vocab_size=int(semantic_vocab_size),
            semantic_dim=int(adapter["input_channels"]),
            semantic_adapter=stack(adapter, [1, 1]),
            acoustic_encoder_dim=int(encoder["encoder_dim"]),
            acoustic_encoder_rates=[int(r) for r in encoder["encoder_rates"]],
            acoustic_latent_dim=int(encoder["latent_dim"]),
            codebook_size=int(quantizer["codebook_size"]),
            codebook_dim=int(quantizer["codebook_dim"]),
            dead_code_threshold=float(quantizer.get("threshold_ema_dead_code", 2.0)),
            prenet=stack(prenet, [1, 1]),
            decoder_channels=int(decoder["channels"]),
            decoder_rates=[int(r) for r in decoder["rates"]],
            decoder_kernel_sizes=[int(k) for k in decoder["kernel_sizes"]],
            semantic_decoder=stack(gen["semantic_decoder"], [1, 1]) if gen.get("semantic_decoder") else None,
            speaker_predictor=SpeakerPredictorConfig(
                hidden_dim=int(speaker["hidden_dim"]), output_dim=int(speaker["output_dim"]),
                dropout=float(speaker.get("dropout", 0.1)), use_mean_std=bool(speaker.get("use_mean_std", True)),
            ) if speaker else None,
            volume_normalize=bool(yaml_cfg.get("volume_normalize", True)),
            highpass_cutoff_hz=float(yaml_cfg.get("highpass_cutoff_freq") or 0.0),
        )
