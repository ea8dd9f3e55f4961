"""Training manifests for the project's offline real speech in shared/ (see shared/corpora/README.md and
shared/speech/README.md).

Written to OUT:
    speechocean762.jsonl        4 760 transcribed clips (accented, half children; `age`/`sex` kept)
    speech_extra.jsonl          the `extra` split of shared/speech, minus every speaker of its `eval` split
    librispeech_prompts.jsonl   351 clips WITHOUT transcripts (`text` null, `codec_only` true)
    train_tts.jsonl             speechocean762 + speech_extra: everything with a transcript
    train_codec.jsonl           all three: audio-only training (codec, speaker encoder)
    eval_speakers.txt           the speakers that never appear in any of the above
    summary.json

The `eval` split of shared/speech is the zero-shot evaluation set: its speakers must never be trained on, so every
manifest is checked against them before it is written, and the build stops if one slipped in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from recipes.corpora.manifest import audio_duration, summary, write_manifest

# shared/corpora/README.md lists these speechocean762 speakers as evaluation speakers already removed there;
# they are re-checked here in case a newer copy of the corpus brings them back.
KNOWN_EVAL_SPEAKERS = frozenset(f"so762_{n:04d}" for n in (457, 765, 981, 1109, 1135, 1408, 2016, 2116, 2327, 2438,
                                                           2448, 2488))


class EvalSpeakerLeak(RuntimeError):
    """An evaluation speaker reached a training manifest."""


def _load_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is --shared pointing at the project's shared/ folder?")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def eval_speakers(shared: Path) -> set[str]:
    rows = _load_jsonl(shared / "speech" / "manifest.jsonl")
    return {r["speaker"] for r in rows if r.get("split") == "eval"} | set(KNOWN_EVAL_SPEAKERS)


def assert_no_eval_speakers(rows: list[dict], banned: set[str], name: str) -> None:
    leaked = sorted({r["speaker"] for r in rows} & banned)
    if leaked:
        raise EvalSpeakerLeak(f"{name}: evaluation speakers in a training manifest: {leaked[:10]}")


def _convert(src_manifest: Path, out: Path, rows: list[dict], desc: str, text: bool = True, **extra) -> list[dict]:
    """Rows of a shared/ manifest in our format: audio path relative to OUT, duration from the file header."""
    converted = []
    for r in tqdm(rows, desc=desc, unit="clip", leave=False):
        audio = (src_manifest.parent / r["audio"]).resolve()
        row = {"id": r["id"], "audio": _relpath(audio, out), "text": r.get("text") if text else None,
               "speaker": r["speaker"], "duration": round(audio_duration(audio), 4)}
        row.update({k: v for k, v in r.items() if k not in row and k not in ("duration_s", "split")})
        if "split" in r:
            row["source_split"] = r["split"]  # the source's own split, not ours
        converted.append({**row, **extra})
    return converted


def _relpath(audio: Path, out: Path) -> str:
    return os.path.relpath(audio, out.resolve())


def build_shared(shared: str | Path, out: str | Path) -> dict:
    shared, out = Path(shared), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    banned = eval_speakers(shared)

    so_src = shared / "corpora" / "speechocean762" / "manifest.jsonl"
    so_rows = [r for r in _load_jsonl(so_src) if r["speaker"] not in banned]
    so = _convert(so_src, out, so_rows, "speechocean762", corpus="speechocean762")

    ls_src = shared / "corpora" / "librispeech_prompts" / "manifest.jsonl"
    ls = _convert(ls_src, out, _load_jsonl(ls_src), "librispeech_prompts", text=False, codec_only=True)
    ls = [r for r in ls if r["speaker"] not in banned]

    sp_src = shared / "speech" / "manifest.jsonl"
    sp_all = _load_jsonl(sp_src)
    extra = [r for r in sp_all if r.get("split") == "extra"]
    # Some speakers have clips in both splits (the same VCTK speaker at 16 and 48 kHz): drop them from training.
    extra_kept = [r for r in extra if r["speaker"] not in banned]
    # shared/speech repeats some clips (speechocean762 ones, VCTK at 16 and 48 kHz): one copy per (speaker, text).
    seen = {(r["speaker"], r["text"].upper()) for r in so}
    extra_unique = []
    for r in extra_kept:
        key = (r["speaker"], (r.get("text") or "").strip().upper())
        if key not in seen:
            seen.add(key)
            extra_unique.append(r)
    sp = _convert(sp_src, out, extra_unique, "speech extra")

    manifests = {"speechocean762": so, "speech_extra": sp, "librispeech_prompts": ls,
                 "train_tts": so + sp, "train_codec": so + sp + ls}
    for name, rows in manifests.items():
        assert_no_eval_speakers(rows, banned, name)
        write_manifest(out / f"{name}.jsonl", rows)
    (out / "eval_speakers.txt").write_text("\n".join(sorted(banned)) + "\n")
    report = {name: summary(rows) for name, rows in manifests.items()}
    report["excluded"] = {
        "eval_speakers": len(banned),
        "speechocean762_clips": len(_load_jsonl(so_src)) - len(so_rows),
        "speech_extra_clips_of_eval_speakers": len(extra) - len(extra_kept),
        "speech_extra_duplicate_clips": len(extra_kept) - len(extra_unique),
        "speech_extra_speakers_dropped": sorted({r["speaker"] for r in extra} & banned),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    return report
