"""SpeechCodec end to end: released tokens and audio on a real clip, batching, bad input."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from codec import CodecTokens, SpeechCodec, deinterleave, interleave
from codec.audio import AudioError, load_audio

LAYOUTS = ["37_5", "62_5"]


def load_codec(reference_dir, layout, dtype=torch.float64) -> SpeechCodec:
    return SpeechCodec.from_pretrained(reference_dir / f"sac_tiny_{layout}.pt",
                                       codec_config=reference_dir / f"sac_tiny_{layout}.yaml",
                                       semantic_tokenizer=reference_dir / "glm_tokenizer_tiny", dtype=dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_real_clip_gives_released_tokens_and_audio_in_float64(reference_dir, fixtures_dir, layout):
    codec = load_codec(reference_dir, layout)
    expected = load_file(str(reference_dir / f"sac_tiny_{layout}.e2e_audio_en.safetensors"))
    semantic, acoustic = codec.encode_file(fixtures_dir / "audio-en.wav")
    assert torch.equal(semantic, expected["semantic_tokens"])
    assert torch.equal(acoustic, expected["acoustic_tokens"])
    assert np.array_equal(interleave(semantic, acoustic), expected["interleaved_tokens"].numpy())
    recon = codec.model.decode(semantic[None], acoustic[None])[0, 0]
    torch.testing.assert_close(recon, expected["recon"], rtol=0, atol=1e-9)


def test_batch_of_different_lengths_equals_one_at_a_time(reference_dir, fixtures_dir):
    # float64 so that "equal" is exact: in float32 a batched convolution may round differently (~1e-8).
    codec = load_codec(reference_dir, "62_5", dtype=torch.float64)
    audio = load_audio(fixtures_dir / "audio-en.wav")
    clips = [audio[:30000], audio, audio[5000:47000], audio[:30000] * 0.5]
    batch = codec.encode(clips, batch_size=4)
    decoded = codec.decode(batch)
    for i, clip in enumerate(clips):
        single = codec.encode([clip])
        s, a = batch.clip(i)
        assert torch.equal(s, single.clip(0)[0]) and torch.equal(a, single.clip(0)[1])
        assert torch.equal(decoded[i], codec.decode(single)[0])
    assert batch.semantic_lengths.tolist() == [24, 64, 33, 24]  # ceil(samples / 1280)
    assert batch.acoustic_lengths.tolist() == [96, 256, 132, 96]


def test_other_sample_rates_and_stereo_are_accepted(reference_dir, fixtures_dir):
    import soxr

    codec = load_codec(reference_dir, "37_5", dtype=torch.float32)
    audio = load_audio(fixtures_dir / "audio-en.wav")[:32000]
    at_48k = soxr.resample(audio, 16000, 48000, quality="VHQ")
    stereo = np.stack([at_48k, np.zeros_like(at_48k)])  # [channels, samples]: the first channel is used
    tokens = codec.encode([stereo], sample_rate=48000)
    assert tokens.semantic_lengths.tolist() == [25] and tokens.audio_lengths.tolist() == [32000]
    assert codec.reconstruct([at_48k], sample_rate=48000)[0].shape == (32000,)


@pytest.mark.parametrize("wav, message", [
    (np.zeros(0), "empty"),
    (np.zeros(16000), "silent"),
    (np.full(16000, np.nan), "NaN"),
    (np.zeros((2, 3, 4)), "shape"),
])
def test_bad_audio_raises_clear_errors(reference_dir, wav, message):
    codec = load_codec(reference_dir, "37_5", dtype=torch.float32)
    with pytest.raises(AudioError, match=message):
        codec.encode([np.sin(np.arange(16000) / 5.0), wav])


def test_decode_validates_every_clip_before_decoding_any(reference_dir):
    codec = load_codec(reference_dir, "37_5", dtype=torch.float32)
    good = (torch.zeros(3, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    bad = (torch.zeros(3, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly 2 acoustic tokens per semantic token"):
        codec.decode(CodecTokens.from_clips([good, bad]))


def test_tokenizer_and_codec_must_share_the_semantic_codebook(reference_dir):
    codec = load_codec(reference_dir, "37_5", dtype=torch.float32)
    with torch.no_grad():
        codec.model.semantic_encoder.codebook.weight.add_(1.0)
    with pytest.raises(ValueError, match="not trained on this tokenizer"):
        SpeechCodec(codec.model, codec.tokenizer)


def test_interleave_round_trip_and_errors():
    semantic, acoustic = np.array([1, 2, 3]), np.array([10, 11, 20, 21, 30, 31])
    tokens = interleave(semantic, acoustic)
    assert tokens.tolist() == [1, 10, 11, 2, 20, 21, 3, 30, 31] and tokens.dtype == np.int64
    s, a = deinterleave(tokens, 2)
    assert s.tolist() == semantic.tolist() and a.tolist() == acoustic.tolist()
    with pytest.raises(ValueError, match="groups of 5"):
        deinterleave(tokens, 4)
