"""SemanticLM and its generation: causality, KV cache, batching, seeds, bounds, streaming, checkpoints."""

import warnings

import pytest
import torch

from lm.config import BOS_ID, EOS_ID, SEP_ID, LMConfig
from lm.generate import Request, SamplingConfig, _length_bounds, fast_decoder, generate, sample_next, stream
from lm.model import IGNORE_INDEX, SemanticLM

GREEDY = SamplingConfig(temperature=0, min_tokens_per_text_token=1, max_tokens_per_text_token=6)
SAMPLED = SamplingConfig(min_tokens_per_text_token=1, max_tokens_per_text_token=6)
REQUESTS = [Request([1, 2, 3, 4, 5], [6, 7], [1, 2, 3]), Request([9, 8, 7]), Request([4] * 9, [5], [60, 61])]


def tiny_lm(architecture: str = "qwen2", seed: int = 0) -> SemanticLM:
    torch.manual_seed(seed)
    config = LMConfig(text_vocab_size=50, semantic_vocab_size=64, architecture=architecture, hidden_size=32,
                      intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256)
    return SemanticLM(config).double().eval()


def test_sequence_layout_and_loss_mask():
    lm = tiny_lm()
    input_ids, labels = lm.build_example([1, 2], [5, 6, 7], prompt_text_ids=[3], prompt_semantic_ids=[9])
    t, s = lm.config.text_offset, lm.config.semantic_offset
    assert input_ids == [BOS_ID, 3 + t, 1 + t, 2 + t, SEP_ID, 9 + s, 5 + s, 6 + s, 7 + s, EOS_ID]
    assert labels == [IGNORE_INDEX] * 6 + [5 + s, 6 + s, 7 + s, EOS_ID]


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_model_is_causal(architecture):
    lm = tiny_lm(architecture)
    ids = torch.randint(0, lm.config.vocab_size, (1, 12))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % lm.config.vocab_size
    with torch.no_grad():
        a, b = lm(ids).logits, lm(changed).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_kv_cache_matches_full_forward(cache):
    lm = tiny_lm()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers warns of a renamed argument, then removes it
        cached = generate(lm, REQUESTS, GREEDY, cache=cache)
    assert cached == generate(lm, REQUESTS, GREEDY, cache="none")


