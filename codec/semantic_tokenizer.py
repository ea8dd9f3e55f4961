"""The GLM-4-Voice speech tokenizer (a Whisper-VQ encoder cut at its quantiser): 16 kHz audio -> 12.5 Hz ids.

This is the token-extraction path of the released code (`tools/features/extract_tokens.py`), which forces
`quantize_encoder_only=True`: Whisper log-mel features -> two causal convs (100 -> 50 Hz) -> positional table ->
`quantize_position` Whisper layers under a block-causal mask -> pooling -> Euclidean nearest code. The layers past
the quantiser, the final `layer_norm` and the decoder are never built. SAC needs these ids to encode real audio;
they must equal GLM's exactly, so the maths follows the released module operation for operation.

A clip's ids never depend on what else is tokenized with it. Every 30 s chunk gets its log-mel features on its
own (as a lone chunk would in the released code), and by default runs through the encoder alone, because kernels
round differently for different batch shapes. The batched path (`batch_invariant=False`) pads only the features,
with a frame mask; padded frames cannot reach real ones: the convs are causal, pooling windows stay aligned to
chunk ends and padded keys are masked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

from .audio import check_samples
from .weights import write_weights

CHUNK_SECONDS = 30  # the released extractor cuts clips into 30 s chunks (Whisper's window)
CONV_STRIDE = 2  # conv1 stride 1 x conv2 stride 2: mel frames per encoder frame
ENCODER_PREFIX = "model.encoder."
# Encoder tensors that token extraction never uses: they are skipped on load instead of being kept as dead weight.
IGNORED_ENCODER_KEYS = ("embed_positions2.weight", "ema_count", "ema_weight")


class SemanticTokenizerError(ValueError):
    """A tokenizer folder or configuration this implementation cannot use faithfully."""


@dataclass(frozen=True)
class SemanticTokenizerConfig:
    """The HF `config.json` fields the token-extraction path reads (defaults = released `WhisperVQConfig`)."""

    d_model: int = 384
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    num_mel_bins: int = 80
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    scale_embedding: bool = False  # read but, as in the released forward, never applied
    encoder_causal_convolution: bool = False
    encoder_causal_attention: bool = False
    quantize_causal_encoder: bool = False
    quantize_causal_block_size: int | None = None
    pooling_kernel_size: int | None = None
    pooling_type: str = "max"
    pooling_position: int | None = 0
    quantize_position: int = 16
    quantize_vocab_size: int | None = None

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> SemanticTokenizerConfig:
        """Build from a parsed HF `config.json`, ignoring keys token extraction does not use; validates."""
        known = {f.name for f in fields(cls)}
        result = cls(**{k: v for k, v in config.items() if k in known})
        result.validate()
        return result

    @property
    def causal_attention(self) -> bool:
        """Released layers then run plain causal SDPA and ignore the block/padding mask."""
        return bool(self.encoder_causal_attention or self.quantize_causal_encoder)

    def validate(self) -> None:
        """Raise `SemanticTokenizerError` for configurations the released extraction path cannot run."""
        problems = []
        if self.quantize_vocab_size is None:
            problems.append("quantize_vocab_size is null: the model has no quantiser, so it yields no token ids")
        if not self.encoder_causal_convolution:
            problems.append("encoder_causal_convolution=false is not supported (centred convs would let batch "
                            "padding leak into the last real frames; GLM-4-Voice uses causal convs)")
        if self.quantize_position < 1:
            problems.append(f"quantize_position must be >= 1, got {self.quantize_position}")
        if self.pooling_kernel_size is not None:
            if self.pooling_type not in ("avg", "max"):
                problems.append(f"pooling_type {self.pooling_type!r} is not 'avg' or 'max'")
            if self.pooling_position is None or not 1 <= self.pooling_position <= self.quantize_position:
                problems.append(f"pooling_position {self.pooling_position} must lie in 1..quantize_position "
                                f"({self.quantize_position}) when pooling_kernel_size is set")
        if self.d_model % self.encoder_attention_heads:
            problems.append(f"d_model {self.d_model} is not divisible by {self.encoder_attention_heads} heads")
        if problems:
            raise SemanticTokenizerError("unsupported tokenizer config: " + "; ".join(problems))

    def whisper_layer_config(self) -> WhisperConfig:
        """A `WhisperConfig` for transformers' `WhisperEncoderLayer` (SDPA attention, no dropout)."""
        config = WhisperConfig(d_model=self.d_model, encoder_attention_heads=self.encoder_attention_heads,
                               encoder_ffn_dim=self.encoder_ffn_dim, activation_function=self.activation_function,
                               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        config._attn_implementation = "sdpa"
        return config


def whisper_feature_extractor(num_mel_bins: int) -> WhisperFeatureExtractor:
    """Whisper's log-mel front end (16 kHz, 25 ms window, 10 ms hop) with `num_mel_bins` bands."""
    return WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000, hop_length=160, n_fft=400,
                                   chunk_length=CHUNK_SECONDS)


