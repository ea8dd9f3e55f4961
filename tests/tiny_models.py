"""Tiny random-weight models of every part, saved in the real folder formats, for tests of the pipeline and its
interfaces (they make noise-like audio: tests check mechanics, never quality)."""

from __future__ import annotations

from pathlib import Path

import torch

from codec import SAC, ConvNeXtStackConfig, SACConfig
from codec.semantic_tokenizer import SemanticTokenizer, SemanticTokenizerConfig
from flow import AcousticFlow, FlowConfig
from lm import LMConfig, SemanticLM, train_text_tokenizer
from tts.config import TTSConfig

SEMANTIC_VOCAB, ACOUSTIC_VOCAB = 64, 64
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "A journey of a thousand miles begins with a single step.",
    "She sells sea shells by the sea shore.", "How much wood would a woodchuck chuck?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "It was the best of times, it was the worst of times.", "The rain in Spain stays mainly in the plain.",
    "Numbers like 42 and 1990 are read as words.", "Hello world, this is a tiny test voice.",
]


def build_tiny_tts(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = SemanticTokenizer(SemanticTokenizerConfig(
        d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128, encoder_causal_convolution=True,
        quantize_causal_block_size=200, pooling_kernel_size=4, pooling_type="avg", pooling_position=2,
        quantize_position=2, quantize_vocab_size=SEMANTIC_VOCAB))
    for p in tokenizer.parameters():
        torch.nn.init.normal_(p, std=0.2)
    codec = SAC(SACConfig(
        semantic_vocab_size=SEMANTIC_VOCAB, semantic_dim=32,
        semantic_adapter=ConvNeXtStackConfig(32, 16, 32, 2, 24, [1, 2]),
        acoustic_encoder_dim=4, acoustic_latent_dim=24, codebook_size=ACOUSTIC_VOCAB,
        prenet=ConvNeXtStackConfig(48, 16, 32, 2, 24, [1, 2]), decoder_channels=32, semantic_decoder=None,
        speaker_predictor=None))
    codec.semantic_encoder.codebook.weight.data.copy_(tokenizer.codebook.weight)
    codec.save_pretrained(folder / "codec")
    tokenizer.save_pretrained(folder / "codec" / "semantic_tokenizer")

    text_tokenizer = train_text_tokenizer(SENTENCES * 3, folder / "text_bpe", vocab_size=400)
    lm = SemanticLM(LMConfig(text_vocab_size=text_tokenizer.vocab_size, semantic_vocab_size=SEMANTIC_VOCAB,
                             hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                             max_position_embeddings=1024))
    lm.save_pretrained(folder / "lm")
    text_tokenizer.save(folder / "lm")
    AcousticFlow(FlowConfig(semantic_vocab_size=SEMANTIC_VOCAB, acoustic_vocab_size=ACOUSTIC_VOCAB,
                            acoustic_per_semantic=2, dim=32, num_layers=2, num_heads=4, intermediate_size=64,
                            max_frames=400)).save_pretrained(folder / "flow")
    TTSConfig().save(folder)
    return folder
