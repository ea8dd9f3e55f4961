"""recipes/export_default_model.py on tiny stage folders: the shipped folder loads, speaks, is fp16 without the
codec's training heads, records its sources, and refuses parts that do not fit or files over the size limits."""

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from codec import SAC, ConvNeXtStackConfig, SpeakerPredictorConfig
from flow import AcousticFlow, FlowConfig
from recipes.export_default_model import ExportError, export, main
from recipes.interpolate_weights import interpolate
from tts.pipeline import TTS

WEIGHT_FILES = ("codec/model.safetensors", "lm/model.safetensors", "flow/model.safetensors",
                "codec/semantic_tokenizer/model.safetensors")


def speech_like(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    voiced = sum(np.sin(2 * np.pi * 120 * h * t) / h for h in range(1, 6))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) + 0.05
    return (0.2 * voiced * envelope + 0.01 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def stages(tiny_tts_dir, tmp_path_factory):
    """Stage outputs laid out as the recipes write them; the codec still has its training-only heads."""
    root = tmp_path_factory.mktemp("stages")
    tokenizer = root / "tokenizer_run" / "final"
    shutil.copytree(tiny_tts_dir / "codec" / "semantic_tokenizer", tokenizer / "semantic_tokenizer")
    (tokenizer / "train_config.json").write_text(json.dumps({"train": {"max_steps": 11}}))

    base = SAC.from_pretrained(tiny_tts_dir / "codec")
    config = dataclasses.replace(base.config, semantic_decoder=ConvNeXtStackConfig(24, 16, 32, 1, 32, [1, 1]),
                                 speaker_predictor=SpeakerPredictorConfig(hidden_dim=16, output_dim=8))
    with_heads = SAC(config)
    missing, unexpected = with_heads.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("semantic_decoder.", "speaker_predictor.")) for k in missing)
    codec_run = root / "codec_run"
    with_heads.save_pretrained(codec_run / "checkpoints" / "step_000007" / "ema")
    (codec_run / "train_config.json").write_text(json.dumps({"train": {"max_steps": 7}}))

    lm, flow = root / "lm_run" / "final", root / "flow_run" / "final"
    shutil.copytree(tiny_tts_dir / "lm", lm)
    (lm / "train_config.json").write_text(json.dumps({"train": {"max_steps": 5}}))
    shutil.copytree(tiny_tts_dir / "flow", flow)
    return {"tokenizer": tokenizer / "semantic_tokenizer", "codec": codec_run / "checkpoints" / "step_000007" / "ema",
            "lm": lm, "flow": flow}


