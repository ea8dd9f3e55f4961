"""The SAC codec network (arXiv 2510.16841): semantic + acoustic token streams, one 16 kHz decoder.

Token ids in, waveform out, and the acoustic half of encoding. Producing semantic ids from audio needs the
GLM-4-Voice tokenizer (`codec.semantic_tokenizer`); `codec.SpeechCodec` ties the two with preprocessing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .config import SACConfig
from .modules import (
    AcousticEncoder,
    ConvNeXtUpsampler,
    FactorizedVQ,
    SemanticCodebook,
    SpeakerPredictor,
    VocosDecoder,
    WaveGenerator,
)

# The noise's seeds sit half the CPU generator's 32-bit seed space away from the step seeds they derive from, so
# the streams of a run's steps never meet
NOISE_SEED_OFFSET = 2**31 + 0x5AC


class TokenError(ValueError):
    """Token ids that the codec cannot decode (wrong shape, range, dtype or length ratio)."""


class SAC(nn.Module):
    def __init__(self, config: SACConfig):
        super().__init__()
        self.config = config
        c = config
        # Attribute names are the released ones (checkpoint keys).
        self.semantic_encoder = SemanticCodebook(c.semantic_vocab_size, c.semantic_dim)
        self.semantic_adapter = ConvNeXtUpsampler(c.semantic_adapter)
        self.acoustic_encoder = AcousticEncoder(c.acoustic_encoder_dim, c.acoustic_encoder_rates,
                                                c.acoustic_latent_dim)
        self.acoustic_quantizer = FactorizedVQ(c.acoustic_latent_dim, c.codebook_size, c.codebook_dim,
                                               dead_code_threshold=c.dead_code_threshold)
        self.prenet = ConvNeXtUpsampler(c.prenet)
        self.acoustic_decoder = (
            VocosDecoder(c.prenet.output_channels, c.vocos_decoder, c.decoder_hop_samples) if c.vocos_decoder else
            WaveGenerator(c.prenet.output_channels, c.decoder_channels, c.decoder_rates, c.decoder_kernel_sizes))
        self.semantic_decoder = ConvNeXtUpsampler(c.semantic_decoder) if c.semantic_decoder else None
        self.speaker_predictor = (SpeakerPredictor(c.prenet.output_channels, c.speaker_predictor)
                                  if c.speaker_predictor else None)

    @classmethod
    def from_pretrained(cls, source, **kwargs) -> SAC:
        """Our folder, a released `.pt` (`config=` its YAML, optional), or a hub id; see `codec.load_sac`."""
        from .checkpoint import load_sac

        return load_sac(source, **kwargs)

    def save_pretrained(self, folder, dtype: torch.dtype | None = None, max_shard_bytes: int | None = None):
        from .checkpoint import save_pretrained

        return save_pretrained(self, folder, dtype=dtype, max_shard_bytes=max_shard_bytes)

    @property
    def device(self) -> torch.device:
        return self.semantic_encoder.codebook.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.semantic_encoder.codebook.weight.dtype

    # ---- validation ----------------------------------------------------------------------------------------
    def check_tokens(self, semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor) -> None:
        """Raise TokenError unless ids are [B, Ts] / [B, Ta] integers in range with Ta == k·Ts."""
        k = self.config.acoustic_per_semantic
        for name, ids, vocab in (("semantic", semantic_ids, self.config.semantic_vocab_size),
                                 ("acoustic", acoustic_ids, self.config.codebook_size)):
            if ids.dim() != 2:
                raise TokenError(f"{name} ids must be [batch, frames], got shape {tuple(ids.shape)}")
            if ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise TokenError(f"{name} ids must be integers, got {ids.dtype}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                raise TokenError(f"{name} ids must lie in [0, {vocab - 1}], got range "
                                 f"[{int(ids.min())}, {int(ids.max())}]")
        if semantic_ids.shape[1] == 0:
            raise TokenError("no tokens to decode (0 semantic frames)")
        if semantic_ids.shape[0] != acoustic_ids.shape[0]:
            raise TokenError(f"batch sizes differ: {semantic_ids.shape[0]} semantic vs {acoustic_ids.shape[0]} "
                             "acoustic")
        if acoustic_ids.shape[1] != k * semantic_ids.shape[1]:
            raise TokenError(f"this {self.config.layout} Hz codec needs exactly {k} acoustic tokens per semantic "
                             f"token: got {semantic_ids.shape[1]} semantic and {acoustic_ids.shape[1]} acoustic "
                             f"(expected {k * semantic_ids.shape[1]})")

    # ---- inference -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_acoustic(self, wav: torch.Tensor) -> torch.Tensor:
        """Preprocessed wav [B, 1, L] (L a multiple of the semantic hop) -> acoustic ids [B, L / acoustic_hop]."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"wav must be [batch, 1, samples], got shape {tuple(wav.shape)}")
        if wav.shape[-1] == 0 or wav.shape[-1] % self.config.semantic_hop_samples:
            raise ValueError(f"wav length {wav.shape[-1]} must be a positive multiple of "
                             f"{self.config.semantic_hop_samples} samples; preprocess (pad) it first")
        with parametrize.cached():
            latent = self.acoustic_encoder(wav.to(self.device, self.dtype))  # [B, C, Ta]
            return self.acoustic_quantizer.encode(latent)

    def embed_semantic(self, semantic_ids: torch.Tensor) -> torch.Tensor:
        """ids [B, Ts] -> adapter output [B, C, Ta]."""
        return self.semantic_adapter(self.semantic_encoder(semantic_ids).transpose(1, 2))

    def decoder_features(self, semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor,
                         semantic_masked: bool = False, acoustic_masked: bool = False) -> torch.Tensor:
        """ids -> prenet output x [B, C, T_decoder] (50 Hz in both released layouts)."""
        semantic = self.embed_semantic(semantic_ids)  # [B, C, Ta]
        acoustic = self.acoustic_quantizer.embed(acoustic_ids)  # [B, C, Ta]
        if semantic_masked:
            semantic = torch.zeros_like(semantic)
        if acoustic_masked:
            acoustic = torch.zeros_like(acoustic)
        # Semantic first: the released channel order.
        return self.prenet(torch.cat([semantic, acoustic], dim=1))

    @torch.inference_mode()
    def decode(self, semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor,
               semantic_masked: bool = False, acoustic_masked: bool = False) -> torch.Tensor:
        """semantic ids [B, Ts] + acoustic ids [B, k·Ts] -> wav [B, 1, Ts · semantic_hop] in (-1, 1)."""
        self.check_tokens(semantic_ids, acoustic_ids)
        semantic_ids, acoustic_ids = semantic_ids.to(self.device, torch.long), acoustic_ids.to(self.device, torch.long)
        with parametrize.cached():
            x = self.decoder_features(semantic_ids, acoustic_ids, semantic_masked, acoustic_masked)
            return self.acoustic_decoder(x).clamp(-1.0, 1.0)  # the wave generator's tanh already is; Vocos is not

    # ---- training ------------------------------------------------------------------------------------------
    def noisy_acoustic(self, acoustic: torch.Tensor, share: torch.Tensor, seed: int | None) -> torch.Tensor:
        """acoustic [B, C, Ta] with a `share` [B] of each clip's frames swapped for random codes' embeddings.

        A decoder that can read every word from near-perfect acoustic codes ignores the semantic stream; the second
        stage then has to predict those codes, and its errors become lost words. Unreliable acoustic codes push the
        decoder to look for the words in the semantic ids, where SAC's design puts them.
        """
        # its own stream: `seed` itself also seeds the VQ's revival and, in the recipe, the per-clip shares, and the
        # same draws would couple them (clip 0's first frame compared with its own share: never swapped)
        gen = torch.Generator().manual_seed(NOISE_SEED_OFFSET + (0 if seed is None else seed))
        batch, _, frames = acoustic.shape
        replace = torch.rand(batch, frames, generator=gen) < share.detach().float().cpu()[:, None]  # [B, Ta]
        random_ids = torch.randint(0, self.config.codebook_size, (batch, frames), generator=gen)
        noise = self.acoustic_quantizer.embed(random_ids.to(acoustic.device)).to(acoustic.dtype)  # [B, C, Ta]
        return torch.where(replace.to(acoustic.device)[:, None, :], noise, acoustic)

    def forward(self, wav: torch.Tensor, semantic_ids: torch.Tensor, seed: int | None = None,
                acoustic_noise: torch.Tensor | None = None,
                acoustic_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training pass. wav [B, 1, L] preprocessed, semantic_ids [B, L / semantic_hop]; `seed` for the VQ's
        dead-code revival and the noise. `acoustic_noise` [B] in [0, 1]: the share of each clip's acoustic frames
        whose code is replaced by a random one (not in the release; see `noisy_acoustic`). `acoustic_ids`
        [B, L / acoustic_hop]: decode these instead of encoding `wav` (decoder-only training; vq_loss is then 0).

        Returns recon [B, 1, L], acoustic_ids [B, Ta], vq_loss [B], and when the training heads exist
        semantic_pred [B, semantic_dim, T_decoder] and speaker_pred [B, D_speaker].
        """
        if acoustic_ids is None:
            acoustic, acoustic_ids, vq_loss = self.acoustic_quantizer(self.acoustic_encoder(wav), seed)
        else:
            acoustic, vq_loss = self.acoustic_quantizer.embed(acoustic_ids), wav.new_zeros(wav.shape[0])
        if acoustic_noise is not None:
            acoustic = self.noisy_acoustic(acoustic, acoustic_noise, seed)
        semantic = self.embed_semantic(semantic_ids)
        x = self.prenet(torch.cat([semantic, acoustic], dim=1))
        out = {"recon": self.acoustic_decoder(x), "acoustic_ids": acoustic_ids, "vq_loss": vq_loss}
        if self.semantic_decoder is not None:
            out["semantic_pred"] = self.semantic_decoder(x)
        if self.speaker_predictor is not None:
            out["speaker_pred"] = self.speaker_predictor(x)
        return out
