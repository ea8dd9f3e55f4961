"""The corpus tokenization recipe on generated clips with the tiny random codec: CPU-only, offline.

Twelve manifest rows: eight usable voiced clips (two of exactly equal length, so the codec batches them; one 48 kHz
stereo) and four that must be skipped and reported (corrupt, too short, silent, too long).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest
import soundfile

from codec.audio import load_audio
from codec.codec import SpeechCodec
from flow.config import FlowConfig
from recipes import flow_data, lm_data, shards, tokenize_corpus
from recipes.data import ManifestError, train_and_eval

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARD_SIZE = 2
GOOD = {"equal_a": 0.8, "equal_b": 0.8, "short_ok": 0.55, "mid": 1.0, "stereo48k": 0.7, "long_ok": 1.2,
        "low": 0.6, "fast": 0.9}
BAD = {"corrupt": "unreadable", "tiny": "too_short", "quiet": "silent", "toolong": "too_long"}
ORDER = ["equal_a", "equal_b", "corrupt", "short_ok", "mid", "tiny", "stereo48k", "quiet", "long_ok", "low",
         "toolong", "fast"]  # 6 shards of 2 rows


def voiced(seconds: float, rate: int, f0: float, seed: int) -> np.ndarray:
    """A speech-like signal: harmonics of a wobbling f0 under a syllable-rate envelope, plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    wave = sum(np.sin(h * phase) / h for h in range(1, 9))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return 0.3 * wave * envelope / 2 + 0.005 * np.random.default_rng(seed).standard_normal(len(t))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny codec gains nothing from more threads, and on a busy machine they make it crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "wav").mkdir()
    for i, (name, seconds) in enumerate(GOOD.items()):
        if name == "stereo48k":
            left = voiced(seconds, 48000, 150.0, i)
            soundfile.write(folder / "wav" / f"{name}.wav", np.stack([left, 0.5 * left], axis=1), 48000)
        else:
            soundfile.write(folder / "wav" / f"{name}.flac", voiced(seconds, 16000, 100.0 + 15 * i, i), 16000)
    (folder / "wav" / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(0).bytes(3000))
    soundfile.write(folder / "wav" / "tiny.wav", voiced(0.2, 16000, 120.0, 20), 16000)
    soundfile.write(folder / "wav" / "quiet.wav", np.zeros(16000), 16000)
    soundfile.write(folder / "wav" / "toolong.wav", voiced(2.5, 16000, 120.0, 21), 16000)
    rows = []
    for i, name in enumerate(ORDER):
        audio = next((folder / "wav").glob(f"{name}.*"))
        rows.append({"id": name, "audio": str(audio.relative_to(folder)), "text": f"Clip number {i} is here.",
                     "speaker": f"spk{i % 3}", "duration_s": 1.0, "lang": "en"})
    rows[-1]["audio"] = str(folder / rows[-1]["audio"])  # an absolute path works too
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def args(corpus: pathlib.Path, codec: pathlib.Path, out: pathlib.Path, *extra: str) -> list[str]:
    return [str(corpus / "manifest.jsonl"), "--codec", str(codec), "--out", str(out), "--shard-size",
            str(SHARD_SIZE), "--max-seconds", "2", *extra]


@pytest.fixture(scope="module")
def reference(corpus, tiny_tts_dir, tmp_path_factory) -> pathlib.Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "tokens"
    tokenize_corpus.main(args(corpus, tiny_tts_dir / "codec", out, "--workers", "0"))
    return out


