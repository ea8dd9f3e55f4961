"""The evaluation harness (`tts.evaluation`): list parsing, text normalisation, WER pooling, and end-to-end runs on
ground truth (real clips from ../shared/speech plus a noise file), the tiny codec and the tiny TTS."""

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tts.evaluation import ListError, missing_modules, read_list
from tts.evaluation.wer import WordErrors, mean_wer, normalize_for_wer, pooled_wer, word_totals

MISSING = missing_modules()
needs_eval = pytest.mark.skipif(bool(MISSING), reason=f"eval extra not installed (missing {', '.join(MISSING)}): "
                                                      f'pip install -e ".[eval]"')
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"  # the team's ../shared checkout
REPO = Path(__file__).resolve().parents[1]


# ---- unit tests (no metric models) ------------------------------------------------------------------------------
def test_list_parsing_resolves_paths_and_optional_fields(tmp_path):
    (tmp_path / "p.wav").write_bytes(b"")
    (tmp_path / "g.wav").write_bytes(b"")
    lst = tmp_path / "a.lst"
    lst.write_text("# comment\n\nu1|hi there|p.wav|say this\nu2|hi|p.wav|and this|g.wav\nu3|hi|p.wav|x||spk7\n")
    items = read_list(lst)
    assert [i.utt for i in items] == ["u1", "u2", "u3"]
    assert items[0].prompt_wav == tmp_path / "p.wav" and items[0].ground_truth_wav is None
    assert items[1].ground_truth_wav == tmp_path / "g.wav"
    assert items[2].ground_truth_wav is None and items[2].speaker == "spk7" and items[2].speaker_key == "spk7"
    assert items[0].speaker_key != "spk7"


@pytest.mark.parametrize("line, message", [
    ("u1|text|p.wav", "expected 4 to 6"),
    ("u1|text|p.wav||", "target_text is empty"),
    ("bad id|text|p.wav|target", "utterance id"),
    ("u1|text|missing.wav|target", "not found$"),
    ("u1|text|c/wavs/mbrola_us2/x.wav|target", "not found; .* `python -m recipes.corpora synth-list .*bad.lst`"),
    ("u0|text|p.wav|target", "already used on line 1"),
])
def test_list_errors_name_file_and_line(tmp_path, line, message):
    (tmp_path / "p.wav").write_bytes(b"")
    lst = tmp_path / "bad.lst"
    lst.write_text(f"u0|ok|p.wav|fine\n{line}\n")
    with pytest.raises(ListError, match=message) as err:
        read_list(lst)
    assert str(err.value).startswith(f"{lst}:2:")


def test_normalisation_makes_numbers_and_words_match():
    assert normalize_for_wer("42") == normalize_for_wer("forty two") == normalize_for_wer("Forty-two!") == "forty two"
    assert normalize_for_wer('"Don\'t" PANIC, Dr. Smith.') == "don't panic doctor smith"


def test_mean_per_utterance_and_pooled_wer():
    short = WordErrors(substitutions=1, deletions=0, insertions=0, ref_words=2)  # 50 %
    long = WordErrors(substitutions=0, deletions=1, insertions=1, ref_words=20)  # 10 %
    assert mean_wer([short, long]) == pytest.approx(0.30)  # Seed-TTS-eval: mean of 0.5 and 0.1
    assert pooled_wer([short, long]) == pytest.approx(3 / 22)  # all errors over all words
    assert WordErrors(0, 0, 2, 0).wer == 1.0 and WordErrors(0, 0, 0, 0).wer == 0.0
    assert mean_wer([]) is None and pooled_wer([]) is None


def test_word_totals_count_the_words_heard_right():
    short = WordErrors(substitutions=1, deletions=0, insertions=3, ref_words=2)
    long = WordErrors(substitutions=4, deletions=6, insertions=0, ref_words=20)
    assert word_totals([short, long]) == {"ref_words": 22, "hits": 11, "sub": 5, "del": 6, "ins": 3}
    assert short.wer == 2.0 and short.hits == 1  # a WER over 100 % can still hide words that were heard right


