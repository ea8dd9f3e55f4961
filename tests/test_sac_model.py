"""The SAC network and its checkpoints: released module tree, released numerics, strict loading."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from codec import SAC, ConvNeXtStackConfig, SACConfig, TokenError, load_sac, save_pretrained
from codec.checkpoint import CheckpointError, config_from_state, load_state_dict_strict, read_yaml, released_state_dict
from codec.modules import SamplingBlock

LAYOUTS = ["37_5", "62_5"]


def tiny_config(**overrides) -> SACConfig:
    """A few-thousand-parameter 37.5 Hz layout for tests that need no reference files."""
    base = dict(
        semantic_vocab_size=64, semantic_dim=32,
        semantic_adapter=ConvNeXtStackConfig(32, 16, 32, 2, 24, [1, 2]),
        acoustic_encoder_dim=4, acoustic_latent_dim=24, codebook_size=64,
        prenet=ConvNeXtStackConfig(48, 16, 32, 2, 24, [1, 2]),
        decoder_channels=32,
        semantic_decoder=ConvNeXtStackConfig(24, 16, 32, 2, 32, [1, 1]),
    )
    base.update(overrides)
    return SACConfig(**base)


def released(reference_dir, layout, **kwargs) -> SAC:
    return load_sac(reference_dir / f"sac_tiny_{layout}.pt", config=reference_dir / f"sac_tiny_{layout}.yaml",
                    **kwargs)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_size_state_dict_matches_released_keys(reference_dir, layout):
    expected = json.loads((reference_dir / "sac_full_keys.json").read_text())[layout]
    config = SACConfig.layout_37_5() if layout == "37_5" else SACConfig.layout_62_5()
    with torch.device("meta"):
        model = SAC(config)
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    # The manifest leaves out the semantic codebook (it is the GLM tokenizer's); we hold exactly that one row table.
    assert state.pop("semantic_encoder.codebook.weight") == [16384, 1280]
    assert state == expected


@pytest.mark.parametrize("layout", LAYOUTS)
def test_released_yaml_maps_to_the_builtin_presets(reference_dir, layout):
    yaml_cfg = read_yaml(reference_dir / "official_configs" / f"sac_16k_{layout}.yaml")
    preset = SACConfig.layout_37_5() if layout == "37_5" else SACConfig.layout_62_5()
    assert SACConfig.from_released_yaml(yaml_cfg, semantic_vocab_size=16384) == preset
    assert preset.acoustic_per_semantic == (2 if layout == "37_5" else 4)
    assert preset.token_rate_hz == (37.5 if layout == "37_5" else 62.5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_released_checkpoint_reproduces_reference_tensors_in_float64(reference_dir, layout):
    model = released(reference_dir, layout, dtype=torch.float64)
    io = load_file(str(reference_dir / f"sac_tiny_{layout}.io.safetensors"))
    with torch.inference_mode():
        encoder_out = model.acoustic_encoder(io["wav"])
        adapter_out = model.embed_semantic(io["semantic_tokens"])
        embedding = model.acoustic_quantizer.embed(io["acoustic_tokens"])
        prenet_out = model.prenet(torch.cat([adapter_out, embedding], dim=1))
    assert torch.equal(model.encode_acoustic(io["wav"]), io["acoustic_tokens"])
    for ours, name in ((encoder_out, "acoustic_encoder_out"), (adapter_out, "semantic_adapter_out"),
                       (embedding, "acoustic_embedding"), (prenet_out, "prenet_out")):
        torch.testing.assert_close(ours, io[name], rtol=0, atol=1e-9, msg=name)
    recon = model.decode(io["semantic_tokens"], io["acoustic_tokens"])
    torch.testing.assert_close(recon, io["recon"], rtol=0, atol=1e-9)


def test_ema_weights_are_preferred_and_bookkeeping_keys_dropped(reference_dir):
    ema = released_state_dict(reference_dir / "sac_tiny_37_5.pt")
    raw = released_state_dict(reference_dir / "sac_tiny_37_5.pt", prefer_ema=False)
    expected = load_file(str(reference_dir / "sac_tiny_37_5.weights.safetensors"))
    assert not {"initted", "step", "semantic_encoder.ema_count", "semantic_encoder.ema_weight"} & set(ema)
    assert all(torch.equal(ema[k], expected[k]) for k in ema)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if ema[k].is_floating_point())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_size_layout_is_inferred_from_checkpoint_keys_without_yaml(reference_dir, layout):
    keys = json.loads((reference_dir / "sac_full_keys.json").read_text())[layout]
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    state["semantic_encoder.codebook.weight"] = torch.empty(16384, 1280, device="meta")
    preset = SACConfig.layout_37_5() if layout == "37_5" else SACConfig.layout_62_5()
    assert config_from_state(state) == preset


def test_tiny_checkpoint_without_yaml_fails_with_shape_report(reference_dir):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_sac(reference_dir / "sac_tiny_37_5.pt")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_any_floating_dtype_at_load_time(reference_dir, dtype):
    model = released(reference_dir, "62_5", dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    wav = model.decode(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 12, dtype=torch.long))
    assert wav.shape == (1, 1, 3 * 1280) and wav.dtype == dtype


def test_sharded_folder_loads_the_same_weights(tmp_path):
    import json

    from codec.weights import INDEX_NAME

    torch.manual_seed(0)
    model = SAC(tiny_config()).eval()
    total = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    save_pretrained(model, tmp_path / "sac", max_shard_bytes=total // 3)
    shards = sorted(p.name for p in (tmp_path / "sac").glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "sac" / "model.safetensors").exists()
    assert all((tmp_path / "sac" / name).stat().st_size < total // 3 + 4096 for name in shards)
    index = json.loads((tmp_path / "sac" / INDEX_NAME).read_text())
    assert sorted(set(index["weight_map"].values())) == shards and index["metadata"]["total_size"] == total
    loaded = SAC.from_pretrained(tmp_path / "sac")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    (tmp_path / "sac" / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"names the shard {shards[1]}, which is missing"):
        SAC.from_pretrained(tmp_path / "sac")
    (tmp_path / "sac" / INDEX_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        SAC.from_pretrained(tmp_path / "sac")


def test_folder_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = SAC(tiny_config()).eval()
    save_pretrained(model, tmp_path / "sac")
    assert sorted(p.name for p in (tmp_path / "sac").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SAC.from_pretrained(tmp_path / "sac")
    assert loaded.config == model.config
    semantic, acoustic = torch.randint(0, 64, (2, 5)), torch.randint(0, 64, (2, 10))
    assert torch.equal(loaded.decode(semantic, acoustic), model.decode(semantic, acoustic))


def test_config_is_plain_json_data(tmp_path):
    config = tiny_config()
    config.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert "_target_" not in json.dumps(data)
    assert SACConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown SAC config fields"):
        SACConfig.from_dict({**data, "_target_": "os.system"})


def test_inconsistent_rates_are_rejected():
    with pytest.raises(ValueError, match="upsample"):
        tiny_config(acoustic_encoder_rates=[2, 4, 5, 8])  # 62.5 Hz encoder with 37.5 Hz adapter


def test_strict_load_lists_missing_and_unexpected_keys():
    model = SAC(tiny_config())
    state = dict(model.state_dict())
    state.pop("prenet.linear.bias")
    state["prenet.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys: prenet\.linear\.bias(.|\n)*unexpected keys: "
                                              r"prenet\.extra\.weight"):
        load_state_dict_strict(model, state, "test.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_released_loader_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"generator": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only"):
        released_state_dict(path)


def test_decode_rejects_bad_tokens_with_clear_errors():
    model = SAC(tiny_config()).eval()
    ok_s, ok_a = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(TokenError, match="exactly 2 acoustic tokens per semantic token"):
        model.decode(ok_s, ok_a[:, :7])
    with pytest.raises(TokenError, match=r"\[0, 63\]"):
        model.decode(ok_s + 64, ok_a)
    with pytest.raises(TokenError, match="must be integers"):
        model.decode(ok_s.float(), ok_a)
    with pytest.raises(TokenError, match="0 semantic frames"):
        model.decode(ok_s[:, :0], ok_a[:, :0])


def test_sampling_block_keeps_the_released_scaling():
    x = torch.randn(2, 5, 3)  # [B, T, D]
    assert torch.equal(SamplingBlock(3, 1)(x), 3 * x.transpose(1, 2))
    up = SamplingBlock(3, 2)
    repeated = x.transpose(1, 2).repeat_interleave(2, dim=2)
    deconv = up.de_conv_upsampler(x.transpose(1, 2))
    torch.testing.assert_close(up(x), 3 * repeated + 2 * deconv)


def test_output_length_is_tokens_times_hop():
    model = SAC(tiny_config()).eval()
    wav = torch.randn(1, 1, 3 * 1280)
    ids = model.encode_acoustic(wav)
    assert ids.shape == (1, 6)
    assert model.decode(torch.zeros(1, 3, dtype=torch.long), ids).shape == (1, 1, 3 * 1280)
    with pytest.raises(ValueError, match="multiple of 1280"):
        model.encode_acoustic(wav[..., :1000])


def test_training_forward_returns_losses_and_heads():
    model = SAC(tiny_config())
    out = model(torch.randn(2, 1, 2560), torch.randint(0, 64, (2, 2)))
    assert out["recon"].shape == (2, 1, 2560) and out["vq_loss"].shape == (2,)
    assert out["semantic_pred"].shape == (2, 32, 8) and out["speaker_pred"].shape == (2, 192)
    out["recon"].sum().backward()


def test_vq_revives_dead_codes_from_the_batch_repeatably():
    from codec.modules import FactorizedVQ

    def revived(seed):
        torch.manual_seed(0)
        vq = FactorizedVQ(16, codebook_size=32, codebook_dim=4, dead_code_threshold=0.05)
        z = torch.randn(2, 16, 10)
        vq.train()
        vq(z, seed=seed)  # cluster_size starts at zero: every code is put on a latent of this batch
        latents = vq.in_project(z).detach().transpose(1, 2).reshape(-1, 4)
        return vq, latents

    vq, latents = revived(seed=1)
    distance = torch.cdist(vq.codebook.weight.detach(), latents).min(1).values
    assert torch.all(distance < 1e-3)  # cdist rounding
    assert torch.equal(vq.codebook.weight, revived(seed=1)[0].codebook.weight)
    assert not torch.equal(vq.codebook.weight, revived(seed=2)[0].codebook.weight)
    used = vq.cluster_size > 0
    assert used.sum() >= 1 and torch.all(vq.cluster_size[used] >= 0.01)
    vq.eval()
    before = vq.codebook.weight.clone()
    vq(torch.randn(2, 16, 10) * 100)  # evaluation never touches the codebook
    assert torch.equal(vq.codebook.weight, before)
