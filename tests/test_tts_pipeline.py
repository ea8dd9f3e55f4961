"""The TTS pipeline on a tiny random model: API, streaming, voices, safeguards and every kind of bad input."""

import dataclasses
import math
import threading

import numpy as np
import pytest
import soundfile
import soxr
import torch

from lm import length_bounds
from tts.cli import main
from tts.errors import TTSError
from tts.pipeline import TTS, SynthesisOptions, looks_degenerate
from tts.streaming import StreamingDecoder
from tts.text import split_text
from tts.voice import VoicePrompt
from tts.voices import VoiceNotFound, VoiceStore

PROMPT_TEXT = "This is an English sentence."


def speech_like(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced-noise stand-in for speech when ../shared is absent: harmonics with a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / sample_rate) / h for h in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) + 0.05
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tts(tiny_tts_dir):
    return TTS.from_pretrained(tiny_tts_dir)


@pytest.fixture(scope="module")
def voice(tts):
    return tts.clone_voice(speech_like(4.0), PROMPT_TEXT, sample_rate=16000)


def test_synthesize_is_seeded_and_speed_changes_duration(tts, voice):
    a = tts.synthesize("Hello world, this is a test.", voice, seed=1)
    assert a.dtype == np.float32 and a.ndim == 1 and len(a) > 0 and np.isfinite(a).all()
    assert np.array_equal(a, tts.synthesize("Hello world, this is a test.", voice, seed=1))
    fast = tts.synthesize("Hello world, this is a test.", voice, seed=1, speed=2.0)
    assert abs(len(fast) - len(a) / 2) <= 16000 * 0.05


def test_voice_conversion_keeps_the_source_timing_in_the_prompt_voice(tts, voice):
    source = speech_like(2.4, seed=5)
    a = tts.convert(source, voice, sample_rate=16000, seed=2)
    assert a.dtype == np.float32 and len(a) == len(source) and np.isfinite(a).all()
    assert np.array_equal(a, tts.convert(source, voice, sample_rate=16000, seed=2))
    # An untrained flow predicts near-uniform frames, whose mean codes agree across seeds: compare sampled codes.
    sampled = tts.convert(source, voice, sample_rate=16000, seed=2, flow_codes="sampled")
    assert not np.array_equal(sampled, tts.convert(source, voice, sample_rate=16000, seed=3, flow_codes="sampled"))
    resampled = soxr.resample(source, 16000, 44100)  # any rate: the codec resamples
    assert len(tts.convert(resampled, voice, sample_rate=44100, seed=2)) == len(a)
    assert abs(len(tts.convert(source, voice, sample_rate=16000, seed=2, speed=2.0)) - len(a) / 2) <= 16000 * 0.05
    with pytest.raises(TTSError, match="source speech is 0.0 s long"):
        tts.convert(source[:100], voice, sample_rate=16000)
    with pytest.raises(TTSError, match="pass sample_rate="):
        tts.convert(source, voice)


def test_streaming_decoder_matches_one_full_decode(tts, voice):
    g = torch.Generator().manual_seed(0)
    semantic, acoustic = torch.randint(0, 64, (90,), generator=g), torch.randint(0, 64, (180,), generator=g)
    whole = tts._decode(semantic, acoustic, voice)
    decoder = StreamingDecoder(tts.codec.model, voice, tts.config)
    chunks = []
    for start in range(0, 90, 7):  # tokens arrive in uneven bursts
        end = min(90, start + 7)
        chunks += list(decoder.push(semantic[start:end], acoustic[2 * start: 2 * end], final=end == 90))
    assert len(chunks) > 2
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-4)  # no seams


def test_stream_starts_before_the_sentence_is_generated(tts, voice, monkeypatch):
    from tts import pipeline

    produced = []
    real_stream = pipeline.lm_stream

    def counting_stream(*args, **kwargs):
        for token in real_stream(*args, **kwargs):
            produced.append(token)
            yield token

    monkeypatch.setattr(pipeline, "lm_stream", counting_stream)
    text = "It was the best of times, it was the worst of times, it was the age of wisdom."
    stream = tts.stream(text, voice, seed=5)
    first = next(stream)
    at_first_chunk = len(produced)
    rest = list(stream)
    total = len(produced)
    assert len(first) == tts.config.stream_chunk_tokens * 1280
    assert at_first_chunk < total  # audio came out while the LM was still generating
    assert sum(len(c) for c in [first, *rest]) >= total * 1280
    again = np.concatenate(list(tts.stream(text, voice, seed=5)))
    np.testing.assert_array_equal(again, np.concatenate([first, *rest]))  # seeded


def test_batch_synthesis_gives_one_wav_per_text(tts, voice):
    texts = ["Hello world.", "The rain in Spain stays mainly in the plain."]
    out = tts.synthesize_batch(texts, voice, seed=2)
    assert len(out) == 2 and all(len(w) > 0 for w in out)
    with pytest.raises(TTSError, match="text is empty"):
        tts.synthesize_batch(["fine", "  "], voice)