def _eval_run(folder: Path, seed: int, words_right: list[int | str], list_sha256: str = "abc") -> Path:
    """A results.json as `sac-tts eval` writes it, with rows of 10 reference words and the given words right
    (or a row status: "skipped", "failed")."""
    rows = [{"utt": f"u{i}", "status": "ok",
             "system": {"wer_lm": {"ref_words": 10, "sub": 10 - right, "del": 0, "ins": 0}}}
            if isinstance(right, int) else {"utt": f"u{i}", "status": right, "system": None}
            for i, right in enumerate(words_right)]
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"settings": {"list_sha256": list_sha256, "seed": seed},
                                                     "rows": rows}))
    return folder


def test_compare_averages_rows_over_seeds_before_pairing_and_refuses_other_lists(tmp_path, capsys):
    from tts.evaluation.compare import compare, load_run, main

    base = [load_run(_eval_run(tmp_path / "a0", 0, [5, 5, 5])), load_run(_eval_run(tmp_path / "a1", 1, [3, 5, 7]))]
    cand = [load_run(_eval_run(tmp_path / "b0", 0, [6, 5, 4]))]
    result = compare(base, cand)
    # seed-averaged baseline rows 4, 5, 6; candidate 6, 5, 4: differences +2, 0, -2
    assert result["baseline_words_right"] == [15, 15] and result["candidate_words_right"] == [15]
    assert result["per_row_difference"] == {"mean": 0.0, "standard_error": pytest.approx(2 / 3 ** 0.5)}
    assert (result["rows_better"], result["rows_worse"]) == (1, 1)
    other = load_run(_eval_run(tmp_path / "c", 0, [1, 2, 3], list_sha256="other"))
    with pytest.raises(ValueError, match="different lists or rows"):
        compare(base, [other])
    assert main(["--baseline", str(tmp_path / "a0"), "--candidate", str(tmp_path / "missing")]) == 2
    assert "no results.json" in capsys.readouterr().err
    # rows a system skips (no recording for vc) are left out on both sides; skipping other rows is refused
    vc = [load_run(_eval_run(tmp_path / f"vc{i}", 0, ["skipped", right, 5])) for i, right in enumerate((3, 7))]
    assert compare(vc[:1], vc[1:])["per_row_difference"]["mean"] == 2.0 and compare(vc[:1], vc[1:])["rows"] == 2
    with pytest.raises(ValueError, match="different lists or rows"):
        compare(vc, base)
    with pytest.raises(ValueError, match="row u1 failed"):
        load_run(_eval_run(tmp_path / "failed", 0, [5, "failed", 5]))


def test_missing_metric_package_names_the_eval_extra():
    from tts.evaluation.deps import EvalDependencyError, require

    with pytest.raises(EvalDependencyError, match=r'pip install -e "\.\[eval\]"'):
        require("surely_not_an_installed_module")


