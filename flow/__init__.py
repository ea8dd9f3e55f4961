"""Stage 2: acoustic tokens from semantic tokens and a voice prompt (never imports codec or lm)."""

from .config import FlowConfig
from .model import AcousticFlow
from .sampling import FlowRequest, FlowSamplingConfig, generate

__all__ = ["AcousticFlow", "FlowConfig", "FlowRequest", "FlowSamplingConfig", "generate"]
