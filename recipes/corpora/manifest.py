"""One manifest format for every corpus: JSONL, one utterance per line.

Required fields:
    id        unique non-empty string
    audio     path to the audio file, relative to the manifest's folder or absolute
    text      the transcript (string), or null for audio without one (codec / speaker-encoder training only)
    speaker   non-empty string
    duration  seconds (number > 0)
Any other field (`license`, `split`, `engine`, `sex`, ...) is optional and kept as is.

Errors name the place: `corpus/manifest.jsonl:12: duration must be a number > 0, got -1`.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf

REQUIRED = ("id", "audio", "text", "speaker", "duration")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names `file:line` of each problem."""


def row_problems(row: object) -> list[str]:
    """What is wrong with one parsed manifest line (empty when nothing is)."""
    if not isinstance(row, dict):
        return [f"expected a JSON object, got {type(row).__name__}"]
    problems = [f"missing field {key!r}" for key in REQUIRED if key not in row]
    for key in ("id", "audio", "speaker"):
        if key in row and (not isinstance(row[key], str) or not row[key].strip()):
            problems.append(f"{key} must be a non-empty string, got {row[key]!r}")
    if "text" in row and row["text"] is not None and not isinstance(row["text"], str):
        problems.append(f"text must be a string or null, got {type(row['text']).__name__}")
    if "duration" in row:
        d = row["duration"]
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            problems.append(f"duration must be a number > 0, got {d!r}")
    return problems


def resolve_audio(manifest: str | Path, audio: str) -> Path:
    """The audio path of a row: absolute as given, else relative to the manifest's folder."""
    path = Path(audio)
    return path if path.is_absolute() else Path(manifest).resolve().parent / path


def validate_manifest(path: str | Path, check_audio: bool = False, require_text: bool = False) -> list[str]:
    """Every problem of a manifest, each as `file:line: message` (an empty list means it is fine).

    check_audio: also open each audio file's header (soundfile, no decoding).
    require_text: null transcripts are errors (a TTS training manifest needs them)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such manifest"]
    problems: list[str] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            row_errs = row_problems(row)
            if not row_errs and require_text and row["text"] is None:
                row_errs.append("text is null, but this manifest needs transcripts")
            if not row_errs and row["id"] in first_line:
                row_errs.append(f"duplicate id {row['id']!r} (first on line {first_line[row['id']]})")
            if not row_errs and check_audio:
                row_errs += _audio_problems(resolve_audio(path, row["audio"]))
            if not row_errs:
                first_line[row["id"]] = n
            problems += [f"{where}: {e}" for e in row_errs]
    return problems


def _audio_problems(audio: Path) -> list[str]:
    if not audio.is_file():
        return [f"audio file {audio} does not exist"]
    try:
        sf.info(str(audio))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        return [f"audio file {audio} is unreadable: {exc}"]
    return []


def read_manifest(path: str | Path, check_audio: bool = False, require_text: bool = False) -> list[dict]:
    """The rows of a manifest; raises ManifestError naming file:line of (up to 20 of) its problems."""
    problems = validate_manifest(path, check_audio, require_text)
    if problems:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError("\n".join(problems[:20]) + more)
    with Path(path).open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_manifest(path: str | Path, rows: Iterable[dict]) -> Path:
    """Writes rows as JSONL, atomically (temp file + rename), after checking every row."""
    path = Path(path)
    rows = list(rows)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        problems = row_problems(row)
        if not problems and row["id"] in seen:
            problems = [f"duplicate id {row['id']!r}"]
        if problems:
            raise ManifestError(f"{path}: row {i} ({row.get('id') if isinstance(row, dict) else row!r}): "
                                + "; ".join(problems))
        seen.add(row["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def audio_duration(path: str | Path) -> float:
    """Seconds of audio from the file header (no decoding); raises on an unreadable or empty file."""
    info = sf.info(str(path))
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError(f"{path}: no audio frames")
    return info.frames / info.samplerate


def relative_audio(manifest: str | Path, audio: str | Path) -> str:
    """`audio` relative to the manifest's folder when it lies under it, else absolute."""
    audio = Path(audio).resolve()
    base = Path(manifest).resolve().parent
    try:
        return audio.relative_to(base).as_posix()
    except ValueError:
        return str(audio)


def merge_manifests(manifests: Iterable[str | Path], out: str | Path, require_text: bool = False,
                    max_rows: int | None = None, seed: int = 0) -> list[dict]:
    """Rows of every manifest, in order, audio paths re-rooted at `out`'s folder; writes `out` and returns them.
    Rows without text are dropped when `require_text`; ids must be unique across the inputs. With `max_rows`, a
    manifest with more rows gives that many, drawn at random (in the drawn order, reproducible from `seed`), so that
    a large corpus does not outweigh small ones."""
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    rows = []
    for manifest in manifests:
        kept = [row for row in read_manifest(manifest) if not require_text or row.get("text")]
        if max_rows is not None and len(kept) > max_rows:
            random.Random(seed).shuffle(kept)
            kept = kept[:max_rows]
        rows += [{**row, "audio": relative_audio(out, resolve_audio(manifest, row["audio"]))} for row in kept]
    write_manifest(out, rows)
    return rows


def summary(rows: list[dict]) -> dict:
    hours = sum(r["duration"] for r in rows) / 3600
    return {"utterances": len(rows), "speakers": len({r["speaker"] for r in rows}), "hours": round(hours, 4),
            "without_text": sum(r["text"] is None for r in rows)}
