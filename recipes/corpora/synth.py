"""A multi-speaker English corpus from the offline engines: seeded, parallel, resumable.

The plan is a pure function of (seed, voices, sentences, index): utterance i reads sentence `order[i mod n]` in the
voice `block_perm(i // S)[i mod S]`, so every speaker gets the same number of utterances and re-running with the same
seed rebuilds the same assignment. Generation walks the plan until the training split holds `hours` of audio;
an utterance whose WAV exists is not synthesised again, and WAVs are written to a temporary name and renamed, so a
killed run leaves only whole files behind.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from recipes.corpora import engines as eng
from recipes.corpora.manifest import read_manifest, write_manifest
from recipes.corpora.texts import SOURCES, Sentence

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: eng.Voice
    pitch_cents: int  # 0 = the voice as it is

    @property
    def augment(self) -> str | None:
        return f"pitch {self.pitch_cents:+d} cents" if self.pitch_cents else None


@dataclass(frozen=True)
class PlanItem:
    index: int
    id: str
    speaker: Speaker
    sentence: Sentence
    split: str  # "train" or "heldout"

    @property
    def audio(self) -> str:
        return f"wavs/{self.speaker.name}/{self.id}.wav"


def make_speakers(voices: list[eng.Voice], pitch_shifts: list[int]) -> list[Speaker]:
    """Each natural voice as it is plus one speaker per pitch shift; espeak voices already vary pitch themselves."""
    speakers = []
    for voice in voices:
        speakers.append(Speaker(voice.name, voice, 0))
        if voice.engine != "espeak":
            speakers += [Speaker(f"{voice.name}_p{c:+d}", voice, c) for c in pitch_shifts if c]
    return speakers


def pick_heldout(speakers: list[Speaker], n: int, seed: int) -> set[str]:
    """`n` identities (real voices, whatever engine and shift) whose every speaker is held out of training."""
    rng = random.Random(seed * 7919 + 17)
    natural = sorted({s.voice.identity for s in speakers if s.voice.engine != "espeak"})
    formant = sorted({s.voice.identity for s in speakers} - set(natural))
    if n >= len(natural) + len(formant) and n > 0:
        raise ValueError(f"--holdout-speakers {n}: only {len(natural) + len(formant)} identities, none left to train")
    picked = rng.sample(natural, min(n, len(natural)))  # natural voices first: they are what evaluation needs
    return set(picked + rng.sample(formant, n - len(picked)))


def named_heldout(speakers: list[Speaker], identities: tuple[str, ...], failed: dict[str, str]) -> set[str]:
    """The held-out identities as named. The seeded pick draws from the voices that pass their probe, so one voice
    failing on another machine moves it; naming them keeps a model's evaluation voices out of its training.
    `failed`: identity -> why its voice failed the probe, for the error message."""
    available = {s.voice.identity for s in speakers}
    for identity in identities:
        if identity not in available:
            why = f" (its voice failed: {failed[identity]})" if identity in failed else ""
            raise SystemExit(f"--holdout-identities: no working voice speaks as {identity!r}{why}; "
                             f"the identities here are {', '.join(sorted(available))}")
    if len(identities) >= len(available):
        raise SystemExit(f"--holdout-identities {','.join(identities)}: no identity would be left to train")
    return set(identities)


class Plan:
    def __init__(self, sentences: list[Sentence], speakers: list[Speaker], seed: int, heldout: set[str]):
        if not sentences or not speakers:
            raise ValueError("the plan needs at least one sentence and one speaker")
        self.sentences, self.speakers, self.seed, self.heldout = sentences, speakers, seed, heldout
        self.order = list(range(len(sentences)))
        random.Random(seed).shuffle(self.order)
        self._blocks: dict[int, list[int]] = {}

    def _speaker(self, i: int) -> Speaker:
        block = i // len(self.speakers)
        if block not in self._blocks:
            perm = list(range(len(self.speakers)))
            random.Random(f"{self.seed}:{block}").shuffle(perm)
            self._blocks[block] = perm
        return self.speakers[self._blocks[block][i % len(self.speakers)]]

    def item(self, i: int) -> PlanItem:
        speaker = self._speaker(i)
        sentence = self.sentences[self.order[i % len(self.order)]]
        split = "heldout" if speaker.voice.identity in self.heldout else "train"
        # the seed is in the id so that corpora of several seeds merge; seed 0 keeps the first release's ids
        utterance = f"{speaker.name}-{i:06d}" if self.seed == 0 else f"{speaker.name}-s{self.seed}-{i:06d}"
        return PlanItem(i, utterance, speaker, sentence, split)

    def __iter__(self) -> Iterator[PlanItem]:
        i = 0
        while True:
            yield self.item(i)
            i += 1


# ---- one utterance (runs in a worker) ---------------------------------------------------------------------------
def _trim(audio: np.ndarray, sr: int, pad_s: float = 0.1) -> np.ndarray:
    """Leading/trailing silence off (relative threshold), keeping a short pad so onsets are not clipped."""
    loud = np.flatnonzero(np.abs(audio) > 0.02 * float(np.abs(audio).max()))
    if loud.size == 0:
        return audio
    pad = int(pad_s * sr)
    return audio[max(0, loud[0] - pad): loud[-1] + pad]


def pitch_shift(audio: np.ndarray, sr: int, cents: int) -> tuple[np.ndarray, str]:
    """sox's WSOLA pitch shift (tempo kept); without sox, resampling (pitch and tempo move together)."""
    try:
        with tempfile.TemporaryDirectory(prefix="pitch-") as tmp:
            src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
            sf.write(src, audio, sr, subtype="FLOAT")
            subprocess.run(["sox", str(src), str(dst), "pitch", str(cents)], check=True, capture_output=True)
            out, _ = sf.read(dst, dtype="float32")
        return out, "sox pitch"
    except (OSError, subprocess.CalledProcessError):
        factor = 2 ** (cents / 1200)
        return soxr.resample(audio, sr, sr / factor).astype(np.float32), "resample"


