"""recipes/predict_acoustic.py: a token folder of second-stage acoustic ids for decoder training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flow import AcousticFlow, FlowConfig
from recipes import predict_acoustic, shards

VOCAB = 64


def token_folder(root, lengths=(9, 7, 6), speakers=("a", "a", "b")):
    folder = root / "tokens"
    folder.mkdir()
    rng = np.random.default_rng(0)
    utterances = [({"id": f"u{i}", "audio": f"u{i}.wav", "text": "", "speaker": speaker, "duration": n / 12.5},
                   rng.integers(0, VOCAB, n), rng.integers(0, VOCAB, 2 * n))
                  for i, (n, speaker) in enumerate(zip(lengths, speakers))]
    shards.write_json(folder / shards.META_NAME, {
        "format": shards.FORMAT, "codec": {"acoustic_per_semantic": 2, "path": "tiny", "config_sha256": "tiny"},
        "plan": {"manifest": str(root / "manifest.jsonl"), "num_shards": 1}})
    shards.write_shard(folder, 0, utterances, [], (0, len(utterances)))
    shards.build_index(folder)
    return folder


@pytest.fixture
def flow_dir(tmp_path):
    torch.manual_seed(0)
    model = AcousticFlow(FlowConfig(semantic_vocab_size=VOCAB, acoustic_vocab_size=VOCAB, acoustic_per_semantic=2,
                                    dim=32, num_layers=2, num_heads=4, intermediate_size=64, max_frames=400))
    model.save_pretrained(tmp_path / "flow")
    return tmp_path / "flow"


def test_predicted_folder_keeps_rows_and_semantic_ids_and_replaces_acoustic_ids(tmp_path, flow_dir):
    source = token_folder(tmp_path)
    argv = [str(source), "--flow", str(flow_dir), "--steps", "2", "--self-prompt-fraction", "0.5"]
    out = predict_acoustic.main([*argv, "--out", str(tmp_path / "pred"), "--seed", "3"])
    before, after = shards.TokenShardReader(source), shards.TokenShardReader(out)
    assert after.ids == before.ids
    assert after.meta["codec"] == before.meta["codec"] and after.meta["acoustic_source"]["seed"] == 3
    for utterance in before.ids:
        (semantic, acoustic), (new_semantic, new_acoustic) = before.get(utterance), after.get(utterance)
        assert np.array_equal(new_semantic, semantic) and new_acoustic.shape == acoustic.shape
        assert new_acoustic.min() >= 0 and new_acoustic.max() < VOCAB
        assert after.row(utterance)["audio"] == before.row(utterance)["audio"]
    # speaker b has one utterance: its first half prompts the rest and keeps its true ids
    assert np.array_equal(after.get("u2")[1][:6], before.get("u2")[1][:6])
    assert not np.array_equal(after.get("u0")[1], before.get("u0")[1])
    again = predict_acoustic.main([*argv, "--out", str(tmp_path / "again"), "--seed", "3"])
    assert all(np.array_equal(shards.TokenShardReader(again).get(u)[1], after.get(u)[1]) for u in before.ids)
    half = predict_acoustic.main([*argv, "--out", str(tmp_path / "half"), "--every", "2", "--offset", "1"])
    assert shards.TokenShardReader(half).ids == ["u1"]
    assert json.loads((half / shards.META_NAME).read_text())["plan"]["rows"] == 1


def test_predict_acoustic_refuses_an_existing_folder_and_a_bad_offset(tmp_path, flow_dir):
    source = token_folder(tmp_path)
    with pytest.raises(SystemExit, match="exists"):
        predict_acoustic.main([str(source), "--flow", str(flow_dir), "--out", str(source)])
    with pytest.raises(SystemExit, match="--offset 2 must be in"):
        predict_acoustic.main([str(source), "--flow", str(flow_dir), "--out", str(tmp_path / "x"), "--every", "2",
                               "--offset", "2"])