def test_long_text_is_split_and_streams_lazily(tts, voice):
    sentences = split_text("One two. " * 30, lambda s: len(s.split()), max_tokens=10)
    assert all(len(s.split()) <= 10 for s in sentences) and " ".join(sentences) == ("One two. " * 30).strip()
    huge = "This sentence is repeated to make a very long text. " * 1000  # ~52,000 characters
    first = next(tts.stream(huge, voice, seed=0))
    assert len(first) > 0


def test_runaway_guard_flags_capped_or_looping_generations():
    assert looks_degenerate(list(range(30)), max_tokens=30)
    assert looks_degenerate([1, 2] * 30, max_tokens=200)
    assert not looks_degenerate(list(range(50)), max_tokens=200)


def test_generation_far_slower_than_the_prompts_pace_is_cut_whole_or_streamed(tiny_tts_dir, voice):
    text = "Hello world, this is a test of a somewhat longer sentence."
    unbounded = TTS.from_pretrained(tiny_tts_dir)
    unbounded.config = dataclasses.replace(unbounded.config, max_length_vs_prompt=0.0, max_retries=0)
    paced = TTS.from_pretrained(tiny_tts_dir)
    paced.config = dataclasses.replace(paced.config, max_length_vs_prompt=0.2, max_retries=0)
    text_ids, prompt_ids = paced._encode_text(text), paced._encode_text(PROMPT_TEXT)
    pace = len(voice.semantic) / len(prompt_ids)  # semantic tokens per text token
    floor = len(text_ids) + 1  # never below the LM's own minimum length (1 token per text token) + 1
    cap = length_bounds(*paced._lm_request(text_ids, voice, SynthesisOptions()))[1]
    assert cap == max(floor, math.ceil(0.2 * pace * len(text_ids)))
    assert length_bounds(*unbounded._lm_request(text_ids, voice, SynthesisOptions()))[1] == 15 * len(text_ids)
    hop = paced.codec.model.config.semantic_hop_samples
    assert len(unbounded.synthesize(text, voice, seed=0)) > cap * hop  # the random LM speaks past the cap
    assert len(paced.synthesize(text, voice, seed=0)) <= cap * hop
    assert sum(map(len, paced.stream(text, voice, seed=0))) <= cap * hop


@pytest.mark.parametrize("text, message", [("", "empty"), ("   \n", "empty"), ("😀😀 !!", "nothing speakable")])
def test_bad_text_raises_clear_errors(tts, voice, text, message):
    with pytest.raises(TTSError, match=message):
        tts.synthesize(text, voice)


def test_emoji_and_mixed_scripts_are_spoken(tts, voice):
    assert len(tts.synthesize("Hello 😀 world, 你好, café!", voice, seed=0)) > 0


@pytest.mark.parametrize("seconds, message", [(0.2, "0.2 s long"), (300.0, "300.0 s long")])
def test_too_short_or_too_long_prompts_are_refused(tts, seconds, message):
    with pytest.raises(TTSError, match=message):
        tts.clone_voice(speech_like(seconds), PROMPT_TEXT, sample_rate=16000)


def test_silent_prompt_is_refused(tts):
    with pytest.raises(TTSError, match="silent"):
        tts.clone_voice(np.zeros(48000, dtype=np.float32), PROMPT_TEXT, sample_rate=16000)


@pytest.mark.parametrize("rate, channels, suffix", [(8000, 1, ".wav"), (48000, 1, ".flac"), (44100, 2, ".wav"),
                                                    (22050, 1, ".mp3")])
def test_prompt_files_of_any_rate_channels_and_format(tts, tmp_path, rate, channels, suffix):
    audio = soxr.resample(speech_like(3.0), 16000, rate)
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    path = tmp_path / f"prompt{suffix}"
    soundfile.write(path, data, rate)
    voice = tts.clone_voice(path, PROMPT_TEXT)
    assert abs(voice.duration_s - 3.0) < 0.1 and len(voice.acoustic) == 2 * len(voice.semantic)