def test_every_clip_is_its_lone_encoding_and_bad_files_are_reported(corpus, tiny_tts_dir, reference):
    codec = SpeechCodec.from_pretrained(tiny_tts_dir / "codec")
    reader = shards.TokenShardReader(reference)
    assert reader.ids == [name for name in ORDER if name in GOOD]
    for item in reader:
        semantic, acoustic = codec.encode([load_audio(corpus / item.row["audio"], 16000)], 16000).clip(0)
        assert np.array_equal(item.semantic, semantic.numpy()) and np.array_equal(item.acoustic, acoustic.numpy())
        assert all(np.array_equal(x, y) for x, y in zip(reader.get(item.row["id"]), (item.semantic, item.acoustic)))
        assert len(item.acoustic) == 2 * len(item.semantic)
        assert item.row["duration"] == pytest.approx(GOOD[item.row["id"]], abs=1e-3)  # decoded, not the manifest's
        assert item.row["lang"] == "en" and item.row["text"].startswith("Clip") and item.row["speaker"]

    report = json.loads((reference / "report.json").read_text())
    assert {s["id"]: s["reason"] for s in report["skipped_files"]} == BAD
    assert "corrupt.wav" in next(s["detail"] for s in report["skipped_files"] if s["id"] == "corrupt")
    assert report["utterances"] == len(GOOD) and report["rows"] == len(ORDER)
    assert report["audio_hours"] == pytest.approx(sum(GOOD.values()) / 3600, rel=1e-3)
    assert report["last_run"]["audio_hours_per_hour"] > 0 and report["last_run"]["real_time_factor"] > 0
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["codec"]["acoustic_per_semantic"] == 2 and meta["codec"]["semantic_vocab_size"] == 64
    assert meta["codec"]["config_sha256"] == shards.folder_fingerprint(tiny_tts_dir / "codec")[0]


def snapshot(folder: pathlib.Path) -> dict[str, object]:
    """Every shard's arrays and metadata, every sidecar and the index (safetensors orders its header as it likes)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    files: dict[str, object] = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.json"))}
    for path in sorted(folder.glob("shard-*.safetensors")):
        with safe_open(str(path), framework="numpy") as handle:
            files[path.name] = (handle.metadata(), {k: v.tolist() for k, v in load_file(str(path)).items()})
    return {**files, "index.jsonl": (folder / "index.jsonl").read_bytes()}


def gone(group: int, seconds: float = 10.0) -> bool:
    """Whether every process of the group has exited within `seconds` (the rest are killed, so none leaks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    return False


def test_kill_9_mid_run_then_resume_loses_and_repeats_nothing(corpus, tiny_tts_dir, reference, tmp_path):
    out = tmp_path / "tokens"
    command = [sys.executable, str(ROOT / "recipes" / "tokenize_corpus.py"),
               *args(corpus, tiny_tts_dir / "codec", out, "--workers", "1")]
    with open(tmp_path / "log.txt", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.safetensors")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.02)  # into the next shard
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "log.txt").read_text()[-2000:]
    assert gone(process.pid), "an audio-loading worker outlived the killed run"
    num_shards = len(ORDER) // SHARD_SIZE
    finished = [i for i in range(num_shards) if shards.read_sidecar(out, i) is not None]
    assert 1 <= len(finished) < num_shards and not (out / "index.jsonl").exists(), finished
    kept = {i: (out / f"shard-{i:05d}.safetensors").stat().st_ino for i in finished}
    # what a kill at other moments leaves: a sidecar renamed but not its shard, a half-written temporary file
    unfinished = max(set(range(num_shards)) - set(finished))
    (out / f"shard-{unfinished:05d}.json").write_text('{"utterances": []}')
    (out / f".shard-{unfinished:05d}.safetensors.99999.tmp").write_bytes(b"half")

    with pytest.raises(shards.ShardError, match="plan.shard_size"):
        tokenize_corpus.main(args(corpus, tiny_tts_dir / "codec", out, "--shard-size", "3"))
    report = tokenize_corpus.main(args(corpus, tiny_tts_dir / "codec", out, "--workers", "0"))
    assert report["utterances"] == len(GOOD) and {s["id"] for s in report["skipped_files"]} == set(BAD)
    assert snapshot(out) == snapshot(reference)  # each id once, the very same tokens, shards and index
    assert {i: (out / f"shard-{i:05d}.safetensors").stat().st_ino for i in finished} == kept  # not redone
    assert not list(out.glob(".*.tmp"))

    (out / "index.jsonl").unlink()  # the index is derived data: rebuilt from the shards
    assert shards.main([str(out)], print_=lambda line: None) == 0
    assert (out / "index.jsonl").read_bytes() == (reference / "index.jsonl").read_bytes()


def test_processes_take_every_nth_shard_and_the_last_writes_the_index(corpus, tiny_tts_dir, reference, tmp_path,
                                                                       monkeypatch):
    out = tmp_path / "tokens"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):  # as two processes would, without the waiting
        monkeypatch.setenv("RANK", str(rank))
        result = tokenize_corpus.main(args(corpus, tiny_tts_dir / "codec", out, "--workers", "0"))
        assert (result is None) == (rank == 1)
        first = min(p.name for p in out.glob("shard-*.safetensors"))
        assert first == ("shard-00001.safetensors" if rank else "shard-00000.safetensors")
    assert snapshot(out) == snapshot(reference)
    assert len(result["last_run"]["processes"]) == 2