@pytest.fixture(scope="module")
def exported(stages, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "default_model"
    out.mkdir()
    (out / "README.md").write_text("model card\n")  # a card written by hand stays
    argv = [f"--{k}={v}" for k, v in stages.items()] + [f"--out={out}"]
    return out, main(argv)


def test_export_loads_and_speaks(exported):
    out, summary = exported
    tts = TTS.from_pretrained(out)
    for module in (tts.codec.model, tts.codec.tokenizer, tts.lm, tts.flow):
        assert {p.dtype for p in module.parameters()} == {torch.float32}  # fp16 files, float32 runtime
    voice = tts.clone_voice(speech_like(2.0), "This is an English sentence.", sample_rate=16000)
    wav = tts.synthesize("Hello world.", voice, seed=0, flow_steps=2)
    assert wav.dtype == np.float32 and len(wav) > 0 and np.isfinite(wav).all()
    assert summary["parameters"]["codec"] == sum(p.numel() for p in tts.codec.model.parameters())
    assert summary["parameters"]["total"] == sum(
        summary["parameters"][k] for k in ("tokenizer", "codec", "lm", "flow"))
    assert (out / "README.md").read_text() == "model card\n" and summary["kept_files"] == {"README.md": 11}


def test_export_is_fp16_without_training_heads(exported):
    out, summary = exported
    weights = sorted(out.rglob("*.safetensors"))
    assert {p.relative_to(out).as_posix() for p in weights} == {
        "codec/model.safetensors", "codec/semantic_tokenizer/model.safetensors", "lm/model.safetensors",
        "flow/model.safetensors"}
    for path in weights:
        with safe_open(str(path), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
            assert dtypes <= {"F16", "I64"} and "F16" in dtypes, (path, dtypes)
            if path.parent.name == "codec":
                assert not [k for k in f.keys() if k.startswith(("semantic_decoder.", "speaker_predictor."))]
    config = json.loads((out / "codec" / "config.json").read_text())
    assert config["semantic_decoder"] is None and config["speaker_predictor"] is None
    assert summary["training_heads_dropped"] == ["semantic_decoder", "speaker_predictor"]
    assert (out / "tts_config.json").is_file() and (out / "lm" / "text_tokenizer.model").is_file()


def test_export_json_records_sources_and_hashes(exported, stages):
    out, _ = exported
    record = json.loads((out / "export.json").read_text())
    assert record["dtype"] == "float16"
    assert record["sources"]["codec"]["path"] == str(stages["codec"])
    assert record["sources"]["codec"]["checkpoint_step"] == 7
    assert record["sources"]["codec"]["train_config"] == {"train": {"max_steps": 7}}
    assert record["sources"]["tokenizer"]["train_config"] == {"train": {"max_steps": 11}}
    assert record["sources"]["lm"]["train_config"] == {"train": {"max_steps": 5}}
    for name in WEIGHT_FILES:
        assert record["files"][name]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()


def test_exporting_the_same_parts_again_writes_the_same_bytes(exported, stages, tmp_path):
    # the recorded sha256 and the corpus tools' codec check hash file bytes, so equal weights must mean equal files
    out, _ = exported
    for i in range(3):  # safetensors orders a metadata map at random: one repeat could match by chance
        again = tmp_path / f"again{i}"
        export(**stages, out=again)
        for name in WEIGHT_FILES:
            assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_a_new_stage_beside_exported_parts_keeps_their_provenance_and_bytes(exported, stages, tmp_path):
    # shipping a retrained LM with the last release's codec, tokenizer and flow: those come from the exported
    # folder itself, whose export.json is then the only record of how they were trained
    out = tmp_path / "earlier"
    shutil.copytree(exported[0], out)
    flow_file = out / "flow" / "model.safetensors"  # as an older export wrote it: other metadata, same tensors
    save_file(load_file(str(flow_file)), str(flow_file), metadata={"format": "pt", "written_by": "an older export"})
    earlier = json.loads((out / "export.json").read_text())
    again = tmp_path / "next"
    export(tokenizer=out / "codec" / "semantic_tokenizer", codec=out / "codec", lm=stages["lm"], flow=out / "flow",
           out=again)
    record = json.loads((again / "export.json").read_text())
    for part in ("tokenizer", "codec", "flow"):
        carried = record["sources"][part]["exported_before"]
        assert carried["source"] == earlier["sources"][part] and carried["export"] == str(out / "export.json")
        assert record["sources"][part]["bytes_kept"] is True
    assert "exported_before" not in record["sources"]["lm"]
    assert record["sources"]["lm"]["train_config"] == {"train": {"max_steps": 5}}
    for name in WEIGHT_FILES:  # fp16 in, fp16 out: the unchanged parts are the same files
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    third = tmp_path / "third"  # carried twice: still the record of the export that trained it
    export(tokenizer=again / "codec" / "semantic_tokenizer", codec=again / "codec", lm=stages["lm"],
           flow=again / "flow", out=third)
    sources = json.loads((third / "export.json").read_text())["sources"]
    assert sources["codec"]["exported_before"] == record["sources"]["codec"]["exported_before"]


def test_size_limit_names_the_file_and_leaves_out_untouched(stages, tmp_path):
    out = tmp_path / "model"
    argv = [f"--{k}={v}" for k, v in stages.items()] + [f"--out={out}", "--max-file-mib=0.001"]
    with pytest.raises(SystemExit, match=r"per-file limit \(--max-file-mib\).*model\.safetensors is"):
        main(argv)
    assert not out.exists() and not list(tmp_path.glob(".model.export.*"))
    with pytest.raises(ExportError, match=r"over the 0\.001 MB limit \(--max-total-mb\)"):
        export(**stages, out=out, max_total_mb=0.001)


def test_refuses_parts_that_do_not_fit(stages, tmp_path):
    flow = AcousticFlow(FlowConfig(semantic_vocab_size=64, acoustic_vocab_size=32, acoustic_per_semantic=2, dim=32,
                                   num_layers=1, num_heads=4, intermediate_size=64, max_frames=400))
    flow.save_pretrained(tmp_path / "flow")
    with pytest.raises(ExportError, match="flow acoustic_vocab_size is 32 but the codec's is 64"):
        export(**{**stages, "flow": tmp_path / "flow"}, out=tmp_path / "out")

    codec = SAC.from_pretrained(stages["codec"])
    codec.semantic_encoder.codebook.weight.data.add_(0.1)
    codec.save_pretrained(tmp_path / "codec")
    with pytest.raises(ExportError, match="semantic codebook differs from the tokenizer's"):
        export(**{**stages, "codec": tmp_path / "codec"}, out=tmp_path / "out")

    (tmp_path / "not_a_model" / "codec").mkdir(parents=True)  # e.g. --out . in the repository
    with pytest.raises(ExportError, match="not a model folder"):
        export(**stages, out=tmp_path / "not_a_model")
    assert not (tmp_path / "out").exists()


def test_a_codec_over_the_file_limit_is_split_into_shards_that_load(exported, stages, tmp_path):
    out, _ = exported
    codec = out / "codec" / "model.safetensors"
    with safe_open(str(codec), framework="pt") as f:
        largest_tensor = max(f.get_tensor(k).numel() * 2 for k in f.keys())
    others = [out / "lm" / "model.safetensors", out / "flow" / "model.safetensors",
              out / "codec" / "semantic_tokenizer" / "model.safetensors"]
    limit = max(largest_tensor, *(p.stat().st_size for p in others)) + 8192  # everything fits but the whole codec
    if codec.stat().st_size <= 1.5 * limit:
        pytest.skip(f"the tiny codec ({codec.stat().st_size} B) is not well over the other files ({limit} B)")
    summary = export(**stages, out=tmp_path / "model", max_file_mib=limit / 2**20)
    shards = sorted((tmp_path / "model" / "codec").glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size <= limit for p in shards)
    assert not (tmp_path / "model" / "codec" / "model.safetensors").exists()
    loaded = TTS.from_pretrained(tmp_path / "model").codec.model  # export also checked it holds the same weights
    assert summary["parameters"]["codec"] == sum(p.numel() for p in loaded.parameters())


def test_an_interpolated_codec_carries_its_record_into_export_json(stages, tmp_path):
    mixed = tmp_path / "codec_mixed"
    interpolate(stages["codec"], stages["codec"], 0.5, mixed)
    export(**{**stages, "codec": mixed}, out=tmp_path / "out")
    record = json.loads((tmp_path / "out" / "export.json").read_text())["sources"]["codec"]
    assert record["interpolation"]["weight"] == 0.5 and record["interpolation"]["b"] == str(stages["codec"])