def render(item: PlanItem, out_dir: str) -> tuple[dict, bool]:
    """Synthesise one plan item into its WAV (atomically): (its manifest row or {"error": ...}, synthesised now?)."""
    path = Path(out_dir) / item.audio
    fresh = not path.is_file()
    try:
        if fresh:
            audio, sr = eng.synthesize(item.speaker.voice, item.sentence.text)
            if audio.ndim > 1:
                audio = audio.mean(axis=1)
            if sr != SAMPLE_RATE:
                audio = soxr.resample(audio, sr, SAMPLE_RATE)
            if item.speaker.pitch_cents:
                audio, _ = pitch_shift(audio, SAMPLE_RATE, item.speaker.pitch_cents)
            audio = _trim(np.asarray(audio, np.float32), SAMPLE_RATE)
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            if audio.size < SAMPLE_RATE // 4 or peak < 1e-3:
                raise RuntimeError(f"engine produced {audio.size / SAMPLE_RATE:.2f} s, peak {peak:.4f}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
            sf.write(tmp, audio * (0.9 / peak), SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp, path)
        duration = sf.info(str(path)).duration
    except Exception as exc:  # noqa: BLE001 - one bad utterance must not stop the corpus
        return {"id": item.id, "speaker": item.speaker.name, "error": f"{type(exc).__name__}: {exc}"[:400]}, fresh
    return manifest_row(item, duration), fresh


def manifest_row(item: PlanItem, duration: float) -> dict:
    voice = item.speaker.voice
    book = SOURCES.get(item.sentence.source)
    text_license = book.license if book else "see --text-license"
    return {
        "id": item.id, "audio": item.audio, "text": item.sentence.text, "speaker": item.speaker.name,
        "duration": round(duration, 4), "split": item.split, "engine": voice.engine, "voice": voice.name,
        "identity": voice.identity, "augment": item.speaker.augment, "text_source": item.sentence.source,
        "license": f"text: {text_license}; voice: {voice.license}", "synthetic": True,
    }


def _probe(voice: eng.Voice) -> tuple[str, str | None]:
    return voice.name, eng.probe(voice)


def _render_star(args: tuple[PlanItem, str]) -> tuple[dict, bool]:
    return render(*args)


# ---- the whole corpus ---------------------------------------------------------------------------------------------
@dataclass
class SynthConfig:
    out: Path
    hours: float
    seed: int = 0
    workers: int = 2
    engines: list[str] | None = None  # None = every engine that is installed
    espeak_voices: int = 16
    pitch_shifts: tuple[int, ...] = (-300, 300)
    holdout_speakers: int = 0
    holdout_identities: tuple[str, ...] = ()  # named instead of picked by seed (not with holdout_speakers)
    max_utterances: int | None = None  # a hard cap (tests)
    exclude: tuple[Path, ...] = ()  # manifests whose voice identities and sentences this corpus must not use
    exclude_texts: tuple[Path, ...] = ()  # manifests whose sentences (only) it must not read: earlier corpora
    batch: int = 32  # plan items handed to the pool at a time; the stop check runs between batches


def load_exclusions(manifests: tuple[Path, ...]) -> tuple[set[str], set[str]]:
    """(voice identities, sentence texts) of earlier manifests, e.g. another corpus's held-out voices, so that a
    second corpus adds training data without reading their sentences or speaking in their voices."""
    identities: set[str] = set()
    texts: set[str] = set()
    for path in manifests:
        for row in read_manifest(path):
            if row.get("identity"):
                identities.add(row["identity"])
            if row.get("text"):
                texts.add(row["text"])
    return identities, texts


def _check_settings(cfg: SynthConfig, voices: list[eng.Voice], sentences: list[Sentence], heldout: set[str],
                    excluded: set[str]) -> None:
    """Resuming with other settings would mix two plans in one folder: refuse instead."""
    settings = {"seed": cfg.seed, "voices": [v.name for v in voices], "pitch_shifts": list(cfg.pitch_shifts),
                "heldout_identities": sorted(heldout), "n_sentences": len(sentences),
                "first_sentences": [s.text for s in sentences[:3]]}
    if excluded:  # only when used, so that folders made before the option still resume
        settings["excluded_identities"] = sorted(excluded)
    path = cfg.out / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in settings if old.get(k) != settings[k])
            raise SystemExit(f"{cfg.out} was generated with other settings ({', '.join(diff)} differ); "
                             "use another --out, or the same settings to resume")
    cfg.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def generate(cfg: SynthConfig, sentences: list[Sentence]) -> dict:
    """Generates (or completes) the corpus in cfg.out; returns the report (also written to report.json)."""
    start = time.time()
    if cfg.holdout_identities and cfg.holdout_speakers:
        raise SystemExit("give --holdout-speakers N or --holdout-identities A,B, not both")
    wanted = cfg.engines or [e for e in eng.ENGINES if eng.engine_available(e)]
    missing = [e for e in wanted if not eng.engine_available(e)]
    excluded, excluded_texts = load_exclusions(cfg.exclude)
    excluded_texts |= load_exclusions(cfg.exclude_texts)[1]
    sentences = [s for s in sentences if s.text not in excluded_texts]
    if not sentences:
        raise SystemExit(f"every sentence is read in {', '.join(map(str, cfg.exclude + cfg.exclude_texts))}: "
                         "nothing left to say")
    installed = eng.all_voices([e for e in wanted if e not in missing], cfg.espeak_voices, cfg.seed)
    candidates = [v for v in installed if v.identity not in excluded]
    if installed and not candidates:
        raise SystemExit(f"every voice of {wanted} speaks as an identity of {', '.join(map(str, cfg.exclude))}")
    ctx = get_context("spawn")  # onnxruntime and fork do not mix
    with ctx.Pool(cfg.workers) as pool:
        # one voice per engine first: its first use fills the engine's model cache (Kokoro downloads and renames
        # a file), and two workers filling the same cache at once made a voice fail and moved the held-out pick
        firsts = list({v.engine: v for v in reversed(candidates)}.values())
        probes = dict(pool.map(_probe, firsts, chunksize=1))
        probes.update(pool.map(_probe, [v for v in candidates if v.name not in probes], chunksize=1))
        voices = [v for v in candidates if probes[v.name] is None]
        if not voices:
            raise SystemExit(f"no voice works: {probes}; run recipes/corpora/install_engines.sh")
        speakers = make_speakers(voices, list(cfg.pitch_shifts))
        failed = {v.identity: probes[v.name] for v in candidates if probes[v.name] is not None}
        heldout = (named_heldout(speakers, cfg.holdout_identities, failed) if cfg.holdout_identities
                   else pick_heldout(speakers, cfg.holdout_speakers, cfg.seed))
        _check_settings(cfg, voices, sentences, heldout, excluded)
        plan = Plan(sentences, speakers, cfg.seed, heldout)
        rows, failures, new_s = _run_plan(pool, plan, cfg)
    return _finish(cfg, rows, failures, voices, speakers, heldout, probes, missing, time.time() - start, new_s)


