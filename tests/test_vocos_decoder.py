"""The release code's other acoustic decoder (ConvNeXt backbone + inverse STFT), as a SAC config option."""

import pytest
import torch
import torch.nn.functional as F
from test_sac_model import tiny_config

from codec import SAC, SACConfig, save_pretrained
from codec.checkpoint import CheckpointError
from codec.config import VocosDecoderConfig
from codec.modules import ISTFTHead

VOCOS = VocosDecoderConfig(dim=16, intermediate_dim=32, num_layers=2, n_fft=1280)


def test_inverse_stft_inverts_the_matching_forward_stft():
    head = ISTFTHead(8, n_fft=1280, hop=320).double()
    head.window = head.window.double()
    signal = torch.randn(2, 320 * 25, dtype=torch.float64)
    trim = (1280 - 320) // 2  # frame t starts at sample t * hop - trim
    frames = F.pad(signal, (trim, trim + 320)).unfold(-1, 1280, 320)[:, :25] * head.window  # [B, T, n_fft]
    out = head.inverse(torch.fft.rfft(frames, dim=-1).transpose(1, 2))
    assert out.shape == (2, 1, 320 * 25)
    assert torch.allclose(out[:, 0], signal, atol=1e-12)


def test_vocos_codec_trains_decodes_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SAC(tiny_config(vocos_decoder=VOCOS))
    out = model(torch.randn(2, 1, 2560), torch.randint(0, 64, (2, 2)))
    assert out["recon"].shape == (2, 1, 2560)
    out["recon"].pow(2).mean().backward()
    assert model.acoustic_decoder.backbone.embed.weight.grad.abs().sum() > 0
    assert not any(name.startswith("acoustic_decoder.model") for name in model.state_dict())

    model.eval()
    semantic, acoustic = torch.randint(0, 64, (1, 3)), torch.randint(0, 64, (1, 6))
    with torch.no_grad():  # a loud decoder: decode() still returns audio in [-1, 1]
        model.acoustic_decoder.head.out.bias.fill_(3.0)
    wav = model.decode(semantic, acoustic)
    assert wav.shape == (1, 1, 3 * 1280) and wav.abs().max() <= 1.0
    save_pretrained(model, tmp_path / "sac")
    loaded = SAC.from_pretrained(tmp_path / "sac")
    assert loaded.config.vocos_decoder == VOCOS
    assert torch.equal(loaded.decode(semantic, acoustic), wav)


def test_vocos_window_must_overlap_twice():
    with pytest.raises(ValueError, match="twice the decoder hop"):
        tiny_config(vocos_decoder=VocosDecoderConfig(16, 32, 2, n_fft=320))
    assert SACConfig.from_dict({**tiny_config(vocos_decoder=VOCOS).to_dict()}).vocos_decoder == VOCOS


def test_a_new_decoder_starts_on_a_trained_codec_with_init_skip(tmp_path):
    from recipes.train_codec import load_init

    torch.manual_seed(0)
    save_pretrained(SAC(tiny_config()), tmp_path / "wave")
    wave_codec = tmp_path / "wave"
    fresh = SAC(tiny_config(vocos_decoder=VOCOS))
    decoder = {k: v.clone() for k, v in fresh.acoustic_decoder.state_dict().items()}
    load_init(fresh, wave_codec, ["acoustic_decoder"])
    trained = SAC.from_pretrained(tmp_path / "wave")
    assert torch.equal(fresh.acoustic_encoder.block[0].weight, trained.acoustic_encoder.block[0].weight)
    assert all(torch.equal(v, decoder[k]) for k, v in fresh.acoustic_decoder.state_dict().items())
    with pytest.raises(CheckpointError, match="acoustic_decoder"):  # without the skip, the decoders do not match
        load_init(SAC(tiny_config(vocos_decoder=VOCOS)), wave_codec, [])
    with pytest.raises(ValueError, match="does not match this model outside"):
        load_init(SAC(tiny_config(vocos_decoder=VOCOS)), wave_codec, ["prenet"])
