"""Training a GLM-4-Voice-style semantic tokenizer from scratch: Whisper-VQ encoder + CTC on transcripts.

GLM-4-Voice puts a VQ bottleneck inside a Whisper encoder and trains it with ASR supervision, so its ids keep what
is said and drop much of who says it. We follow that at small width with a CTC head instead of Whisper's decoder
(cheaper, and enough to force the ids to carry the words):

    log-mel -> SemanticTokenizer.encode (convs, layers, pool) -> VQ (EMA codebook, straight-through) @12.5 Hz
            -> repeat to the 50 Hz frame rate -> `post_layers` Whisper layers -> LayerNorm -> Linear -> CTC (chars)

Only the `SemanticTokenizer` part is exported (`export`): the released folder layout, loaded by
`SemanticTokenizer.from_pretrained` like GLM's. The codebook follows GLM's EMA update (`quantize_ema_decay`,
buffers `ema_count` / `ema_weight`) and restarts codes nobody used for `restart_interval` steps from random
encoder outputs of the batch, drawn from the loss's `seed` so a resumed run repeats them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer, sinusoids

from .semantic_tokenizer import SemanticTokenizer, SemanticTokenizerConfig
from .whisper_weights import read_whisper_encoder

MEL_HOP = 160  # samples per Whisper log-mel frame (100 Hz)
CTC_ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"  # id 0 is the CTC blank, so character i has id i + 1


def ctc_labels(text: str) -> list[int]:
    """Transcript -> CTC ids: lower-cased letters, apostrophes and single spaces; anything else is a word break."""
    cleaned = re.sub(r"[^a-z']+", " ", text.lower().replace("’", "'")).strip()
    return [CTC_ALPHABET.index(c) + 1 for c in cleaned]


@dataclass
class TokenizerTrainingConfig:
    tokenizer: dict = field(default_factory=dict)  # SemanticTokenizerConfig fields (HF config.json names)
    post_layers: int = 2  # Whisper layers between the quantiser and the CTC head (training only)
    ema_decay: float = 0.99  # GLM's quantize_ema_decay
    commit_weight: float = 0.25  # GLM's quantize_commit_coefficient
    vq_loss_scale: float = 10.0  # GLM's quantize_loss_scale
    restart_interval: int = 100  # GLM's quantize_restart_interval, in training forwards
    # GLM quantises an already trained Whisper; from scratch the CTC head first reads the unquantised encoder for
    # this many training forwards (the codebook already follows it by EMA), or a random codebook starves it
    quantize_after: int = 0
    # Weight of a second CTC head read straight from the 50 Hz frames entering the pooling. From scratch the only
    # path to the letters runs through pooling, the codebook and `post_layers`, and a small model sat for
    # thousands of steps at the letter-frequency plateau; this short path gives the encoder a direct signal.
    aux_ctc_weight: float = 0.0
    # The encoder's sinusoid positions are scaled by this at initialisation (the quantiser reads its residual
    # stream, where full-size positions swamp a fresh model's small content features). The positions after the
    # quantiser stay full size: they tell apart the k copies of each token.
    position_scale: float = 1.0
    # SpecAugment (training only): `time_masks` spans of up to `time_mask_frames` 100 Hz log-mel frames and
    # `freq_masks` bands of up to `freq_mask_bins` mel bins are set to the utterance's mean. GLM trains on far
    # more speech than a small run has; masking keeps a small run from learning its clips by heart.
    time_masks: int = 0
    time_mask_frames: int = 0
    freq_masks: int = 0
    freq_mask_bins: int = 0

    def tokenizer_config(self) -> SemanticTokenizerConfig:
        return SemanticTokenizerConfig.from_hf_config(self.tokenizer)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TokenizerTrainingConfig:
        return cls(**values)


class TokenizerTrainer(nn.Module):
    """SemanticTokenizer + EMA VQ + CTC head. `loss(features, num_samples, labels, label_lengths, seed)`."""

    def __init__(self, config: TokenizerTrainingConfig):
        super().__init__()
        self.config = config
        self.tokenizer = SemanticTokenizer(config.tokenizer_config())
        self.tokenizer.requires_grad_(True).train()
        self.tokenizer.codebook.requires_grad_(False)  # EMA-updated, like GLM's
        tc = self.tokenizer.config
        vocab, dim = self.tokenizer.vocab_size, tc.d_model
        self.register_buffer("ema_count", torch.ones(vocab))
        self.register_buffer("ema_weight", self.tokenizer.codebook.weight.detach().clone())
        self.register_buffer("steps_since_used", torch.zeros(vocab, dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))  # training forwards so far
        layer_config = tc.whisper_layer_config()
        self.post_positions = nn.Embedding(tc.max_source_positions, dim)
        # Whisper's positions are fixed sinusoids; learned ones would start as N(0, 1) noise three times the size of
        # the conv features. Either way a fresh encoder's quantiser input is mostly position (see recipes/README.md).
        for positions, scale in ((self.tokenizer.embed_positions, config.position_scale), (self.post_positions, 1.0)):
            positions.weight.data.copy_(sinusoids(*positions.weight.shape) * scale)
            positions.requires_grad_(False)
        self.post = nn.ModuleList(WhisperEncoderLayer(layer_config) for _ in range(config.post_layers))
        self.post_norm = nn.LayerNorm(dim)
        self.ctc_head = nn.Linear(dim, len(CTC_ALPHABET) + 1)
        if config.aux_ctc_weight > 0:
            self.aux_norm = nn.LayerNorm(dim)
            self.aux_ctc_head = nn.Linear(dim, len(CTC_ALPHABET) + 1)

    # ---- folders -----------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_model(self, str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TokenizerTrainer:
        folder = Path(folder)
        model = cls(TokenizerTrainingConfig.from_dict(json.loads((folder / "config.json").read_text())))
        load_model(model, str(folder / "model.safetensors"), strict=True)
        return model

    def load_whisper_encoder(self, path: str | Path) -> dict[str, int]:
        """Start the encoder (convs, positions, the `quantize_position` layers) from a pretrained Whisper folder (HF
        or CTranslate2), as GLM-4-Voice starts from Whisper. Whisper's next layers, where it has them, start the
        `post_layers` (GLM quantises mid-encoder and keeps the rest of Whisper above the quantiser); the codebook,
        any further post layers and the CTC heads stay fresh. Returns the Whisper folder's dims."""
        tc = self.tokenizer.config
        dims, state = read_whisper_encoder(path)
        ours = {"d_model": tc.d_model, "encoder_attention_heads": tc.encoder_attention_heads,
                "encoder_ffn_dim": tc.encoder_ffn_dim, "num_mel_bins": tc.num_mel_bins,
                "max_source_positions": tc.max_source_positions}
        clashes = [f"{k} {getattr(dims, k)} (config: {v})" for k, v in ours.items() if getattr(dims, k) != v]
        if clashes:
            raise ValueError(f"{path} does not fit the tokenizer config: " + ", ".join(clashes))
        if tc.quantize_position > dims.encoder_layers:
            raise ValueError(f"{path} has {dims.encoder_layers} encoder layers; {tc.quantize_position} were asked for")
        post = {}  # Whisper's layers from quantize_position on -> post.0, post.1, ...
        for key in [k for k in state if k.startswith("layers.")]:
            index, rest = key.removeprefix("layers.").split(".", 1)
            offset = int(index) - tc.quantize_position
            if offset >= 0:
                value = state.pop(key)
                if offset < len(self.post):
                    post[f"{offset}.{rest}"] = value
        expected = {k for k in self.tokenizer.state_dict() if k != "codebook.weight"}
        if set(state) != expected:
            raise ValueError(f"{path}: missing {sorted(expected - set(state))[:5]}, "
                             f"unexpected {sorted(set(state) - expected)[:5]}")
        self.tokenizer.load_state_dict(state, strict=False)
        self.post.load_state_dict({**self.post.state_dict(), **post})
        return asdict(dims)

    def export(self, folder: str | Path) -> Path:
        """The tokenizer alone, in the released layout (`SemanticTokenizer.from_pretrained` reads it)."""
        return self.tokenizer.save_pretrained(folder)

    # ---- VQ ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _update_codebook(self, z: torch.Tensor, ids: torch.Tensor, seed: int) -> None:
        """EMA k-means step over this batch's real tokens z [N, D] with their codes ids [N]."""
        codebook = self.tokenizer.codebook.weight
        generator = torch.Generator().manual_seed(seed)
        if not bool(self.initialised):  # start the codebook on real encoder outputs, not random points
            pick = torch.randint(0, z.shape[0], (codebook.shape[0],), generator=generator).to(z.device)
            codebook.copy_(z[pick])
            self.ema_weight.copy_(z[pick])
            self.ema_count.fill_(1.0)
            self.initialised.fill_(True)
            return
        decay = self.config.ema_decay
        onehot = F.one_hot(ids, codebook.shape[0]).to(z.dtype)  # [N, V]
        self.ema_count.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
        self.ema_weight.mul_(decay).add_(onehot.t() @ z, alpha=1 - decay)
        total = self.ema_count.sum()
        count = (self.ema_count + 1e-5) / (total + codebook.shape[0] * 1e-5) * total  # Laplace smoothing
        codebook.copy_(self.ema_weight / count[:, None])
        used = torch.zeros_like(self.steps_since_used, dtype=torch.bool)
        used[ids] = True
        self.steps_since_used.add_(1).masked_fill_(used, 0)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, seed: int) -> int:
        """Codes unused for `restart_interval` training forwards jump to random batch vectors z [N, D]; returns how
        many."""
        dead = torch.nonzero(self.steps_since_used >= self.config.restart_interval).flatten()
        if len(dead) == 0 or z.shape[0] == 0:
            return 0
        generator = torch.Generator().manual_seed(seed + 1)
        pick = torch.randint(0, z.shape[0], (len(dead),), generator=generator).to(z.device)
        self.tokenizer.codebook.weight[dead] = z[pick]
        self.ema_weight[dead] = z[pick]
        self.ema_count[dead] = 1.0
        self.steps_since_used[dead] = 0
        return len(dead)

    # ---- loss --------------------------------------------------------------------------------------------------
    def loss(self, features: torch.Tensor, num_samples: torch.Tensor, labels: torch.Tensor,
             label_lengths: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features [B, n_mels, F] log-mel, num_samples [B], labels [B, L] CTC ids (0-padded), label_lengths [B].

        Returns (summed loss, scored characters, summed commitment) so every character weighs the same.
        """
        if self.training:
            features = self.spec_augment(features, num_samples, seed)
        encoded = self.tokenizer.encode(features, num_samples)
        z, valid = encoded["hidden"], encoded["valid"]  # [B, T, D], [B, T]
        if self.training:
            flat = z[valid].detach().float()
            self._update_codebook(flat, self.tokenizer._nearest_code(flat), seed)
            self.restart_dead_codes(flat, seed)
        quantized = self._quantize(z, valid)  # with the codebook as updated
        commit = F.mse_loss(z[valid], quantized[valid].detach(), reduction="sum") / z.shape[-1]
        z_q = z + (quantized - z).detach()  # straight-through
        if self.training:
            self.forwards += 1
            if int(self.forwards) <= self.config.quantize_after:
                z_q = z
        logits = self._ctc_logits(z_q, valid)  # [B, T50, C]
        ctc = _ctc(logits, valid.sum(1) * self.tokenizer.pooling_kernel, labels, label_lengths)
        if self.config.aux_ctc_weight > 0:
            ctc = ctc + self.config.aux_ctc_weight * _ctc(self._aux_logits(encoded["frames"]),
                                                          encoded["frames_valid"].sum(1), labels, label_lengths)
        chars = label_lengths.sum()
        vq = self.config.vq_loss_scale * self.config.commit_weight * commit * chars / valid.sum().clamp(min=1)
        return ctc + vq, chars, commit.detach()

    def spec_augment(self, features: torch.Tensor, num_samples: torch.Tensor, seed: int) -> torch.Tensor:
        """features [B, n_mels, F] -> a copy with the config's time and frequency masks, drawn from `seed` (a resumed
        run repeats them) inside each utterance's real frames."""
        c = self.config
        if not (c.time_masks and c.time_mask_frames) and not (c.freq_masks and c.freq_mask_bins):
            return features
        generator = torch.Generator().manual_seed(seed + 2)  # seed and seed + 1 serve the codebook
        features = features.clone()
        frames = (num_samples // MEL_HOP).clamp(max=features.shape[-1]).tolist()
        bins = features.shape[1]

        def span(width: int, length: int) -> slice:
            size = int(torch.randint(0, min(width, length) + 1, (), generator=generator))
            start = int(torch.randint(0, length - size + 1, (), generator=generator))
            return slice(start, start + size)

        for row, length in enumerate(frames):
            if length < 1:
                continue
            mean = features[row, :, :length].mean()
            for _ in range(c.time_masks if c.time_mask_frames else 0):
                features[row, :, span(c.time_mask_frames, length)] = mean
            for _ in range(c.freq_masks if c.freq_mask_bins else 0):
                features[row, span(c.freq_mask_bins, bins), :length] = mean
        return features

    def _quantize(self, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """z [B, T, D] -> its nearest codes [B, T, D] (zeros where not valid)."""
        codebook = self.tokenizer.codebook.weight
        quantized = torch.zeros_like(z)
        quantized[valid] = codebook[self.tokenizer._nearest_code(z[valid].detach().to(codebook.dtype))].to(z.dtype)
        return quantized

    def _ctc_logits(self, z_q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Tokens z_q [B, T, D] -> CTC logits [B, T·k, C] at the encoder frame rate."""
        k = self.tokenizer.pooling_kernel
        hidden = z_q.repeat_interleave(k, dim=1)
        frames = hidden.shape[1]
        hidden = hidden + self.post_positions.weight[:frames]
        frame_valid = valid.repeat_interleave(k, dim=1)
        mask = torch.where(frame_valid[:, None, None, :], 0.0, torch.finfo(hidden.dtype).min).to(hidden.dtype)
        for layer in self.post:
            hidden = layer(hidden, mask)
        return self.ctc_head(self.post_norm(hidden))

    def _aux_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames before pooling [B, T50, D] -> the auxiliary head's CTC logits [B, T50, C]."""
        return self.aux_ctc_head(self.aux_norm(frames))

    @torch.no_grad()
    def transcribe(self, features: torch.Tensor, num_samples: torch.Tensor) -> dict[str, list[str]]:
        """Greedy CTC read-outs from one encoder pass (for evaluation): "codes" through the quantiser, what the ids
        still say, and, when the model has the auxiliary head, "aux" from the frames before pooling, what the encoder
        knows before the bottleneck."""
        encoded = self.tokenizer.encode(features, num_samples)
        valid = encoded["valid"]
        quantized = self._quantize(encoded["hidden"], valid)
        heads = {"codes": (self._ctc_logits(quantized, valid), valid.sum(1) * self.tokenizer.pooling_kernel)}
        if self.config.aux_ctc_weight > 0:
            heads["aux"] = (self._aux_logits(encoded["frames"]), encoded["frames_valid"].sum(1))
        return {name: _greedy_ctc(logits, frames) for name, (logits, frames) in heads.items()}


def _greedy_ctc(logits: torch.Tensor, frames: torch.Tensor) -> list[str]:
    """Logits [B, T, C] with frames [B] real rows -> best paths with repeats and blanks removed, spaces squeezed."""
    texts = []
    for row, count in zip(logits.argmax(-1).tolist(), frames.tolist()):
        chars, previous = [], 0
        for symbol in row[:count]:
            if symbol != previous and symbol != 0:
                chars.append(CTC_ALPHABET[symbol - 1])
            previous = symbol
        texts.append(" ".join("".join(chars).split()))
    return texts


def _ctc(logits: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor) -> torch.Tensor:
    """Summed CTC of logits [B, T, C] with frames [B] real rows against labels [B, L] (blank = 0)."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    return F.ctc_loss(log_probs, labels, frames, label_lengths, blank=0, reduction="sum", zero_infinity=True)
