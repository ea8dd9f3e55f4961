"""Semantic-tokenizer training (codec/semantic_training.py, recipes/train_tokenizer.py) and the codec recipe's
on-the-fly semantic ids and semantic-loss targets (recipes/codec_data.py with data.semantic_tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile
import torch

from codec.semantic_tokenizer import SemanticTokenizer
from codec.semantic_training import CTC_ALPHABET, TokenizerTrainer, TokenizerTrainingConfig, ctc_labels

TINY = {"d_model": 16, "encoder_attention_heads": 2, "encoder_ffn_dim": 32, "num_mel_bins": 16,
        "max_source_positions": 1500, "encoder_causal_convolution": True, "quantize_position": 2,
        "pooling_kernel_size": 4, "pooling_type": "avg", "pooling_position": 2, "quantize_vocab_size": 8}


def tiny_trainer(restart_interval: int = 100) -> TokenizerTrainer:
    torch.manual_seed(0)
    return TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1, restart_interval=restart_interval))


def write_corpus(folder: Path, count: int = 6) -> Path:
    """Clips of two tones whose order spells the text ('ab' or 'ba'): learnable from audio alone."""
    rows, sr = [], 16000
    for i in range(count):
        word = "ab" if i % 2 == 0 else "ba"
        t = np.arange(sr // 2) / sr
        parts = [0.3 * np.sin(2 * np.pi * (300 if c == "a" else 1200) * t) for c in word]
        path = folder / f"u{i}.wav"
        soundfile.write(path, np.concatenate(parts).astype(np.float32), sr)
        rows.append({"id": f"u{i}", "audio": path.name, "text": word, "speaker": "s", "duration": 1.0})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_ctc_labels_keep_letters_apostrophes_and_single_spaces():
    assert ctc_labels("Don’t  STOP, 42 now!") == [CTC_ALPHABET.index(c) + 1 for c in "don't stop now"]
    assert ctc_labels("...") == []


def test_ids_and_frames_match_tokenize_and_pooling():
    tokenizer = tiny_trainer().tokenizer.eval()
    audio = np.random.default_rng(0).normal(0, 0.1, 20000).astype(np.float32)
    ids, frames = tokenizer.ids_and_frames(audio)
    assert np.array_equal(ids, tokenizer.tokenize([audio])[0].numpy())
    assert frames.shape == (len(ids) * 4, 16)
    hidden = torch.from_numpy(frames[: 4 * (len(ids) - 1)]).view(len(ids) - 1, 4, 16).mean(1)  # full windows
    encoded = tokenizer.encode(torch.from_numpy(tokenizer.log_mel(audio))[None], torch.tensor([len(audio)]))
    assert torch.allclose(encoded["hidden"][0, : len(ids) - 1], hidden, atol=1e-5)


def test_dead_codes_restart_from_batch_vectors():
    model = tiny_trainer(restart_interval=2)
    z = torch.randn(5, 16)
    model._update_codebook(z, torch.zeros(5, dtype=torch.long), seed=0)  # first call: codebook from z
    assert all(any(torch.equal(row, v) for v in z) for row in model.tokenizer.codebook.weight)
    for step in range(2):
        model._update_codebook(z, torch.zeros(5, dtype=torch.long), seed=step)
    assert model.restart_dead_codes(z, seed=1) == 7  # every code but 0 went unused twice
    assert int(model.steps_since_used.max()) == 0


def test_recipe_learns_and_exports_a_loadable_tokenizer(tmp_path):
    from recipes.train_tokenizer import main

    manifest = write_corpus(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model": {"tokenizer": TINY, "post_layers": 1, "restart_interval": 20},
        "data": {"train_manifest": str(manifest), "max_tokens": 200, "num_workers": 0,
                 "feature_cache": str(tmp_path / "cache")},
        "train": {"lr": 3e-3, "warmup_steps": 5, "max_steps": 60, "save_every": 30, "log_every": 10,
                  "eval_every": 1000, "mixed_precision": "no"}}))
    result = main(["--config", str(config), "--output-dir", str(tmp_path / "run")])
    first, last = np.mean([result.losses[s] for s in range(1, 6)]), np.mean([result.losses[s] for s in range(56, 61)])
    assert last < 0.5 * first, (first, last)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 6
    tokenizer = SemanticTokenizer.from_pretrained(tmp_path / "run" / "final" / "semantic_tokenizer")
    trained = TokenizerTrainer.from_pretrained(tmp_path / "run" / "final")
    assert torch.equal(tokenizer.codebook.weight, trained.tokenizer.codebook.weight)
    audio, _ = soundfile.read(tmp_path / "u0.wav", dtype="float32")
    assert tokenizer.tokenize([audio])[0].shape == (13,)  # ceil(16000 / 1280)


def test_codec_crops_make_ids_and_frames_with_a_tokenizer(tmp_path):
    from recipes.codec_data import CodecCrops, DataConfig

    manifest = write_corpus(tmp_path, count=2)
    folder = tiny_trainer().export(tmp_path / "tok")
    crops = CodecCrops(DataConfig(manifest=str(manifest), semantic_tokenizer=str(folder), segment_tokens=5))
    example = crops[(0, 123)]
    assert example["wav"].shape == (1, 5 * 1280) and example["semantic"].shape == (5,)
    assert example["semantic_frames"].shape == (20, 16)
    tokenizer = SemanticTokenizer.from_pretrained(folder)
    from codec.audio import load_audio, preprocess
    ids = tokenizer.tokenize([preprocess(load_audio(tmp_path / "u0.wav"))[0]])[0].numpy()
    windows = [ids[s: s + 5] for s in range(len(ids) - 4)]
    assert any(np.array_equal(w, example["semantic"].numpy()) for w in windows)


def test_ctc_head_reads_the_unquantised_encoder_until_quantize_after():
    import copy
    import dataclasses

    torch.manual_seed(0)
    warm = TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1, quantize_after=1)).train()
    cold = copy.deepcopy(warm)
    cold.config = dataclasses.replace(warm.config, quantize_after=0)
    features = torch.from_numpy(warm.tokenizer.log_mel(np.random.default_rng(1).normal(0, 0.1, 12800)))[None]
    batch = {"features": features, "num_samples": torch.tensor([12800]), "labels": torch.tensor([[1, 2]]),
             "label_lengths": torch.tensor([2])}
    first = [model.loss(**batch, seed=0)[0] for model in (warm, cold)]
    assert not torch.allclose(first[0], first[1])  # warm read z itself, cold its codes
    second = [model.loss(**batch, seed=1)[0] for model in (warm, cold)]
    assert torch.allclose(second[0], second[1])  # both through the codebook now
    assert int(warm.forwards) == 2


def test_codec_recipe_embeds_ids_with_the_tokenizers_codebook(tmp_path):
    import pytest

    from codec import SAC, SpeechCodec
    from recipes import train_codec

    manifest = write_corpus(tmp_path, count=2)
    folder = tiny_trainer().export(tmp_path / "tok")
    config = json.loads(Path("recipes/configs/codec_tiny.json").read_text())
    config["model"].update(semantic_vocab_size=8, semantic_dim=16)
    config["data"].update(manifest=str(manifest), semantic_tokenizer=str(folder))
    config["train"].update(max_steps=2, generator_warmup_steps=10)
    (tmp_path / "codec.json").write_text(json.dumps(config))
    args = ["--config", str(tmp_path / "codec.json"), "--output-dir", str(tmp_path / "run")]
    out = train_codec.main(args)
    codebook = SemanticTokenizer.from_pretrained(folder).codebook.weight
    for part in ("final", "final/ema"):
        assert torch.equal(SAC.from_pretrained(out / part).semantic_encoder.codebook.weight, codebook)
        codec = SpeechCodec.from_pretrained(out / part)  # a whole codec folder: its tokenizer came along
        semantic, acoustic = codec.encode([np.full(2 * 1280, 0.1, np.float32)], 16000).clip(0)
        assert len(semantic) == 2 and len(acoustic) == 2 * codec.model.config.acoustic_per_semantic
    # fine-tuning starts from a model folder's weights (here: the run just made), codebook still the tokenizer's
    tuned = train_codec.main(["--config", str(tmp_path / "codec.json"), "--output-dir", str(tmp_path / "tuned"),
                              "--init-from", str(out / "final"), "--max-steps", "1"])
    assert torch.equal(SAC.from_pretrained(tuned / "final").semantic_encoder.codebook.weight, codebook)
    other = tiny_trainer()
    torch.nn.init.normal_(other.tokenizer.codebook.weight)
    with pytest.raises(ValueError, match="another semantic codebook"):
        train_codec.main(args + ["--resume", "auto", "--max-steps", "3",
                                 "--semantic-tokenizer", str(other.export(tmp_path / "other"))])


def test_auxiliary_ctc_head_trains_the_encoder_before_pooling():
    torch.manual_seed(0)
    model = TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1, aux_ctc_weight=0.5)).train()
    features = torch.from_numpy(model.tokenizer.log_mel(np.random.default_rng(1).normal(0, 0.1, 12800)))[None]
    batch = {"features": features, "num_samples": torch.tensor([12800]), "labels": torch.tensor([[1, 2]]),
             "label_lengths": torch.tensor([2])}
    model.loss(**batch, seed=0)[0].backward()
    assert model.aux_ctc_head.weight.grad.abs().sum() > 0
    plain = TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1))
    assert not any("aux" in name for name in plain.state_dict())  # the head exists only when weighted
    assert not any("aux" in name for name in model.tokenizer.state_dict())  # and is never exported


def test_positions_are_whisper_sinusoids_and_stay_fixed():
    from transformers.models.whisper.modeling_whisper import sinusoids

    model = tiny_trainer()
    for positions in (model.tokenizer.embed_positions, model.post_positions):
        assert torch.equal(positions.weight, sinusoids(*positions.weight.shape))
        assert not positions.weight.requires_grad
    scaled = TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1, position_scale=0.1))
    encoder, post = scaled.tokenizer.embed_positions.weight, scaled.post_positions.weight
    assert torch.allclose(encoder, sinusoids(*encoder.shape) * 0.1)
    assert torch.equal(post, sinusoids(*post.shape))  # the copies of a token still need telling apart


def test_spec_augment_masks_real_frames_only_is_seeded_and_off_in_eval():
    config = TokenizerTrainingConfig(tokenizer=TINY, post_layers=1, time_masks=2, time_mask_frames=10, freq_masks=1,
                                     freq_mask_bins=4)
    model = TokenizerTrainer(config)
    features = torch.randn(2, 16, 80)
    num_samples = torch.tensor([80 * 160, 40 * 160])  # the second utterance has 40 real frames, then padding
    a = model.spec_augment(features, num_samples, seed=3)
    assert torch.equal(a, model.spec_augment(features, num_samples, seed=3))
    assert any(not torch.equal(a, model.spec_augment(features, num_samples, seed=s)) for s in range(4, 8))
    assert torch.equal(a[1, :, 40:], features[1, :, 40:])  # padding untouched
    masked = sum(bool((model.spec_augment(features, num_samples, seed=s) != features).any()) for s in range(10))
    assert masked >= 8  # a mask of width 0 is possible, ten of them in a row are not
    plain = TokenizerTrainer(TokenizerTrainingConfig(tokenizer=TINY, post_layers=1))
    assert plain.spec_augment(features, num_samples, seed=3) is features

    model.eval()  # evaluation and read-outs never see masks: the loss is the same for every seed
    labels, lengths = torch.tensor([[1, 2], [2, 1]]), torch.tensor([2, 2])
    with torch.no_grad():
        losses = {model.loss(features, num_samples, labels, lengths, seed=s)[0].item() for s in (0, 1)}
    assert len(losses) == 1


def test_check_tokenizer_reads_out_the_runs_held_out_utterances(tmp_path):
    from recipes.check_tokenizer import edit_distance
    from recipes.check_tokenizer import main as check
    from recipes.train_tokenizer import main as train

    assert edit_distance(list("kitten"), list("sitting")) == 3 and edit_distance([], list("ab")) == 2
    manifest = write_corpus(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "model": {"tokenizer": TINY, "post_layers": 1, "aux_ctc_weight": 0.5},
        "data": {"train_manifest": str(manifest), "eval_fraction": 0.34, "max_tokens": 200, "num_workers": 0},
        "train": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 4, "eval_every": 1000, "mixed_precision": "no"}}))
    train(["--config", str(config), "--output-dir", str(tmp_path / "run")])
    report = check([str(tmp_path / "run" / "final"), "--json", str(tmp_path / "report.json")])
    assert report["utterances"] == 2 and 0 <= report["cer"] and 0 <= report["aux_cer"]
    assert json.loads((tmp_path / "report.json").read_text())["cer"] == report["cer"]
    on_all = check([str(tmp_path / "run" / "final"), "--manifest", str(manifest)])  # e.g. another run's held-out set
    assert on_all["utterances"] == 6 and on_all["manifest"] == str(manifest)