def _run_plan(pool, plan: Plan, cfg: SynthConfig) -> tuple[list[dict], list[dict], float]:
    rows: list[dict] = []
    failures: list[dict] = []
    target = cfg.hours * 3600
    train_s = new_s = 0.0
    items = iter(plan)
    bar = tqdm(total=round(target), unit="s", desc="train audio", dynamic_ncols=True)
    while train_s < target and (cfg.max_utterances is None or len(rows) + len(failures) < cfg.max_utterances):
        n = cfg.batch if cfg.max_utterances is None else min(cfg.batch, cfg.max_utterances - len(rows) - len(failures))
        batch = [next(items) for _ in range(n)]
        failed_before = len(failures)
        for result, fresh in pool.imap(_render_star, [(it, str(cfg.out)) for it in batch], chunksize=1):
            if "error" in result:
                failures.append(result)
                continue
            rows.append(result)
            new_s += result["duration"] if fresh else 0.0
            if result["split"] == "train":
                train_s += result["duration"]
                bar.update(min(round(train_s), round(target)) - bar.n)
        bar.set_postfix(utts=len(rows), failed=len(failures))
        _write_manifests(cfg.out, rows)  # after every batch, so a killed run still has a usable manifest
        if len(failures) - failed_before == n:  # every engine is failing: stop rather than loop forever
            tqdm.write(f"stopping: the last {n} utterances all failed, e.g. {failures[-1]['error']}")
            break
    bar.close()
    return rows, failures, new_s


