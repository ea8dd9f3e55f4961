"""Stage 1: an autoregressive LM from text to 12.5 Hz semantic tokens (integer tokens only; never imports codec)."""

from .config import LMConfig
from .generate import Request, SamplingConfig, generate, length_bounds, stream
from .model import SemanticLM
from .text import TextError, TextTokenizer, train_text_tokenizer

__all__ = ["LMConfig", "SemanticLM", "Request", "SamplingConfig", "generate", "length_bounds", "stream",
           "TextTokenizer", "TextError", "train_text_tokenizer"]