def test_heldout_list_pairs_utterances_of_the_same_speaker(tmp_path):
    spec = importlib.util.spec_from_file_location("make_lists", REPO / "recipes/eval_lists/make_shared_speech_list.py")
    make_lists = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_lists)
    rows = [{"id": f"{spk}_{i}", "audio": f"wavs/{spk}_{i}.wav", "speaker": spk, "duration": 4.0,
             "text": "Same sentence." if i == 2 else f"Sentence {i} of {spk}."} for spk in ("a", "b") for i in range(4)]
    rows[0]["duration"] = 40.0  # too long to be a prompt
    rows.append({"id": "c_0", "audio": "wavs/c_0.wav", "speaker": "c", "text": None, "duration": 3.0})
    (tmp_path / "data").mkdir()
    for row in rows:
        (tmp_path / "data" / row["audio"]).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / row["audio"]).write_bytes(b"")
    (tmp_path / "data" / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert make_lists.main(["heldout", "--manifest", str(tmp_path / "data" / "heldout.jsonl"), "--out",
                            str(tmp_path / "lists"), "--name", "h.lst", "--targets-per-speaker", "5"]) == 0
    items = read_list(tmp_path / "lists" / "h.lst")
    assert {i.speaker for i in items} == {"a", "b"}  # c has no transcript
    for item in items:
        assert item.prompt_wav.name == {"a": "a_1.wav", "b": "b_0.wav"}[item.speaker]  # first of a usable length
        assert item.ground_truth_wav.name.startswith(f"{item.speaker}_") and item.ground_truth_wav != item.prompt_wav
    assert len(items) == 6 and "../data/wavs/" in (tmp_path / "lists" / "h.lst").read_text()


@needs_eval
def test_word_errors_align_with_jiwer():
    from tts.evaluation.wer import word_errors

    e = word_errors("I have 42 cats.", "i have forty two hats and")
    assert (e.substitutions, e.deletions, e.insertions, e.ref_words) == (1, 0, 1, 5)
    assert word_errors("one two", "").deletions == 2


# ---- end to end ---------------------------------------------------------------------------------------------------
def _clip(manifest, speaker, split, text_start=None):
    for row in manifest:
        if row["speaker"] == speaker and row["split"] == split and (text_start is None
                                                                     or row["text"].startswith(text_start)):
            return SPEECH / row["audio"], row["text"]
    pytest.skip(f"clip of {speaker} ({split}) not in {SPEECH}")


def _run(list_path, out, system, **kw):
    from tts.evaluation import EvalSettings, run_evaluation
    from tts.evaluation.scorer import ScorerOptions

    started = time.perf_counter()
    report = run_evaluation(list_path, out, EvalSettings(system=system, progress=False,
                                                         scorer=ScorerOptions(dnsmos=kw.pop("dnsmos", True)), **kw))
    print(f"{system}: {time.perf_counter() - started:.1f} s, timing {report['timing']}")
    assert (out / "results.json").is_file() and (out / "results.md").is_file()
    assert json.loads((out / "results.json").read_text())["aggregates"] == report["aggregates"]
    return report


@needs_eval
def test_ground_truth_real_speech_beats_noise(tmp_path):
    if not (SPEECH / "manifest.jsonl").is_file():
        pytest.skip(f"real speech not found at {SPEECH} (it lives in the team's ../shared checkout)")
    manifest = [json.loads(line) for line in (SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
    p228, p228_text = _clip(manifest, "vctk_p228", "eval")
    p228_gt, p228_gt_text = _clip(manifest, "vctk_p228", "extra", "Please call Stella")
    aew, aew_text = _clip(manifest, "arctic_aew", "eval")
    aew_gt, aew_gt_text = _clip(manifest, "arctic_aew", "extra", "For the twentieth")
    libri, libri_text = _clip(manifest, "libri_8455", "eval")
    noise = tmp_path / "noise.wav"
    soundfile.write(noise, 0.1 * np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32), 16000)
    lst = tmp_path / "gt.lst"
    lst.write_text(f"p228|{p228_text}|{p228}|{p228_gt_text}|{p228_gt}|p228\n"
                   f"aew|{aew_text}|{aew}|{aew_gt_text}|{aew_gt}|aew\n"
                   f"noise|{libri_text}|{libri}|We have to reduce the number of plastic bags.|{noise}|libri\n")
    report = _run(lst, tmp_path / "out", "ground-truth")
    rows = {r["utt"]: r for r in report["rows"]}
    assert report["aggregates"]["counts"] == {"total": 3, "ok": 3, "failed": 0, "skipped": 0,
                                              "ground_truth_failed": 0}
    for r in rows.values():
        assert np.isfinite(r["system"]["wer_open"]["wer"]) and np.isfinite(r["system"]["wer_lm"]["wer"])
    good = max(rows[u]["system"]["wer_lm"]["wer"] for u in ("p228", "aew"))
    assert good <= 0.2 and rows["noise"]["system"]["wer_lm"]["wer"] >= good + 0.6, report["rows"]
    for u in ("p228", "aew"):  # same speaker (recording vs its prompt) > prompt vs another speaker's recording
        assert rows[u]["ground_truth"]["sim"] > rows[u]["ground_truth"]["sim_other_speaker"] + 0.1
    assert rows["noise"]["system"]["dnsmos"]["ovrl"] < rows["p228"]["system"]["dnsmos"]["ovrl"]
    gt = report["aggregates"]["ground_truth"]
    assert gt["wer_lm"]["mean"] is not None and gt["dnsmos"]["ovrl"] is not None
    assert "| WER list LM, mean per utt (%) |" in (tmp_path / "out" / "results.md").read_text()


def _tiny_list(tmp_path, texts, with_gt=True):
    """A harmonic 'voice' prompt and ground truths: scored mechanically, no real speech needed."""
    t = np.arange(int(2.5 * 16000)) / 16000
    wav = 0.3 * np.sin(2 * np.pi * 140 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(tmp_path / "prompt.wav", wav.astype(np.float32), 16000)
    lines = [f"u{i}|Hello world, this is a tiny test voice.|prompt.wav|{text}|{'prompt.wav' if with_gt else ''}"
             for i, text in enumerate(texts)]
    (tmp_path / "tiny.lst").write_text("\n".join(lines) + "\n")
    return tmp_path / "tiny.lst"


@needs_eval
def test_codec_system_through_the_cli(tmp_path, tiny_tts_dir):
    from tts.evaluation.cli import main

    lst = _tiny_list(tmp_path, ["The quick brown fox jumps over the lazy dog."])
    lst.write_text(lst.read_text() + "u9|no ground truth|prompt.wav|so it is skipped\n")
    out = tmp_path / "codec_out"
    assert main([str(lst), "--system", "codec", "--codec", str(tiny_tts_dir / "codec"), "--out", str(out),
                 "--no-dnsmos", "--quiet", "--threads", "1"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["aggregates"]["counts"]["ok"] == 1 and report["aggregates"]["counts"]["skipped"] == 1
    assert report["aggregates"]["system"]["rtf"]["total"] > 0 and (out / "wavs" / "u0.wav").is_file()
    assert report["settings"]["system"] == "codec" and report["environment"]["packages"]["pocketsphinx"]
    assert report["environment"]["torch_threads"] == 1


@needs_eval
def test_vc_system_converts_the_ground_truth_and_skips_rows_without_it(tmp_path, tiny_tts_dir):
    lst = _tiny_list(tmp_path, ["Hello."])
    lst.write_text(lst.read_text() + "u9|Hello world, this is a tiny test voice.|prompt.wav|no ground truth\n")
    report = _run(lst, tmp_path / "vc_out", "vc", model=str(tiny_tts_dir), seed=3, dnsmos=False, threads=1)
    assert report["aggregates"]["counts"]["ok"] == 1 and report["aggregates"]["counts"]["skipped"] == 1
    row = next(r for r in report["rows"] if r["utt"] == "u0")
    source_s = soundfile.info(tmp_path / "prompt.wav").duration
    assert soundfile.info(row["system"]["audio"]).duration == pytest.approx(source_s, abs=0.09)  # its timing kept
    assert report["settings"]["system"] == "vc" and report["aggregates"]["system"]["sim"] is not None


@needs_eval
def test_tts_system_with_the_tiny_model(tmp_path, tiny_tts_dir):
    # Short texts keep the random model's noise short: every second of output is recognised twice.
    lst = _tiny_list(tmp_path, ["A single step.", "Hello."], with_gt=False)
    soundfile.write(tmp_path / "short.wav", np.full(1600, 0.1, np.float32), 16000)  # 0.1 s: the TTS refuses it
    lst.write_text(lst.read_text() + "short|hi|short.wav|Hello world.\ngone|hi|nowhere.wav|Hello world.\n")
    report = _run(lst, tmp_path / "tts_out", "tts", model=str(tiny_tts_dir), seed=3, dnsmos=False, threads=1)
    assert report["aggregates"]["counts"] == {"total": 4, "ok": 2, "failed": 2, "skipped": 0,
                                              "ground_truth_failed": 0}, report["rows"]
    failed = {r["utt"]: r["error"] for r in report["rows"] if r["status"] == "failed"}  # reported, run went on
    assert "voice prompt is 0.1 s long" in failed["short"]
    assert f"{lst}:4: prompt audio" in failed["gone"] and "not found" in failed["gone"]
    system = report["aggregates"]["system"]
    assert system["rtf"]["total"] > 0 and system["wer_open"]["mean"] is not None and system["sim"] is not None
    assert (tmp_path / "tts_out" / "wavs" / "u0.wav").is_file()
    assert "Failed utterances" in (tmp_path / "tts_out" / "results.md").read_text()


def test_streaming_system_scores_what_the_stream_yields_and_times_its_first_audio(tmp_path, tiny_tts_dir):
    from tts.evaluation.systems import item_seed, make_system

    item = read_list(_tiny_list(tmp_path, ["Hello world, a streamed test."]))[0]
    system = make_system("tts-stream", str(tiny_tts_dir), seed=3)
    out = system.generate(item)
    voice, _ = system.voice(item)
    streamed = list(system.tts.stream(item.target_text, voice, system.options, seed=item_seed(3, item.utt)))
    assert len(streamed) > 1 and np.array_equal(out.wav, np.concatenate(streamed))
    assert 0 < out.extra["first_audio_s"] < out.compute_s
    assert system.describe()["system"] == "tts-stream"


@needs_eval
def test_streaming_system_reports_seconds_to_first_audio(tmp_path, tiny_tts_dir):
    lst = _tiny_list(tmp_path, ["Hello.", "A single step."], with_gt=False)
    report = _run(lst, tmp_path / "stream_out", "tts-stream", model=str(tiny_tts_dir), seed=3, dnsmos=False,
                  threads=1)
    first = report["aggregates"]["system"]["first_audio_s"]
    assert 0 < first["mean"] <= first["max"] and first["max"] == max(
        r["system"]["first_audio_s"] for r in report["rows"])
    assert "seconds to first audio" in (tmp_path / "stream_out" / "results.md").read_text()


def test_sampling_options_reach_the_system_and_its_description(tmp_path, tiny_tts_dir):
    from tts.evaluation.systems import make_system
    from tts.pipeline import SynthesisOptions

    item = read_list(_tiny_list(tmp_path, ["Hello."]))[0]
    default = make_system("vc", str(tiny_tts_dir), seed=3)
    cooler = make_system("vc", str(tiny_tts_dir), seed=3, options=SynthesisOptions(flow_temperature=0.3, flow_steps=4))
    assert cooler.describe()["options"] == {**default.describe()["options"], "flow_temperature": 0.3, "flow_steps": 4}
    assert "seed" not in cooler.describe()["options"]  # each utterance's seed derives from the run's
    assert np.array_equal(default.generate(item).wav, default.generate(item).wav)
    assert not np.array_equal(default.generate(item).wav, cooler.generate(item).wav)


def test_codec_with_a_random_stream_keeps_the_length_and_changes_the_audio(tmp_path, tiny_tts_dir):
    from tts.evaluation.systems import make_system

    item = read_list(_tiny_list(tmp_path, ["Hello."]))[0]
    plain = make_system("codec", codec=str(tiny_tts_dir / "codec")).generate(item).wav
    for stream in ("semantic", "acoustic"):
        system = make_system("codec", codec=str(tiny_tts_dir / "codec"), seed=3, random_stream=stream)
        first, again = system.generate(item).wav, system.generate(item).wav
        assert len(first) == len(plain) and np.array_equal(first, again) and not np.array_equal(first, plain)
        assert system.describe()["random_stream"] == stream
    with pytest.raises(ValueError, match="--random-stream applies to --system codec, not tts"):
        make_system("tts", str(tiny_tts_dir), random_stream="semantic")