def _write_manifests(out: Path, rows: list[dict]) -> None:
    write_manifest(out / "manifest.jsonl", [r for r in rows if r["split"] == "train"])
    heldout = [r for r in rows if r["split"] == "heldout"]
    if heldout or (out / "heldout.jsonl").exists():
        write_manifest(out / "heldout.jsonl", heldout)


def _finish(cfg: SynthConfig, rows: list[dict], failures: list[dict], voices: list[eng.Voice],
            speakers: list[Speaker], heldout: set[str], probes: dict, missing: list[str], wall: float,
            new_s: float) -> dict:
    hours: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        for key, value in (("engine", r["engine"]), ("speaker", r["speaker"]), ("split", r["split"])):
            hours[key][value] += r["duration"] / 3600
    total_h = sum(hours["split"].values())
    read = {r["text_source"] for r in rows}  # the text sources this corpus reads
    report = {
        "hours": {k: {n: round(h, 4) for n, h in sorted(v.items())} for k, v in hours.items()},
        "total_hours": round(total_h, 4), "utterances": len(rows),
        "speakers": {split: len({r["speaker"] for r in rows if r["split"] == split}) for split in ("train", "heldout")},
        "heldout_identities": sorted(heldout), "excluded": [str(p) for p in cfg.exclude],
        "excluded_texts_of": [str(p) for p in cfg.exclude_texts],
        "voices": [asdict(v) for v in voices],
        "speaker_list": [s.name for s in speakers], "unusable_voices": {k: v for k, v in probes.items() if v},
        "engines_missing": missing, "failures": failures,
        "failure_counts": dict(Counter(f["speaker"] for f in failures)),
        "seed": cfg.seed, "workers": cfg.workers, "wall_seconds": round(wall, 1),
        "synthesised_this_run_hours": round(new_s / 3600, 4),
        "x_real_time": round(new_s / wall, 2) if wall else None,  # audio made this run / wall time
        "text_license": {k: f"{b.title}: {b.license}" for k, b in SOURCES.items() if k in read},
        "sample_rate": SAMPLE_RATE, "format": "WAV PCM16 mono, peak-normalised to 0.9, silence-trimmed",
    }
    report["runs"] = _previous_runs(cfg.out / "report.json") + [
        {"wall_seconds": report["wall_seconds"], "synthesised_hours": report["synthesised_this_run_hours"],
         "workers": cfg.workers, "x_real_time": report["x_real_time"]}]
    (cfg.out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _previous_runs(path: Path) -> list[dict]:
    """Earlier runs into the same folder, so a resume does not hide what the first run cost."""
    try:
        return list(json.loads(path.read_text()).get("runs", []))
    except (OSError, ValueError):
        return []


# ---- only the wavs a list names --------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _voices_by_name() -> dict[str, eng.Voice]:
    return {voice.name: voice for voice in (*eng.NATURAL_VOICES, *eng._espeak_voices())}


def listed_item(wav: Path, text: str) -> tuple[PlanItem, Path]:
    """The plan item that wrote `wav` (`CORPUS/wavs/SPEAKER/ID.wav`, as `render` lays a corpus out) reading `text`,
    and the corpus folder. The speaker is the folder's name: a voice's name, with `_p+300` when pitch-shifted."""
    voices = _voices_by_name()
    name = wav.parent.name
    if wav.parent.parent.name != "wavs" or wav.suffix != ".wav":
        raise ValueError(f"{wav}: not a corpus wav (expected CORPUS/wavs/SPEAKER/ID.wav)")
    voice_name, _, shift = name.rpartition("_p")
    if voice_name in voices and shift[:1] in "+-" and shift[1:].isdigit():
        speaker = Speaker(name, voices[voice_name], int(shift))
    elif name in voices:
        speaker = Speaker(name, voices[name], 0)
    else:
        raise ValueError(f"{wav}: no engine voice is called {name!r} (nor a pitch shift of one)")
    return PlanItem(0, wav.stem, speaker, Sentence(text, "list"), "heldout"), wav.parent.parent.parent


def synthesise_listed(items: list[tuple[PlanItem, Path]]) -> dict:
    """Write each missing wav of `listed_item`'s (item, corpus) pairs exactly as the corpus generator did (the same
    engine, voice, pitch shift, trim and level), so that an evaluation list made from a corpus elsewhere can be scored
    here without making the whole corpus. Existing wavs are kept. Returns counts and the failures ({path: why})."""
    made, failures = 0, {}
    for item, corpus in tqdm(sorted(items, key=lambda pair: str(pair[1] / pair[0].audio)), desc="synth-list",
                             unit="wav"):
        row, fresh = render(item, str(corpus))
        if "error" in row:
            failures[str(corpus / item.audio)] = row["error"]
        elif fresh:
            made += 1
    return {"wavs": len(items), "synthesised": made, "present": len(items) - made - len(failures),
            "failures": failures}