def test_fixed_shape_step_for_compilation_matches_the_reference():
    lm = tiny_lm()
    step = fast_decoder(lm, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        stepped = generate(lm, REQUESTS, GREEDY, cache="static", step_fn=step)
    assert stepped == generate(lm, REQUESTS, GREEDY, cache="none")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_static_cache_matches_dynamic_on_gpu():
    lm = tiny_lm().float().cuda()
    step = fast_decoder(lm, compile=True)
    request = REQUESTS[:1]
    assert generate(lm, request, GREEDY, cache="static", step_fn=step) == generate(lm, request, GREEDY)


def test_batch_equals_single():
    lm = tiny_lm()
    batched = generate(lm, REQUESTS, GREEDY)
    assert batched == [generate(lm, [r], GREEDY)[0] for r in REQUESTS]


def test_seed_makes_sampling_deterministic_without_global_state():
    lm = tiny_lm()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate(lm, REQUESTS, SAMPLED, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator was not touched
    assert generate(lm, REQUESTS, SAMPLED, seed=7) == first
    assert any(generate(lm, REQUESTS, SAMPLED, seed=s) != first for s in (8, 9, 10))


def test_lengths_stay_within_bounds_derived_from_text():
    lm = tiny_lm()
    sampling = SamplingConfig(min_tokens_per_text_token=2, max_tokens_per_text_token=3)
    for seed in range(3):
        for request, out in zip(REQUESTS, generate(lm, REQUESTS, sampling, seed=seed)):
            assert 2 * len(request.text_ids) <= len(out) <= 3 * len(request.text_ids)
            assert all(0 <= t < lm.config.semantic_vocab_size for t in out)


def test_length_bounds_follow_the_prompt_pace():
    lm = tiny_lm()
    slow = Request([1, 2, 3], prompt_text_ids=[4, 5], prompt_semantic_ids=list(range(20)))  # 10 tokens per text id
    sampling = SamplingConfig(min_tokens_per_text_token=1, max_tokens_per_text_token=15, min_length_vs_prompt=0.5)
    assert _length_bounds(lm, slow, 10, sampling) == (15, 45)  # 0.5 x 10 x 3 text ids
    assert _length_bounds(lm, Request([1, 2, 3]), 5, sampling) == (3, 45)  # no prompt, no pace
    assert _length_bounds(lm, slow, 10, SamplingConfig(max_tokens_per_text_token=4, min_length_vs_prompt=1)) == (11, 12)
    assert _length_bounds(lm, slow, 10, SamplingConfig(max_length_vs_prompt=0.5)) == (3, 15)  # 0.5 x 10 x 3 text ids
    assert _length_bounds(lm, slow, 10, SamplingConfig(max_length_vs_prompt=0.01)) == (3, 4)  # never below min + 1
    for seed in range(3):
        assert len(generate(lm, [slow], sampling, seed=seed)[0]) >= 15
    with pytest.raises(ValueError, match="min_length_vs_prompt"):
        SamplingConfig(min_length_vs_prompt=-0.1)
    with pytest.raises(ValueError, match="max_length_vs_prompt"):
        SamplingConfig(max_length_vs_prompt=-1)


def test_repetition_aware_sampling_redraws_a_looping_token():
    logits = torch.log(torch.tensor([[0.6] + [0.4 / 9] * 9])).expand(200, 10)  # token 0 wins every top-1 draw
    looping, fresh = torch.zeros(200, 10, dtype=torch.long), torch.arange(1, 4).expand(200, 3)
    generator = torch.Generator().manual_seed(0)
    plain = SamplingConfig(top_k=1, ras_threshold=0)
    ras = SamplingConfig(top_k=1, ras_window=10, ras_threshold=0.1)
    assert set(sample_next(logits, looping, plain, generator).tolist()) == {0}
    redrawn = sample_next(logits, looping, ras, generator)
    assert 0.25 < (redrawn != 0).float().mean() < 0.55  # redrawn from the full distribution (p = 0.4)
    assert set(sample_next(logits, fresh, ras, generator).tolist()) == {0}  # no loop, no redraw


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    penalised = SamplingConfig(temperature=0, repetition_penalty=2.0)
    assert sample_next(logits, torch.empty(1, 0, dtype=torch.long), penalised, torch.Generator()).item() == 0
    assert sample_next(logits, torch.tensor([[0]]), penalised, torch.Generator()).item() == 1


def test_stream_yields_what_generate_returns():
    lm = tiny_lm()
    assert list(stream(lm, REQUESTS[0], SAMPLED, seed=3)) == generate(lm, REQUESTS[:1], SAMPLED, seed=3)[0]


def test_bad_requests_raise_clear_errors():
    lm = tiny_lm()
    with pytest.raises(ValueError, match="target text is empty"):
        generate(lm, [Request([])], GREEDY)
    with pytest.raises(ValueError, match=r"text ids must lie in \[0, 49\]"):
        generate(lm, [Request([50])], GREEDY)
    with pytest.raises(ValueError, match="prompt semantic ids"):
        generate(lm, [Request([1], [2], [64])], GREEDY)
    with pytest.raises(ValueError, match="no room left"):
        generate(lm, [Request([1] * 300)], GREEDY)
    with pytest.raises(ValueError, match="invalid sampling"):
        SamplingConfig(top_p=0)


def test_save_and_load_round_trip(tmp_path):
    lm = tiny_lm().float()
    lm.save_pretrained(tmp_path / "lm")
    loaded = SemanticLM.from_pretrained(tmp_path / "lm")
    assert loaded.config == lm.config
    for (name, a), (_, b) in zip(lm.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert generate(loaded, REQUESTS, GREEDY) == generate(lm, REQUESTS, GREEDY)


def test_starting_from_a_pretrained_text_llm_keeps_its_text_predictions(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from lm.model import from_text_llm
    from lm.text import load_text_tokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>").save_pretrained(tmp_path / "llm")
    torch.manual_seed(0)
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False)).eval()
    llm.save_pretrained(tmp_path / "llm")

    lm = from_text_llm(tmp_path / "llm", semantic_vocab_size=64).eval()
    tokenizer = load_text_tokenizer(tmp_path / "llm")
    ids = torch.tensor([tokenizer.encode("The quick brown fox")])
    assert int(ids.max()) < lm.config.text_vocab_size
    with torch.no_grad():
        expected = llm(ids).logits
        ours = lm(ids + lm.config.text_offset).logits[..., lm.config.text_offset: lm.config.semantic_offset]
    torch.testing.assert_close(ours, expected)
