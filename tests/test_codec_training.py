"""Codec training pieces: the multi-scale mel loss, the MPD + MRD discriminator, the GAN losses, and that a tiny
SAC learns a tone under the mel loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from codec import SAC, ConvNeXtStackConfig, SACConfig
from codec.discriminator import MPD, MRD, Discriminator, complex_spectrogram
from codec.losses import (
    MEL_BANDS,
    MEL_WINDOWS,
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_filterbank,
)

SR = 16000


def tone(samples: int, hz: float = 440.0, batch: int = 1) -> torch.Tensor:
    t = torch.arange(samples) / SR
    return (0.5 * torch.sin(2 * math.pi * hz * t)).expand(batch, 1, samples).clone()


def tiny_sac() -> SAC:
    return SAC(SACConfig(
        semantic_vocab_size=16, semantic_dim=16, semantic_adapter=ConvNeXtStackConfig(16, 16, 32, 1, 16, [1, 2]),
        acoustic_encoder_dim=4, acoustic_latent_dim=16, codebook_size=16,
        prenet=ConvNeXtStackConfig(32, 16, 32, 1, 16, [1, 2]), decoder_channels=32, semantic_decoder=None,
        speaker_predictor=None))


# ---- mel loss ------------------------------------------------------------------------------------------------------
def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for window, n_mels in zip(MEL_WINDOWS, MEL_BANDS):
        ours = mel_filterbank(SR, window, n_mels)
        ref = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=window, n_mels=n_mels, fmin=0, fmax=SR / 2))
        assert ours.shape == (n_mels, window // 2 + 1)
        torch.testing.assert_close(ours, ref.double(), atol=1e-7, rtol=1e-5)


def test_mel_loss_zero_for_identical_positive_otherwise():
    loss = MultiScaleMelLoss()
    x = tone(4000, batch=2)
    assert loss(x, x.clone()).item() == 0.0
    assert loss(x, tone(4000, hz=1000.0, batch=2)).item() > 0.1
    noisy = x + 0.01 * torch.randn_like(x)
    assert 0 < loss(x, noisy).item() < loss(x, torch.zeros_like(x)).item()


def test_mel_loss_shapes_and_trimming():
    loss = MultiScaleMelLoss()
    x = tone(4000)
    assert loss.log_mel(x, 2048).shape == (1, 320, 4000 // 512 + 1)
    assert loss.log_mel(x, 32).shape == (1, 5, 4000 // 8 + 1)
    # the target is trimmed to the reconstruction's length, as the release compares wav[..., :len(recons)]
    assert loss(x, torch.cat([x, torch.randn(1, 1, 100)], dim=-1)).item() == 0.0
    # silence clamps at 1e-5: log10 = -5 in every bin
    assert torch.all(loss.log_mel(torch.zeros(1, 1, 1000), 64) == -5)


def test_mel_loss_has_gradients():
    loss = MultiScaleMelLoss()
    x = (0.1 * torch.randn(1, 1, 3000)).requires_grad_()
    loss(x, tone(3000)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---- discriminator -------------------------------------------------------------------------------------------------
def test_complex_spectrogram_frames_match_stride():
    spec = complex_spectrogram(torch.randn(2, 1, 5000), 512)
    assert spec.shape == (2, 2, math.ceil(5000 / 128), 257)


def test_mpd_and_mrd_feature_maps():
    x = torch.randn(2, 1, 3200)
    fmap = MPD(3, channels=(4, 8, 8, 8, 8))(x)
    assert len(fmap) == 6 and fmap[-1].shape[1] == 1 and fmap[-1].shape[-1] == 3
    assert fmap[0].shape[2] == math.ceil((3200 + 3 - 3200 % 3) / 3 / 3)
    mrd = MRD(512, channels=4)
    assert mrd.bands == [(0, 25), (25, 64), (64, 128), (128, 192), (192, 257)]
    fmap = mrd(x)
    assert len(fmap) == 5 * 5 + 1 and fmap[-1].shape[:2] == (2, 1)


def test_discriminator_default_layout():
    d = Discriminator()
    assert [type(m).__name__ for m in d.discriminators] == ["MPD"] * 5 + ["MRD"] * 3
    assert [m.period for m in d.discriminators[:5]] == [2, 3, 5, 7, 11]
    assert [m.window_length for m in d.discriminators[5:]] == [2048, 1024, 512]
    assert any("parametrizations.weight.original0" in k for k in d.state_dict())


def test_discriminator_preprocess_is_level_invariant():
    x = torch.randn(2, 1, 1000) + 0.3
    y = Discriminator.preprocess(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.abs().amax(-1), torch.full((2, 1), 0.8))
    torch.testing.assert_close(Discriminator.preprocess(5 * x), y)


def test_discriminator_forward_backward_and_gan_losses():
    torch.manual_seed(0)
    d = Discriminator(mpd_channels=(4, 8, 8, 8, 8), mrd_channels=4)
    real = tone(2560, batch=2)
    fake = (0.1 * torch.randn(2, 1, 2560)).requires_grad_()
    real_maps, fake_maps = d(real), d(fake.detach())
    assert len(real_maps) == 8 and all(len(m) == 6 for m in real_maps[:5]) and all(len(m) == 26 for m in real_maps[5:])
    d_loss = discriminator_loss(real_maps, fake_maps)
    d_loss.backward()
    assert fake.grad is None  # the D step must not reach the generator
    assert all(p.grad is not None for p in d.parameters())

    d.zero_grad()
    real_maps, fake_maps = d(real), d(fake)
    g_loss = generator_adversarial_loss(fake_maps) + 2.0 * feature_matching_loss(real_maps, fake_maps)
    g_loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    # feature matching is zero against itself, and LSGAN targets are 0 / 1
    assert feature_matching_loss(real_maps, real_maps).item() == 0.0
    ones = [[torch.ones(3)]]
    assert discriminator_loss(ones, [[torch.zeros(3)]]).item() == 0.0
    assert generator_adversarial_loss(ones).item() == 0.0


# ---- end to end ----------------------------------------------------------------------------------------------------
def test_tiny_sac_learns_a_tone_under_the_mel_loss():
    torch.manual_seed(0)
    model, mel = tiny_sac(), MultiScaleMelLoss()
    wav = tone(2 * 1280, hz=300.0, batch=2)
    semantic = torch.randint(0, 16, (2, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    losses = []
    for _ in range(12):
        out = model(wav, semantic)
        assert out["recon"].shape == wav.shape
        loss = 15 * mel(out["recon"], wav) + out["vq_loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_acoustic_noise_swaps_that_share_of_frames_for_random_codes():
    torch.manual_seed(0)
    model = tiny_sac().eval()
    wav, semantic, share = tone(8 * 1280, hz=230.0, batch=2), torch.randint(0, 16, (2, 8)), torch.tensor([0.0, 1.0])
    acoustic, _, _ = model.acoustic_quantizer(model.acoustic_encoder(wav))  # [B, C, Ta]
    noisy = model.noisy_acoustic(acoustic, share, seed=3)
    assert torch.equal(noisy[0], acoustic[0]) and not torch.equal(noisy[1], acoustic[1])
    codebook = model.acoustic_quantizer.embed(torch.arange(16)[None])[0]  # [C, codes]
    distance = (noisy[1][:, :, None] - codebook[:, None, :]).abs().amax(dim=0)  # [Ta, codes]
    assert (distance.amin(dim=1) < 1e-6).all()  # every swapped frame is some code's embedding
    assert torch.equal(noisy, model.noisy_acoustic(acoustic, share, seed=3))  # seeded
    with torch.no_grad():
        clean = model(wav, semantic, seed=3)["recon"]
        noised = model(wav, semantic, seed=3, acoustic_noise=share)["recon"]
    assert torch.equal(clean[0], noised[0]) and not torch.equal(clean[1], noised[1])


def test_acoustic_noise_is_independent_of_the_recipes_share_draw():
    # the recipe draws each step's shares from the step seed; the frame mask must not replay those same numbers
    model, swapped = tiny_sac().eval(), 0
    acoustic = torch.full((4, 16, 8), 1e3)  # no code's embedding: a swapped frame shows
    for step in range(200):
        share = torch.rand(4, generator=torch.Generator().manual_seed(step))  # as train_step draws it
        swapped += int(model.noisy_acoustic(acoustic, share, seed=step)[0, 0, 0] != 1e3)
    assert 60 < swapped < 140, swapped  # clip 0's first frame goes with probability ~ its share, mean 0.5


# ---- the recipe ----------------------------------------------------------------------------------------------------
def make_token_folder(root: Path, codec: SAC | None = None, name: str = "tokens", shift: int = 0) -> Path:
    """Two tone clips (one shorter than a crop) and their semantic ids as a token folder, audio beside the
    manifest, as recipes/tokenize_corpus.py would leave them; acoustic ids are `codec`'s encoding (else zeros),
    each moved `shift` codes on (as another encoder's would differ)."""

    import numpy as np

    from codec.audio import load_audio, preprocess, save_wav
    from recipes import shards

    folder = root / name
    folder.mkdir()
    utterances = []
    for i, seconds in enumerate((0.6, 0.2)):
        save_wav(root / f"u{i}.wav", tone(int(seconds * SR), hz=200.0 + 100 * i)[0, 0], SR)
        frames = math.ceil(seconds * SR / 1280)
        acoustic = np.zeros(2 * frames, np.int64)
        if codec is not None:  # the whole clip, preprocessed as the crops are, padded to whole frames
            _, audio = preprocess(load_audio(root / f"u{i}.wav", SR))
            wav = torch.nn.functional.pad(torch.from_numpy(audio), (0, frames * 1280 - len(audio)))
            acoustic = (codec.encode_acoustic(wav[None, None])[0].numpy() + shift) % codec.config.codebook_size
        utterances.append(({"id": f"u{i}", "audio": f"u{i}.wav", "text": "", "speaker": None,
                            "duration": seconds}, np.arange(frames) % 16, acoustic))
    (root / "manifest.jsonl").write_text("")
    shards.write_json(folder / shards.META_NAME, {
        "format": shards.FORMAT, "codec": {"acoustic_per_semantic": 2, "path": "tiny", "config_sha256": "tiny"},
        "plan": {"manifest": str(root / "manifest.jsonl"), "num_shards": 1}})
    shards.write_shard(folder, 0, utterances, [], (0, 2))
    shards.build_index(folder)
    return folder


def test_codec_crops_align_audio_and_ids(tmp_path):
    from recipes.codec_data import CodecCrops, DataConfig

    crops = CodecCrops(DataConfig(tokens=str(make_token_folder(tmp_path)), segment_tokens=4))
    long, short = crops[(0, 1)], crops[(1, 1)]
    assert long["wav"].shape == (1, 4 * 1280) and long["semantic"].shape == (4,)
    assert short["semantic"].tolist() == [0, 1, 2, 0]  # 3 frames, then id-0 padding
    assert short["wav"][0, 3 * 1280:].abs().max() == 0 and short["wav"].abs().max() > 0
    # several folders of one codec read as one dataset, each item from its own folder
    both = CodecCrops(DataConfig(tokens=[str(make_token_folder(tmp_path, name="more")), crops.data.tokens],
                                 segment_tokens=4))
    assert len(both) == 4 and [(Path(f).name, list(r)) for f, r in both.folders] == [("more", [0, 1]),
                                                                                     ("tokens", [2, 3])]
    assert torch.equal(both[(3, 1)]["wav"], short["wav"]) and torch.equal(both[(3, 1)]["semantic"], short["semantic"])


@pytest.mark.parametrize("settings, message", [
    ({}, "give one of data.tokens"),
    ({"tokens": "t", "manifest": "m.jsonl"}, "give one of data.tokens"),
    ({"manifest": "m.jsonl"}, "need data.semantic_tokenizer"),
    ({"tokens": "t", "eval_manifest": "m.jsonl"}, "need data.semantic_tokenizer"),
    ({"tokens": "t", "eval_tokens": "e", "eval_manifest": "m.jsonl", "semantic_tokenizer": "s"}, "at most one"),
    ({"tokens": "t", "eval_clips": 0}, "at least 1"),
])
def test_codec_data_config_names_what_is_wrong(settings, message):
    from recipes.codec_data import DataConfig

    with pytest.raises(ValueError, match=message):
        DataConfig(**settings)


def test_train_codec_smoke(tmp_path):
    from recipes import train_codec

    tokens = make_token_folder(tmp_path)
    seen = []
    out = train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens),
                            "--eval-tokens", str(tokens), "--eval-clips", "3", "--output-dir", str(tmp_path / "run")],
                           on_step=lambda step, stats: seen.append(stats))
    assert len(seen) == 3 and "d_loss" not in seen[0] and "d_loss" in seen[1] and "fm" in seen[2]
    assert all(math.isfinite(v) for stats in seen for v in stats.values())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    assert (out / "final" / "ema" / "model.safetensors").is_file()
    # held-out scores at each checkpoint, from the EMA weights
    evals = [row for row in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "eval/mel" in row]
    assert [row["step"] for row in evals] == [2, 3]
    assert all(math.isfinite(row["eval/mel"]) and row["eval/mel"] > 0 and row["eval/codes_used"] >= 1
               for row in evals)
    assert (out / "checkpoints" / "step_000003" / "train_state.pt").is_file()
    model = SAC.from_pretrained(out / "final" / "ema")
    assert model.config.codebook_size == 16
    # resume continues from the last checkpoint rather than starting again
    train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens),
                      "--output-dir", str(tmp_path / "run"), "--resume", "auto", "--max-steps", "4"],
                     on_step=lambda step, stats: seen.append(step))
    assert seen[3:] == [4]
    # a time budget stops at the next log step with a checkpoint and final/
    budget = train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens),
                               "--output-dir", str(tmp_path / "budget"), "--max-minutes", "1e-9"])
    assert [p.name for p in (budget / "checkpoints").iterdir()] == ["step_000001"]
    assert (budget / "final" / "ema" / "model.safetensors").is_file()
    # a fresh start in a run's folder would overwrite its checkpoints: refused, with what to do instead
    with pytest.raises(FileExistsError, match="--resume auto"):
        train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens),
                          "--output-dir", str(tmp_path / "run")])
    with pytest.raises(FileNotFoundError, match="not a codec training checkpoint"):
        train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens),
                          "--output-dir", str(tmp_path / "run"), "--resume", str(tmp_path)])