@pytest.fixture
def recipes_reset():
    """Each training run in this process starts from accelerate's defaults, as a new process would."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_a_token_folder_trains_the_lm_and_the_flow_model(reference, tiny_tts_dir, tmp_path, recipes_reset):
    from accelerate.state import AcceleratorState, GradientState

    from recipes import train_flow, train_lm

    common = ["--max-steps", "2", "--eval-fraction", "0", "--log-every", "1", "--codec", str(tiny_tts_dir / "codec")]
    result = train_lm.main(["--config", str(ROOT / "recipes/configs/lm_tiny.json"), "--output-dir",
                            str(tmp_path / "lm"), "--train-manifest", str(reference), "--text-tokenizer",
                            str(tiny_tts_dir / "lm"), *common])
    assert sorted(result.losses) == [1, 2] and (tmp_path / "lm" / "final" / "model.safetensors").is_file()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    result = train_flow.main(["--config", str(ROOT / "recipes/configs/flow_tiny.json"), "--output-dir",
                              str(tmp_path / "flow"), "--train-manifest", str(reference / "index.jsonl"), *common])
    assert sorted(result.losses) == [1, 2] and (tmp_path / "flow" / "final" / "model.safetensors").is_file()


def test_training_refuses_tokens_of_another_codec(reference, tiny_tts_dir, tmp_path):
    utterances = lm_data.read_manifest(reference, semantic_vocab_size=64)
    assert [u.id for u in utterances] == shards.TokenShardReader(reference).ids
    with pytest.raises(ManifestError, match="k=2 acoustic tokens per semantic token, the model takes 4"):
        flow_data.read_manifest(reference, FlowConfig(acoustic_per_semantic=4))
    with pytest.raises(ManifestError, match="64 semantic ids, more than the model's 32"):
        lm_data.read_manifest(reference / "index.jsonl", semantic_vocab_size=32)
    data = flow_data.DataConfig(train_manifest=str(reference), eval_fraction=0.0, codec="0" * 64)
    with pytest.raises(shards.ShardError, match="holds tokens of the codec at"):
        train_and_eval(data, lambda path: flow_data.read_manifest(path, FlowConfig()), seed=0)
    other = shutil.copytree(tiny_tts_dir / "codec", tmp_path / "codec")  # same config, other weights
    (other / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(shards.ShardError, match="weights"):
        train_and_eval(flow_data.DataConfig(train_manifest=str(reference), codec=str(other)), str, seed=0)


def test_several_token_folders_train_as_one_corpus_only_when_one_codec_made_them(reference, tmp_path):
    other = shutil.copytree(reference, tmp_path / "other")  # the same codec config, a later checkpoint's weights
    meta = json.loads((other / "meta.json").read_text())
    meta["codec"]["weights_sha256"] = "f" * 64
    (other / "meta.json").write_text(json.dumps(meta))
    index = other / "index.jsonl"
    index.write_text("".join(json.dumps({**row, "id": f"b-{row['id']}"}) + "\n"
                             for row in map(json.loads, index.read_text().splitlines())))
    read = partial(lm_data.read_manifest, semantic_vocab_size=64)
    with pytest.raises(ManifestError, match="token folders of different codecs"):
        train_and_eval(lm_data.DataConfig(train_manifest=[str(reference), str(other)]), read, seed=0)
    config_sha = meta["codec"]["config_sha256"]
    train, held = train_and_eval(lm_data.DataConfig(train_manifest=[str(reference), str(other)], codec=config_sha,
                                                    eval_manifest=[str(other)]), read, seed=0)
    ids = shards.TokenShardReader(reference).ids
    assert [u.id for u in train] == ids + [f"b-{i}" for i in ids] and [u.id for u in held] == [f"b-{i}" for i in ids]
    with pytest.raises(ManifestError, match="is in both"):
        train_and_eval(lm_data.DataConfig(train_manifest=[str(reference), str(reference)]), read, seed=0)
    with pytest.raises(ValueError, match="list of paths"):
        lm_data.DataConfig(train_manifest=[str(reference), ""])
