"""`recipes/grow_flow.py`: a deepened second stage computes what the original did, and trains from there."""

import pytest
import torch

from flow.config import FlowConfig
from flow.model import AcousticFlow
from recipes.grow_flow import grow, main, old_block_positions


def tiny_flow(seed: int = 0) -> AcousticFlow:
    torch.manual_seed(seed)
    model = AcousticFlow(FlowConfig(semantic_vocab_size=16, acoustic_vocab_size=32, acoustic_per_semantic=2, dim=32,
                                    num_layers=2, num_heads=2, intermediate_size=48, max_frames=64))
    with torch.no_grad():  # trained-looking weights: nonzero everywhere, norms away from one
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 33, (3, 20), generator=g), torch.randint(0, 16, (3, 10), generator=g)  # [B, Ta], [B, Ts]


def test_old_blocks_spread_evenly_in_order():
    assert old_block_positions(6, 9) == [0, 1, 3, 4, 6, 7]
    assert old_block_positions(2, 4) == [0, 2]
    assert old_block_positions(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="fewer than the model's 6"):
        old_block_positions(6, 4)


def test_grown_flow_gives_the_same_logits_and_masked_loss():
    model = tiny_flow()
    grown = grow(model, 5)
    acoustic, semantic = inputs()
    valid = torch.ones_like(acoustic, dtype=torch.bool)
    valid[0, 14:] = False
    with torch.no_grad():
        torch.testing.assert_close(grown(acoustic, semantic, valid), model(acoustic, semantic, valid),
                                   rtol=0, atol=1e-6)
    assert grown.config.num_layers == 5 and len(grown.blocks) == 5
    assert torch.equal(grown.blocks[2].qkv.weight, model.blocks[1].qkv.weight)  # 2 -> 5 puts old block 1 at 2


def test_grown_weights_follow_the_seed_alone():
    model = tiny_flow()
    state = torch.random.get_rng_state()
    a, b, c = grow(model, 3, seed=5), grow(model, 3, seed=5), grow(model, 3, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left where it was
    assert torch.equal(a.blocks[2].qkv.weight, b.blocks[2].qkv.weight)  # 2 -> 3: the new block is the last
    assert not torch.equal(a.blocks[2].qkv.weight, c.blocks[2].qkv.weight)


def test_new_blocks_learn_from_the_first_step():
    """Zero output projections must not freeze the new blocks: their gradient reaches `out` and `down` at once."""
    grown = grow(tiny_flow(), 3).train()
    acoustic, semantic = inputs()
    loss, count = grown.masked_loss(acoustic.clamp(max=31), semantic, torch.zeros(3, dtype=torch.long),
                                    torch.full((3,), 20), torch.Generator().manual_seed(0))
    (loss / count).backward()
    new = grown.blocks[2]  # 2 -> 3: old blocks at 0 and 1
    assert not new.out.weight.any() and not new.down.weight.any()
    assert float(new.out.weight.grad.abs().sum()) > 0 and float(new.down.weight.grad.abs().sum()) > 0


def test_cli_writes_a_folder_that_loads_strictly_and_refuses_to_overwrite(tmp_path, capsys):
    tiny_flow().save_pretrained(tmp_path / "flow")
    main([str(tmp_path / "flow"), "--num-layers", "4", "--out", str(tmp_path / "grown")])
    assert "(2 layers)" in capsys.readouterr().out
    loaded = AcousticFlow.from_pretrained(tmp_path / "grown")
    acoustic, semantic = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(acoustic, semantic), AcousticFlow.from_pretrained(tmp_path / "flow")(
            acoustic, semantic), rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="already exists"):
        main([str(tmp_path / "flow"), "--num-layers", "4", "--out", str(tmp_path / "grown")])
