"""The second stage: shapes, guidance, seeds, prompt infilling, windows, errors, checkpoints."""

import pytest
import torch

from flow import AcousticFlow, FlowConfig, FlowRequest, FlowSamplingConfig, generate
from flow.sampling import _guided_logits, fill, mean_codes

FAST = FlowSamplingConfig(steps=4, lookahead_frames=8, context_frames=8)


def tiny_flow(k: int = 2, max_frames: int = 64) -> AcousticFlow:
    torch.manual_seed(0)
    return AcousticFlow(FlowConfig(semantic_vocab_size=32, acoustic_vocab_size=48, acoustic_per_semantic=k, dim=32,
                                   num_layers=2, num_heads=4, intermediate_size=64, max_frames=max_frames)).eval()


def request(k: int, target: int, prompt: int, seed: int = 0) -> FlowRequest:
    g = torch.Generator().manual_seed(seed)
    return FlowRequest(torch.randint(0, 32, (target,), generator=g), torch.randint(0, 48, (k * prompt,), generator=g),
                       torch.randint(0, 32, (prompt,), generator=g))


@pytest.mark.parametrize("k", [2, 4])
def test_shapes_for_both_codec_layouts(k):
    model = tiny_flow(k)
    logits = model(torch.randint(0, 49, (3, 5 * k)), torch.randint(0, 32, (3, 5)))
    assert logits.shape == (3, 5 * k, 48)
    outputs = generate(model, [request(k, 5, 3), request(k, 9, 0, seed=1)], FAST, seed=0)
    assert [o.shape for o in outputs] == [(5 * k,), (9 * k,)]
    assert all(o.dtype == torch.long and 0 <= int(o.min()) and int(o.max()) < 48 for o in outputs)


def test_cfg_scale_one_equals_the_plain_conditional_pass():
    model = tiny_flow()
    r = request(2, 6, 4)
    acoustic = torch.cat([r.prompt_acoustic, torch.full((12,), model.config.mask_id)])[None]
    semantic = torch.cat([r.prompt_semantic, r.semantic])[None]
    valid = torch.ones_like(acoustic, dtype=torch.bool)
    with torch.no_grad():
        plain = model(acoustic, semantic, valid)
        one = _guided_logits(model, acoustic, semantic, valid, [8], [12], FlowSamplingConfig(cfg_scale=1.0))
        two = _guided_logits(model, acoustic, semantic, valid, [8], [12], FlowSamplingConfig(cfg_scale=2.0))
    assert torch.equal(one, plain)
    assert torch.equal(two[:, :8], plain[:, :8]) and not torch.allclose(two[:, 8:], plain[:, 8:])


def test_seed_makes_sampling_deterministic():
    model = tiny_flow()
    requests = [request(2, 7, 3), request(2, 4, 2, seed=1)]
    first = generate(model, requests, FAST, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first, generate(model, requests, FAST, seed=5)))
    assert any(not torch.equal(a, b) for a, b in zip(first, generate(model, requests, FAST, seed=6)))


def test_prompt_prefix_comes_back_unchanged():
    model = tiny_flow(k=4)
    requests = [request(4, 6, 5), request(4, 3, 2, seed=2)]
    for r, full in zip(requests, fill(model, requests, FAST, torch.Generator().manual_seed(0))):
        assert torch.equal(full[: len(r.prompt_acoustic)], r.prompt_acoustic)
        assert not (full == model.config.mask_id).any()  # every target frame was filled


def test_long_targets_are_generated_in_windows():
    model = tiny_flow(k=2, max_frames=32)  # 16 semantic tokens of context
    long = request(2, 50, 6)
    out = generate(model, [long], FAST, seed=0)[0]
    assert out.shape == (100,) and not (out == model.config.mask_id).any()
    assert torch.equal(out, generate(model, [long], FAST, seed=0)[0])
    with pytest.raises(ValueError, match="do not fit the model context"):
        generate(model, [long], FlowSamplingConfig(window_frames=40, context_frames=8, lookahead_frames=8))


def test_mean_codes_pick_the_code_nearest_the_expected_vector():
    codebook = torch.tensor([[0.0, 0.0], [4.0, 0.0], [2.1, 0.1], [0.0, 9.0]])  # [V=4, d=2]
    even = torch.log(torch.tensor([[0.5, 0.5, 1e-6, 1e-6]]))  # mean (2, 0): nearest is code 2, which has no mass
    assert mean_codes(even, codebook).tolist() == [2]
    sure = torch.tensor([[0.0, 0.0, 0.0, 20.0]])
    assert mean_codes(sure, codebook).tolist() == [3]


def test_mean_codes_over_one_hot_codes_are_the_argmax_ids():
    # One-hot code vectors make each frame's nearest-to-mean code its likeliest id, so greedy sampling must agree.
    model = tiny_flow(k=2, max_frames=32)
    greedy = FlowSamplingConfig(steps=4, temperature=0.0, lookahead_frames=8, context_frames=8)
    requests = [request(2, 6, 4), request(2, 40, 3, seed=1)]  # the second needs windows
    one_hot = torch.eye(48)
    assert all(torch.equal(a, b) for a, b in zip(generate(model, requests, greedy, seed=0),
                                                   generate(model, requests, greedy, seed=0, codebook=one_hot)))
    sampled = generate(model, requests, FAST, seed=0)
    means = generate(model, requests, FAST, seed=0, codebook=one_hot)
    assert [m.shape for m in means] == [s.shape for s in sampled] and not all(map(torch.equal, means, sampled))


def test_bad_inputs_raise_clear_errors():
    model = tiny_flow()
    good = request(2, 4, 3)
    with pytest.raises(ValueError, match="exactly 2 acoustic tokens per semantic token"):
        generate(model, [FlowRequest(good.semantic, good.prompt_acoustic[:-1], good.prompt_semantic)])
    with pytest.raises(ValueError, match=r"semantic ids must lie in \[0, 31\]"):
        generate(model, [FlowRequest(good.semantic + 32, good.prompt_acoustic, good.prompt_semantic)])
    with pytest.raises(ValueError, match=r"prompt acoustic ids must lie in \[0, 47\]"):
        generate(model, [FlowRequest(good.semantic, good.prompt_acoustic + 48, good.prompt_semantic)])
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, [FlowRequest(good.semantic[:0], good.prompt_acoustic, good.prompt_semantic)])
    with pytest.raises(ValueError, match="exactly 2 x semantic"):
        model.check_inputs(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="invalid flow sampling"):
        FlowSamplingConfig(steps=0)
    with pytest.raises(ValueError, match=r"codebook must be \[acoustic_vocab_size=48, code_dim\]"):
        generate(model, [good], codebook=torch.zeros(47, 8))


def test_masked_loss_scores_only_target_frames():
    model = tiny_flow()
    acoustic, semantic = torch.randint(0, 48, (2, 20)), torch.randint(0, 32, (2, 10))
    loss, count = model.masked_loss(acoustic, semantic, torch.tensor([8, 0]), torch.tensor([20, 12]),
                                    torch.Generator().manual_seed(0))
    assert loss.item() > 0 and 2 <= int(count) <= 12 + 12
    loss.backward()


def test_save_and_load_round_trip(tmp_path):
    model = tiny_flow()
    model.save_pretrained(tmp_path / "flow")
    loaded = AcousticFlow.from_pretrained(tmp_path / "flow")
    assert loaded.config == model.config
    requests = [request(2, 5, 3)]
    assert torch.equal(generate(loaded, requests, FAST, seed=1)[0], generate(model, requests, FAST, seed=1)[0])
