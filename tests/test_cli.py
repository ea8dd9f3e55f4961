"""`sac-tts codec ...` end to end on the released tiny checkpoints and a real clip."""

import json
import shutil

import numpy as np
import pytest
import soundfile
from safetensors.torch import load_file

from tts.cli import main


def codec_args(reference_dir, layout, tokenizer=True):
    args = ["--codec", str(reference_dir / f"sac_tiny_{layout}.pt"),
            "--codec-config", str(reference_dir / f"sac_tiny_{layout}.yaml"), "--dtype", "float64", "--device", "cpu"]
    if tokenizer:
        args += ["--semantic-tokenizer", str(reference_dir / "glm_tokenizer_tiny")]
    return args


@pytest.mark.parametrize("layout", ["37_5", "62_5"])
def test_reconstruct_encode_decode_match_released_outputs(reference_dir, fixtures_dir, tmp_path, layout):
    expected = load_file(str(reference_dir / f"sac_tiny_{layout}.e2e_audio_en.safetensors"))
    clip = fixtures_dir / "audio-en.wav"

    assert main(["codec", "reconstruct", str(clip), "-o", str(tmp_path / "recon.wav"),
                 *codec_args(reference_dir, layout)]) == 0
    recon, rate = soundfile.read(tmp_path / "recon.wav")
    assert rate == 16000 and recon.shape == (81280,)  # trimmed to the input's duration
    assert np.abs(recon - expected["recon"][:81280].numpy()).max() < 1e-4  # 16-bit rounding

    assert main(["codec", "encode", str(clip), "-o", str(tmp_path / "tokens.npy"),
                 *codec_args(reference_dir, layout)]) == 0
    tokens = np.load(tmp_path / "tokens.npy")
    assert tokens.dtype == np.int64 and np.array_equal(tokens, expected["interleaved_tokens"].numpy())

    assert main(["codec", "decode", str(tmp_path / "tokens.npy"), "-o", str(tmp_path / "decoded.wav"),
                 *codec_args(reference_dir, layout, tokenizer=False)]) == 0
    decoded, _ = soundfile.read(tmp_path / "decoded.wav")
    assert decoded.shape == (81920,)
    assert np.abs(decoded - expected["recon"].numpy()).max() < 1e-4


def test_failed_files_are_reported_while_the_rest_complete(reference_dir, fixtures_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    shutil.copy(fixtures_dir / "audio-en.wav", inputs / "good.wav")
    shutil.copy(fixtures_dir / "audio-en.wav", inputs / "sub" / "nested.wav")
    (inputs / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    soundfile.write(inputs / "silent.wav", np.zeros(16000), 16000)

    code = main(["codec", "encode", str(inputs), "-o", str(tmp_path / "out"), *codec_args(reference_dir, "37_5")])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 of 4 files done" in err and "broken.wav" in err and "silent" in err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == ["good.npy", "sub/nested.npy"]


def test_jsonl_input_uses_index_for_output_names(reference_dir, fixtures_dir, tmp_path):
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"index": "utt1", "wav_path": str(fixtures_dir / "audio-en.wav")}) + "\n")
    assert main(["codec", "reconstruct", str(manifest), "-o", str(tmp_path / "out"),
                 *codec_args(reference_dir, "62_5")]) == 0
    assert (tmp_path / "out" / "utt1.wav").is_file()


def test_decode_of_tokens_from_the_other_layout_is_a_clear_failure(reference_dir, tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.zeros(3 * 3, dtype=np.int64))  # 37.5 Hz groups of 3, read as groups of 5
    code = main(["codec", "decode", str(tmp_path / "t.npy"), "-o", str(tmp_path / "o.wav"),
                 *codec_args(reference_dir, "62_5", tokenizer=False)])
    assert code == 1 and "groups of 5" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="not found"):
        main(["codec", "encode", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "x.npy")])
