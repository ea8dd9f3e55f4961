"""Benchmarks run at CI size and write the JSON the README describes."""

import json

from benchmarks.lm_generate import main as lm_benchmark


def test_lm_benchmark_runs_on_cpu_and_writes_json(tmp_path):
    out = tmp_path / "lm.json"
    lm_benchmark(["--model", "tiny", "--device", "cpu", "--batch-sizes", "1", "2", "--new-tokens", "8",
                  "--repeats", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "lm_generate" and report["attention"] == "sdpa"
    impls = {(row["impl"], row["batch_size"]) for row in report["results"]}
    assert impls == {("ours", 1), ("hf_generate", 1), ("ours", 2), ("hf_generate", 2)}
    assert all(row["tokens_per_s"] > 0 and row["new_tokens"] == 8 for row in report["results"])


def test_flow_benchmark_runs_on_cpu_and_writes_json(tmp_path):
    from benchmarks.flow_generate import main as flow_benchmark

    out = tmp_path / "flow.json"
    flow_benchmark(["--model", "tiny", "--device", "cpu", "--batch-sizes", "1", "2", "--steps", "2",
                    "--target-seconds", "2", "--prompt-seconds", "1", "--repeats", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "flow_generate"
    assert [row["batch_size"] for row in report["results"]] == [1, 2]
    assert all(row["rtf"] > 0 and row["steps_per_s"] > 0 for row in report["results"])


def test_tts_latency_benchmark_reports_first_chunk_and_rtf(tiny_tts_dir, tmp_path):
    from benchmarks.tts_latency import main as tts_benchmark

    out = tmp_path / "tts.json"
    tts_benchmark(["--model", str(tiny_tts_dir), "--device", "cpu", "--texts", "short", "--repeats", "1",
                   "--out", str(out)])
    row = json.loads(out.read_text())["results"][0]
    assert row["text"] == "short" and 0 < row["first_chunk_s"] <= row["total_s"] and row["rtf"] > 0