def test_frozen_encoders_keep_every_token_while_the_decoder_trains(tmp_path):
    from recipes import train_codec

    tokens = make_token_folder(tmp_path)
    base = ["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tokens)]
    start = train_codec.main([*base, "--output-dir", str(tmp_path / "start"), "--max-steps", "1"]) / "final"
    frozen = ["semantic_encoder", "semantic_adapter", "acoustic_encoder", "acoustic_quantizer"]
    out = train_codec.main([*base, "--output-dir", str(tmp_path / "decoder"), "--init-from", str(start),
                            "--freeze", *frozen, "--acoustic-noise", "1.0"])
    before = SAC.from_pretrained(start)
    wav = tone(4 * 1280, hz=230.0)
    for folder in (out / "final", out / "final" / "ema"):
        after = SAC.from_pretrained(folder)
        for name in frozen:  # weights and buffers (the VQ's usage statistic, its revived codes) alike
            expected = getattr(before, name).state_dict()
            assert all(torch.equal(v, expected[k]) for k, v in getattr(after, name).state_dict().items()), name
        assert torch.equal(after.encode_acoustic(wav), before.encode_acoustic(wav))
    trained, expected = SAC.from_pretrained(out / "final").prenet.state_dict(), before.prenet.state_dict()
    assert not all(torch.equal(v, expected[k]) for k, v in trained.items())  # the decoder side did train
    with pytest.raises(ValueError, match="acoustic_noise is a share of frames in"):
        train_codec.main([*base, "--output-dir", str(tmp_path / "bad"), "--acoustic-noise", "1.5"])
    with pytest.raises(ValueError, match="does not have; its modules: semantic_encoder"):
        train_codec.main([*base, "--output-dir", str(tmp_path / "bad"), "--freeze", "encoder"])


def test_decoder_trains_on_the_token_folders_acoustic_ids(tmp_path):
    from recipes import train_codec
    from recipes.train_config import parse_args

    base = ["--config", "recipes/configs/codec_tiny.json", "--tokens", str(make_token_folder(tmp_path))]
    start_folder = train_codec.main([*base, "--output-dir", str(tmp_path / "start"), "--max-steps", "1"]) / "final"
    start = SAC.from_pretrained(start_folder)
    tokens = make_token_folder(tmp_path, start, "start_tokens")
    frozen = ["--freeze", "semantic_encoder", "acoustic_encoder", "acoustic_quantizer"]
    decoder = ["--config", "recipes/configs/codec_tiny.json", "--init-from", str(start_folder), *frozen,
               "--acoustic-from-tokens", "true", "--generator-warmup-steps", "100"]
    argv = [*decoder[:2], "--acoustic-from-tokens", "false"]
    parsed = vars(parse_args(argv, "codec", train_codec.DataConfig, train_codec.CodecTrainConfig))
    assert parsed["data.acoustic_from_tokens"] is False  # argparse's type=bool would read "false" as True
    seen = []
    out = train_codec.main([*decoder, "--tokens", str(tokens), "--eval-tokens", str(tokens), "--eval-clips", "2",
                            "--output-dir", str(tmp_path / "decoder")], on_step=lambda step, stats: seen.append(stats))
    assert len(seen) == 3 and all(stats["vq"] == 0 and stats["mel"] > 0 for stats in seen)  # no encoder pass
    evals = [row for row in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "eval/mel" in row]
    assert evals and all(row["eval/vq"] == 0 and math.isfinite(row["eval/mel"]) for row in evals)
    # a folder made by another acoustic encoder (every id differs) is refused before training
    shifted = make_token_folder(tmp_path, start, "shifted_tokens", shift=1)
    with pytest.raises(ValueError, match="shifted_tokens match what this codec's acoustic encoder makes"):
        train_codec.main([*decoder, "--tokens", str(tokens), str(shifted), "--output-dir", str(tmp_path / "shifted")])
    with pytest.raises(ValueError, match="tokenized with another codec"):  # the held-out folder is checked too
        train_codec.main([*decoder, "--tokens", str(tokens), "--eval-tokens", str(shifted),
                          "--output-dir", str(tmp_path / "shifted_eval")])
    with pytest.raises(ValueError, match="add acoustic_encoder and acoustic_quantizer to train.freeze"):
        train_codec.main([*decoder[:5], "--acoustic-from-tokens", "true", "--tokens", str(tokens),
                          "--output-dir", str(tmp_path / "unfrozen")])
    with pytest.raises(ValueError, match="data.acoustic_from_tokens reads the acoustic ids of token folders"):
        train_codec.main([*decoder, "--tokens", str(tokens), "--eval-manifest", "m.jsonl", "--semantic-tokenizer",
                          "t", "--output-dir", str(tmp_path / "manifest")])


def test_discriminator_warmup_trains_the_critic_before_the_generator_hears_it(tmp_path):
    from recipes import train_codec

    seen = []
    train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(make_token_folder(tmp_path)),
                      "--output-dir", str(tmp_path / "run"), "--generator-warmup-steps", "0",
                      "--discriminator-warmup-steps", "2"], on_step=lambda step, stats: seen.append(stats))
    assert [("d_loss" in stats, "adv" in stats, "fm" in stats) for stats in seen] == [(True, False, False)] * 2 + [
        (True, True, True)]
    with pytest.raises(ValueError, match="discriminator_warmup_steps must be >= 0"):
        train_codec.main(["--config", "recipes/configs/codec_tiny.json", "--tokens", str(tmp_path / "tokens"),
                          "--output-dir", str(tmp_path / "bad"), "--discriminator-warmup-steps", "-1"])