class CausalConv1d(nn.Conv1d):
    """Conv1d padded on the left only, so output frame t depends on input frames <= t * stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.left_padding = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        return super().forward(F.pad(x, (self.left_padding, 0)))


def _as_mono_float32(wav: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """float32 [samples], as the released extractor casts (`.float()`) before the feature extractor."""
    array = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    return check_samples(array, name)


class SemanticTokenizer(nn.Module):
    """GLM-4-Voice tokenizer: volume-normalised 16 kHz audio -> ids at `sample_rate / hop_samples` Hz.

    State-dict keys equal the released encoder's after stripping `model.encoder.` (conv1, conv2, embed_positions,
    layers.N, codebook). `codebook` is the [vocab, d_model] table SAC embeds semantic ids with.
    """

    def __init__(self, config: SemanticTokenizerConfig, feature_extractor: WhisperFeatureExtractor | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.feature_extractor = feature_extractor or whisper_feature_extractor(config.num_mel_bins)
        fe = self.feature_extractor
        if fe.feature_size != config.num_mel_bins:
            raise SemanticTokenizerError(f"feature extractor makes {fe.feature_size} mel bins but the encoder "
                                         f"expects num_mel_bins={config.num_mel_bins}")
        if fe.sampling_rate != 16000:
            raise SemanticTokenizerError(f"feature extractor sampling_rate {fe.sampling_rate} is not 16000")
        self.sample_rate = 16000
        self.vocab_size = int(config.quantize_vocab_size)
        self.pooling_kernel = config.pooling_kernel_size or 1
        self.samples_per_frame = fe.hop_length * CONV_STRIDE  # one encoder frame (50 Hz for Whisper)
        self.hop_samples = self.samples_per_frame * self.pooling_kernel  # one token (1280 for GLM-4-Voice)
        self.chunk_samples = CHUNK_SECONDS * self.sample_rate
        if fe.n_samples < self.chunk_samples:  # the extractor would silently truncate our chunks
            raise SemanticTokenizerError(f"feature extractor chunk_length {fe.chunk_length} s is shorter than the "
                                         f"{CHUNK_SECONDS} s chunks token extraction uses")
        if math.ceil(self.chunk_samples / self.samples_per_frame) > config.max_source_positions:
            raise SemanticTokenizerError(f"max_source_positions {config.max_source_positions} is too short for "
                                         f"{CHUNK_SECONDS} s chunks")

        d_model = config.d_model
        self.conv1 = CausalConv1d(config.num_mel_bins, d_model, kernel_size=3)
        self.conv2 = CausalConv1d(d_model, d_model, kernel_size=3, stride=2)
        self.embed_positions = nn.Embedding(config.max_source_positions, d_model)
        layer_config = config.whisper_layer_config()
        self.layers = nn.ModuleList(WhisperEncoderLayer(layer_config) for _ in range(config.quantize_position))
        self.codebook = nn.Embedding(self.vocab_size, d_model)
        self.requires_grad_(False)
        self.eval()

    # ---- loading -----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> SemanticTokenizer:
        """Load a released tokenizer folder (`config.json`, `preprocessor_config.json`, `model*.safetensors`).

        Only `model.encoder.*` tensors are read; the decoder, the final `layer_norm`, layers >= quantize_position,
        `embed_positions2` and the EMA buffers are skipped. The rest must match this module exactly (strict).
        Use dtype=torch.float64 for ids identical to the released float64 run (float32 may flip near-ties).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"semantic tokenizer folder not found: {folder}")
        for name in ("config.json", "preprocessor_config.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"semantic tokenizer folder {folder} has no {name}")
        weight_files = sorted(folder.glob("model*.safetensors"))
        if not weight_files:
            raise FileNotFoundError(f"semantic tokenizer folder {folder} has no model*.safetensors")
        config = SemanticTokenizerConfig.from_hf_config(json.loads((folder / "config.json").read_text()))
        fe_dict = json.loads((folder / "preprocessor_config.json").read_text())
        feature_extractor = WhisperFeatureExtractor.from_dict(fe_dict)
        state = _read_encoder_state(weight_files, config.quantize_position)
        if not state:
            raise SemanticTokenizerError(f"{folder}: no {ENCODER_PREFIX}* tensors in {[f.name for f in weight_files]}")
        with torch.device("meta"):  # skip random init of weights that are overwritten right away
            model = cls(config, feature_extractor)
        _load_strict(model, state, folder)
        return model.requires_grad_(False).to(device=device, dtype=dtype).eval()

    def save_pretrained(self, folder: str | Path, max_shard_bytes: int | None = None) -> Path:
        """Write the released folder layout (`config.json`, `preprocessor_config.json`, `model.safetensors` with
        `model.encoder.*` keys, or shards of it over `max_shard_bytes`), which `from_pretrained` and the released
        code read."""
        from dataclasses import asdict

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        hf_config = {**asdict(self.config), "model_type": "whisper", "quantize_encoder_only": True,
                     "encoder_layers": self.config.quantize_position}
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        (folder / "preprocessor_config.json").write_text(self.feature_extractor.to_json_string())
        state = {ENCODER_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_weights(state, folder, max_shard_bytes)
        return folder

    # ---- features ----------------------------------------------------------------------------------------------
    def log_mel(self, chunk: np.ndarray) -> np.ndarray:
        """Whisper log-mel of one chunk (<= 30 s) zero-padded to a multiple of `hop_samples` -> [n_mels, frames].

        Exactly the released call for a lone chunk (`padding="longest"`, `pad_to_multiple_of=hop`). Its float32
        numbers depend on summation order: transformers' numpy path, or a version that reorders the torch path,
        differs from the released run by up to ~1.5e-5 in single bins, which leaves the token ids unchanged.
        """
        out = self.feature_extractor([chunk], sampling_rate=self.sample_rate, padding="longest",
                                     pad_to_multiple_of=self.hop_samples, return_tensors="np")
        return out["input_features"][0]

    # ---- encoder -----------------------------------------------------------------------------------------------
    def _attention_mask(self, frame_valid: torch.Tensor, block_frames: int | None, dtype: torch.dtype
                        ) -> torch.Tensor:
        """Additive mask [B, 1, T, T]: 0 where query i may see key j, finfo(dtype).min elsewhere.

        Block-causal: i sees every j <= i plus its whole block; padded keys are hidden. Row 0 of every item is
        real, so no row is fully masked and softmax never makes NaN.
        """
        batch, frames = frame_valid.shape
        pos = torch.arange(frames, device=frame_valid.device)
        allowed = pos[None, :] <= pos[:, None]  # [T, T]
        if self.config.causal_attention:
            # released: plain causal SDPA without a mask; real queries never reach the trailing padding anyway
            allowed = allowed[None].expand(batch, frames, frames)
        else:
            if block_frames is not None:
                block = torch.div(pos, block_frames, rounding_mode="floor")
                allowed = allowed | (block[None, :] == block[:, None])
            else:
                allowed = torch.ones_like(allowed)
            allowed = allowed[None] & frame_valid[:, None, :]  # [B, T, T]
        zero = torch.zeros((), dtype=dtype, device=frame_valid.device)
        hidden = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=frame_valid.device)
        return torch.where(allowed, zero, hidden)[:, None]

    def _pool(self, hidden: torch.Tensor) -> torch.Tensor:  # hidden [B, T, D] -> [B, ceil(T / k), D]
        x = hidden.transpose(1, 2)
        remainder = x.shape[-1] % self.pooling_kernel
        if remainder:
            x = F.pad(x, (0, self.pooling_kernel - remainder))
        if self.config.pooling_type == "max":
            x = F.max_pool1d(x, self.pooling_kernel)
        else:
            x = F.avg_pool1d(x, self.pooling_kernel)
        return x.transpose(1, 2)

    def _nearest_code(self, hidden: torch.Tensor) -> torch.Tensor:  # hidden [N, D] -> ids [N]
        """Released Euclidean VQ: |c|^2 + |x|^2 - 2 x.c via addmm, then the first minimum (same ties)."""
        codes = self.codebook.weight
        distances = torch.addmm(torch.sum(codes ** 2, dim=1) + torch.sum(hidden ** 2, dim=1, keepdim=True),
                                hidden, codes.t(), beta=1.0, alpha=-2.0)
        return torch.min(distances, dim=1).indices

    def encode(self, features: torch.Tensor, num_samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder up to the quantiser, for `forward` and for training.

        features [B, n_mels, F] and num_samples [B] as in `forward`. Returns hidden [B, T, D] (the quantiser input,
        one row per token), valid [B, T] (bool), frames [B, T_frames, D] (the residual stream entering pooling:
        50 Hz for Whisper, the features SAC's semantic-feature loss regresses) and frames_valid [B, T_frames].
        """
        dtype = self.codebook.weight.dtype
        features = features.to(dtype)
        hidden = F.gelu(self.conv1(features))
        hidden = F.gelu(self.conv2(hidden)).transpose(1, 2)  # [B, T50, D]
        frames = hidden.shape[1]
        if frames > self.embed_positions.num_embeddings:
            raise ValueError(f"{frames} encoder frames exceed max_source_positions "
                             f"{self.embed_positions.num_embeddings}")
        hidden = hidden + self.embed_positions.weight[:frames]
        num_samples = num_samples.to(hidden.device)
        frame_valid = (torch.arange(frames, device=hidden.device) * self.samples_per_frame)[None] < num_samples[:, None]
        block_frames = self.config.quantize_causal_block_size
        mask = self._attention_mask(frame_valid, block_frames, dtype)
        out = {"frames": hidden, "frames_valid": frame_valid}
        for index, layer in enumerate(self.layers, start=1):
            hidden = layer(hidden, mask)
            if self.config.pooling_kernel_size is not None and index == self.config.pooling_position:
                out = {"frames": hidden, "frames_valid": frame_valid}
                hidden = self._pool(hidden)
                frame_valid = frame_valid[:, :: self.pooling_kernel]
                if block_frames is not None:
                    block_frames = block_frames // self.pooling_kernel
                mask = self._attention_mask(frame_valid, block_frames, dtype)
        if self.config.pooling_kernel_size is None:
            out = {"frames": hidden, "frames_valid": frame_valid}
        return {"hidden": hidden, "valid": frame_valid, **out}

    def forward(self, features: torch.Tensor, num_samples: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a batch of chunks.

        features [B, n_mels, F]: each item's own `log_mel`, right-padded (any values) to F, a multiple of
        hop_samples / hop_length. num_samples [B]: real audio samples of each chunk.
        Returns ids [B, T] (int64, -1 where padded), hidden [B, T, D] (the quantiser input) and valid [B, T]
        (bool: token j is real iff j * hop_samples < num_samples, i.e. ceil(num_samples / hop_samples) tokens).
        """
        encoded = self.encode(features, num_samples)
        hidden, frame_valid = encoded["hidden"], encoded["valid"]
        ids = torch.full(frame_valid.shape, -1, dtype=torch.long, device=hidden.device)
        for row in range(hidden.shape[0]):
            # quantise only real tokens, so each item's distance matrix has the shape a lone chunk would have
            count = int(frame_valid[row].sum())
            ids[row, :count] = self._nearest_code(hidden[row, :count])
        return ids, hidden, frame_valid

    @torch.no_grad()
    def ids_and_frames(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One volume-normalised chunk (<= 30 s) [samples] -> (ids int64 [ceil(samples / hop)], frames float32
        [ids · pooling_kernel, D]): the ids `tokenize` gives and the pre-pooling features SAC's semantic loss
        regresses (Whisper layer 16 at 50 Hz for GLM-4-Voice)."""
        audio = _as_mono_float32(audio, "audio")
        if not 0 < audio.shape[0] <= self.chunk_samples:
            raise ValueError(f"ids_and_frames takes one chunk of 1..{self.chunk_samples} samples, got {audio.shape[0]}")
        device = self.codebook.weight.device
        features = torch.from_numpy(self.log_mel(audio))[None].to(device)
        encoded = self.encode(features, torch.tensor([audio.shape[0]], device=device))
        count = int(encoded["valid"][0].sum())
        ids = self._nearest_code(encoded["hidden"][0, :count])
        frames = encoded["frames"][0, : count * self.pooling_kernel]
        return ids.cpu().numpy(), frames.float().cpu().numpy()

    # ---- public entry point ------------------------------------------------------------------------------------
    def tokenize(self, wavs: Sequence[np.ndarray | torch.Tensor], *, batch_size: int = 16,
                 batch_invariant: bool = True) -> list[torch.Tensor]:
        """Clips of volume-normalised 16 kHz mono audio [samples] -> one int64 CPU tensor of ids per clip.

        Each clip is cut into 30 s chunks; a chunk of n samples gives ceil(n / hop_samples) ids and a clip's ids
        are its chunks' in order (the released `extract_speech_token`).

        batch_invariant=True (default): every chunk runs through the encoder in a pass of its own shape, so a
        clip's ids are bit-for-bit independent of the other clips and of `batch_size`. Batching cannot promise
        that: CPU/GPU kernels (oneDNN convs, SDPA, GEMMs) round differently for different batch shapes even when
        no padding is visible (measured on CPU: ~3e-15 in float64, ~5e-6 in float32 hidden states), which can
        flip an id at a near-tie. batch_invariant=False batches up to `batch_size` chunks, features padded to the
        longest with a frame mask (faster on GPUs for many short clips; same ids except at such near-ties).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks: list[np.ndarray] = []
        owners: list[int] = []
        for index, wav in enumerate(wavs):
            audio = _as_mono_float32(wav, f"clip {index}")
            for start in range(0, audio.shape[0], self.chunk_samples):
                chunks.append(audio[start: start + self.chunk_samples])
                owners.append(index)
        step = 1 if batch_invariant else batch_size
        # longest first so that batches pad little
        order = sorted(range(len(chunks)), key=lambda j: -chunks[j].shape[0])
        chunk_ids: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(chunks)
        with torch.inference_mode():
            for start in range(0, len(order), step):
                batch = order[start: start + step]
                for j, ids in zip(batch, self._tokenize_chunks([chunks[j] for j in batch])):
                    chunk_ids[j] = ids
        per_clip: list[list[np.ndarray]] = [[] for _ in range(len(wavs))]
        for owner, ids in zip(owners, chunk_ids):
            per_clip[owner].append(ids)
        # built outside inference mode so callers get ordinary tensors they may modify in place
        return [torch.from_numpy(np.concatenate(parts)) for parts in per_clip]

    def _tokenize_chunks(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Chunks (each <= 30 s) -> int64 ids [ceil(n / hop_samples)] per chunk."""
        mels = [self.log_mel(chunk) for chunk in chunks]  # each [n_mels, F_i] float32
        max_frames = max(mel.shape[-1] for mel in mels)
        features = np.zeros((len(mels), mels[0].shape[0], max_frames), dtype=np.float32)  # [B, n_mels, F]
        for row, mel in enumerate(mels):
            features[row, :, : mel.shape[-1]] = mel
        device = self.codebook.weight.device
        num_samples = torch.tensor([chunk.shape[0] for chunk in chunks], dtype=torch.long)
        ids, _, valid = self(torch.from_numpy(features).to(device), num_samples.to(device))
        ids, valid = ids.cpu(), valid.cpu()
        return [ids[row][valid[row]].numpy().copy() for row in range(len(chunks))]


def _read_encoder_state(weight_files: Sequence[Path], quantize_position: int) -> dict[str, torch.Tensor]:
    """`model.encoder.*` tensors the extraction path uses, prefix stripped (the released loader's filter)."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if not key.startswith(ENCODER_PREFIX):
                    continue  # decoder / projection heads: not part of token extraction
                name = key[len(ENCODER_PREFIX):]
                if name.startswith("layer_norm.") or name in IGNORED_ENCODER_KEYS:
                    continue
                if name.startswith("layers.") and int(name.split(".")[1]) >= quantize_position:
                    continue
                state[name] = handle.get_tensor(key)
    return state


def _load_strict(model: SemanticTokenizer, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load every kept tensor into `model`; any missing/unexpected key or shape mismatch is an error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
        if wrong:
            details.append("shape mismatch " + ", ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:20]))
        raise SemanticTokenizerError(f"{folder}: tokenizer weights do not match its config.json "
                                     f"({'; '.join(details)})")
    model.load_state_dict(state, strict=True, assign=True)
