"""Manifests from the layouts real users have: each builder returns a BuildResult and writes the manifest.

Durations come from the file header (soundfile, no decoding); a file that cannot be read, or has no transcript where
one is required, is listed in `skipped` with the reason and left out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from recipes.corpora.manifest import REQUIRED, audio_duration, relative_audio, summary, write_manifest

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".opus", ".mp3")


@dataclass
class BuildResult:
    manifest: Path
    rows: list[dict]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or row, why)

    def report(self) -> str:
        s = summary(self.rows)
        lines = [f"{self.manifest}: {s['utterances']} utterances, {s['speakers']} speakers, {s['hours']:.3f} h"
                 + (f", {s['without_text']} without text" if s["without_text"] else "")]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {where}: {why}" for where, why in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _row(out: Path, uid: str, audio: Path, text: str | None, speaker: str, skipped: list, /,
         **extra) -> dict | None:
    try:
        duration = audio_duration(audio)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        skipped.append((str(audio), f"unreadable audio: {exc}"))
        return None
    return {"id": uid, "audio": relative_audio(out, audio), "text": text, "speaker": speaker,
            "duration": round(duration, 4), **extra}


def _finish(out: Path, rows: list[dict], skipped: list) -> BuildResult:
    seen: set[str] = set()
    unique = []
    for row in rows:  # ids must be unique; the later duplicate is the one reported
        if row["id"] in seen:
            skipped.append((row["audio"], f"duplicate id {row['id']!r}"))
        else:
            seen.add(row["id"])
            unique.append(row)
    write_manifest(out, unique)
    return BuildResult(out, unique, skipped)


def _audio_files(root: Path, exts: Iterable[str] = AUDIO_EXTS) -> list[Path]:
    exts = {e.lower() for e in exts}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def build_from_folder(root: str | Path, out: str | Path, speaker: str | None = None,
                      transcript_exts: tuple[str, ...] = (".txt", ".lab"), allow_missing_text: bool = False,
                      extra: dict | None = None) -> BuildResult:
    """`x.wav` + `x.txt` (or `x.lab`) anywhere under root; speaker = the parent folder's name unless given.

    The id is the path below root without extension ("spk1/x"), so equal file names in two folders stay distinct."""
    root, out = Path(root), Path(out)
    rows, skipped = [], []
    for audio in tqdm(_audio_files(root), desc="folder", unit="file", leave=False):
        text = None
        for ext in transcript_exts:
            if audio.with_suffix(ext).is_file():
                text = " ".join(audio.with_suffix(ext).read_text(encoding="utf-8", errors="replace").split())
                break
        if text is None and not allow_missing_text:
            skipped.append((str(audio), f"no transcript ({' or '.join(transcript_exts)}) beside it"))
            continue
        uid = audio.relative_to(root).with_suffix("").as_posix()
        row = _row(out, uid, audio, text, speaker or audio.parent.name, skipped, **(extra or {}))
        if row:
            rows.append(row)
    return _finish(out, rows, skipped)


def build_from_table(table: str | Path, out: str | Path, audio_col: str = "audio", text_col: str | None = "text",
                     speaker_col: str | None = "speaker", id_col: str | None = None, speaker: str | None = None,
                     audio_root: str | Path | None = None, delimiter: str | None = None,
                     keep_columns: bool = True) -> BuildResult:
    """A CSV / TSV (with a header line) or JSONL list of utterances with configurable column names.

    Audio paths are relative to `audio_root` (default: the table's folder). id defaults to the audio path without
    extension; speaker to `speaker` or the audio file's parent folder. Other columns are kept when keep_columns."""
    table, out = Path(table), Path(out)
    root = Path(audio_root) if audio_root else table.parent
    records = list(_read_table(table, delimiter))
    rows, skipped = [], []
    for line_no, rec in tqdm(records, desc="table", unit="row", leave=False):
        where = f"{table}:{line_no}"
        if not rec.get(audio_col):
            skipped.append((where, f"no {audio_col!r} column value"))
            continue
        audio = Path(rec[audio_col])
        audio = audio if audio.is_absolute() else root / audio
        text = rec.get(text_col) if text_col else None
        text = " ".join(str(text).split()) if text not in (None, "") else None
        spk = (rec.get(speaker_col) if speaker_col else None) or speaker or audio.parent.name
        uid = str(rec.get(id_col) or "") if id_col else ""
        uid = uid or Path(rec[audio_col]).with_suffix("").as_posix()
        used = {audio_col, text_col, speaker_col, id_col}
        extra = {k: v for k, v in rec.items() if k not in used and k not in REQUIRED} if keep_columns else {}
        row = _row(out, uid, audio, text, str(spk), skipped, **extra)
        if row:
            rows.append(row)
    return _finish(out, rows, skipped)


def _read_table(table: Path, delimiter: str | None) -> Iterable[tuple[int, dict]]:
    if table.suffix.lower() in (".jsonl", ".json"):
        with table.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{table}:{n}: not valid JSON ({exc.msg})") from None
        return
    delimiter = delimiter or ("\t" if table.suffix.lower() in (".tsv", ".tab") else ",")
    with table.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for n, rec in enumerate(reader, start=2):  # line 1 is the header
            yield n, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in rec.items() if k}


def build_libritts(root: str | Path, out: str | Path, speaker_prefix: str = "",
                   text_kind: str = "normalized") -> BuildResult:
    """LibriTTS: `<speaker>/<chapter>/<utt>.wav` + `<utt>.normalized.txt` (or `.original.txt`)."""
    root, out = Path(root), Path(out)
    rows, skipped = [], []
    for audio in tqdm(_audio_files(root, (".wav", ".flac")), desc="libritts", unit="file", leave=False):
        rel = audio.relative_to(root).parts
        if len(rel) < 3:
            skipped.append((str(audio), "not at <speaker>/<chapter>/<utt>.wav"))
            continue
        stem = audio.with_suffix("")
        for kind in (text_kind, "normalized", "original"):
            txt = stem.with_name(f"{stem.name}.{kind}.txt")
            if txt.is_file():
                break
        else:
            skipped.append((str(audio), f"no {stem.name}.{text_kind}.txt"))
            continue
        text = " ".join(txt.read_text(encoding="utf-8").split())
        row = _row(out, stem.name, audio, text, f"{speaker_prefix}{rel[-3]}", skipped, chapter=rel[-2])
        if row:
            rows.append(row)
    return _finish(out, rows, skipped)


def build_ljspeech(root: str | Path, out: str | Path, speaker: str = "ljspeech",
                   use_normalized: bool = True) -> BuildResult:
    """LJSpeech: `metadata.csv` lines `id|text|normalized_text` + `wavs/<id>.wav`."""
    root, out = Path(root), Path(out)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} not found (expected an LJSpeech-style folder)")
    rows, skipped = [], []
    lines = meta.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(tqdm(lines, desc="ljspeech", unit="line", leave=False), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0]:
            skipped.append((f"{meta}:{n}", "expected id|text|normalized_text"))
            continue
        text = parts[2] if use_normalized and len(parts) > 2 and parts[2].strip() else parts[1]
        audio = root / "wavs" / f"{parts[0]}.wav"
        if not audio.is_file():
            skipped.append((f"{meta}:{n}", f"missing {audio}"))
            continue
        row = _row(out, parts[0], audio, " ".join(text.split()), speaker, skipped)
        if row:
            rows.append(row)
    return _finish(out, rows, skipped)