def test_corrupt_or_non_audio_prompt_is_refused(tts, tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio")
    with pytest.raises(TTSError, match="notes.wav"):
        tts.clone_voice(tmp_path / "notes.wav", PROMPT_TEXT)
    with pytest.raises(TTSError, match="sample_rate"):
        tts.clone_voice(speech_like(2.0), PROMPT_TEXT)


def test_options_are_validated():
    with pytest.raises(TTSError, match="speed"):
        SynthesisOptions(speed=5.0)
    with pytest.raises(TTSError, match="invalid sampling"):
        SynthesisOptions(top_p=0.0)
    with pytest.raises(TTSError, match="min_length_vs_prompt"):
        SynthesisOptions(min_length_vs_prompt=3.0)
    with pytest.raises(TTSError, match="flow_codes must be one of mean, sampled, got 'average'"):
        SynthesisOptions(flow_codes="average")


def test_voice_store_round_trip_and_missing_names(tmp_path, voice):
    store = VoiceStore(tmp_path / "voices")
    store.add("alice", voice)
    loaded = store.get("alice")
    assert loaded.text == voice.text and np.array_equal(loaded.acoustic, voice.acoustic)
    assert store.list() == [{"name": "alice", "text": PROMPT_TEXT, "duration_s": round(voice.duration_s, 2)}]
    with pytest.raises(VoiceNotFound, match="no voice named 'bob'.*alice"):
        store.get("bob")
    with pytest.raises(TTSError, match="not allowed"):
        store.add("../evil", voice)
    store.remove("alice")
    assert store.list() == []


def test_concurrent_requests_for_the_same_voice(tts, voice, tmp_path):
    store = VoiceStore(tmp_path / "voices")
    store.add("shared", voice)
    errors, results = [], []

    def worker(i: int) -> None:
        try:
            store.add("shared", VoicePrompt.load(store.folder / "shared.safetensors"))  # rewrites race with reads
            results.append(tts.synthesize("Hello world.", store.get("shared"), seed=i))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 6


def test_cli_synthesize_and_voice_commands(tiny_tts_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.wav"
    soundfile.write(prompt, speech_like(3.0), 16000)
    common = ["--model", str(tiny_tts_dir), "--voices-dir", str(tmp_path / "voices")]
    assert main(["synthesize", "Hello there.", "--voice", str(prompt), "--voice-text", PROMPT_TEXT,
                 "-o", str(tmp_path / "a.wav"), "--seed", "1", *common]) == 0
    audio, rate = soundfile.read(tmp_path / "a.wav")
    assert rate == 16000 and len(audio) > 0
    assert main(["voice", "add", "me", str(prompt), "--text", PROMPT_TEXT, *common]) == 0
    assert main(["voice", "list", "--voices-dir", str(tmp_path / "voices")]) == 0
    assert capsys.readouterr().out.startswith("me\t3.0 s\t")
    (tmp_path / "texts.jsonl").write_text('{"id": "one", "text": "First."}\n{"id": "two", "text": "  "}\n')
    assert main(["synthesize", "--input", str(tmp_path / "texts.jsonl"), "--voice", "me",
                 "-o", str(tmp_path / "out"), *common]) == 1
    assert (tmp_path / "out" / "one.wav").is_file() and not (tmp_path / "out" / "two.wav").exists()
    assert "FAILED two" in capsys.readouterr().err
    assert main(["synthesize", "Hi.", "--voice", "nobody", "-o", str(tmp_path / "x.wav"), *common]) == 2
    assert "--voice nobody: no such audio file, and no saved voice of that name (saved: me)" in capsys.readouterr().err
    missing = str(tmp_path / "missing.wav")  # a mistyped path: named as a file, not refused as a voice name
    assert main(["synthesize", "Hi.", "--voice", missing, "--voice-text", "Hi.", "-o", str(tmp_path / "x.wav"),
                 *common]) == 2
    assert f"--voice {missing}: no such audio file" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
    for command in (["synthesize", "Hi."], ["convert", str(prompt)]):  # refused before any model is loaded
        assert main([*command, "--voice", "me", "-o", str(tmp_path / "x.mp3"), "--model", str(tmp_path / "none")]) == 2
        assert "x.mp3: the output is 16-bit PCM WAV; name the file .wav" in capsys.readouterr().err
    assert main(["convert", str(prompt), "--voice", "me", "-o", str(tmp_path / "vc.wav"), "--seed", "1", *common]) == 0
    assert soundfile.info(tmp_path / "vc.wav").frames == soundfile.info(prompt).frames
    assert main(["convert", str(tmp_path / "none.wav"), "--voice", "me", "-o", str(tmp_path / "x.wav"), *common]) == 2
    assert "source speech" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()
    assert main(["voice", "remove", "me", "--voices-dir", str(tmp_path / "voices")]) == 0


@pytest.mark.parametrize("command", ["synthesize", "convert", "eval"])
def test_sampling_flags_default_to_the_synthesis_options(command):
    from tts.cli import build_parser
    from tts.tts_cli import sampling_options

    required = {"synthesize": ["Hi.", "--voice", "v", "-o", "x.wav"], "convert": ["src.wav", "--voice", "v", "-o", "x"],
                "eval": ["list.lst", "--out", "o"]}[command]
    assert sampling_options(build_parser().parse_args([command, *required])) == SynthesisOptions()
    args = build_parser().parse_args([command, *required, "--flow-temperature", "0.5", "--cfg-scale", "1.5"])
    assert sampling_options(args, seed=4) == SynthesisOptions(seed=4, flow_temperature=0.5, cfg_scale=1.5)


def test_sampling_flags_help_names_the_synthesis_options_defaults():
    import argparse
    import re

    from tts.tts_cli import sampling_args

    parser = argparse.ArgumentParser()
    sampling_args(parser, lm=True)
    for action in parser._actions[1:]:  # after --help
        named = re.search(r"\(default ([\w.]+)", action.help)
        assert named, f"{action.dest}: its help names no default"
        default = getattr(SynthesisOptions(), action.dest)
        assert type(default)(named.group(1)) == default, action.dest
