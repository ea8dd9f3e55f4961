"""The SAC speech codec (arXiv 2510.16841), faithful to the released model and its checkpoints."""

from .checkpoint import convert_released, load_sac, save_pretrained
from .codec import SpeechCodec
from .config import ConvNeXtStackConfig, SACConfig, SpeakerPredictorConfig
from .model import SAC, TokenError
from .tokens import CodecTokens, deinterleave, interleave

__all__ = [
    "SAC", "SACConfig", "ConvNeXtStackConfig", "SpeakerPredictorConfig", "SpeechCodec", "CodecTokens", "TokenError",
    "load_sac", "save_pretrained", "convert_released", "interleave", "deinterleave",
]
