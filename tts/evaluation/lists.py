"""Seed-TTS-eval utterance lists: `utt|prompt_text|prompt_wav|target_text[|ground_truth_wav[|speaker]]`.

Paths are relative to the list file's folder, or absolute. The optional sixth field (our extension; an empty fifth
field means "no ground truth") names the prompt's speaker. Without it, the prompt file stands for the speaker: the
different-speaker baseline then assumes that rows with different prompt files have different speakers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

UTT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # the utterance id names an output file


class ListError(ValueError):
    """A malformed evaluation list; the message starts with `file:line:`."""


@dataclass(frozen=True)
class EvalItem:
    utt: str
    prompt_text: str
    prompt_wav: Path
    target_text: str
    ground_truth_wav: Path | None = None
    speaker: str | None = None
    where: str = field(default="", compare=False)  # "file:line", for messages

    @property
    def speaker_key(self) -> str:
        return self.speaker if self.speaker else f"prompt:{self.prompt_wav}"


def _resolve(field: str, folder: Path) -> Path:
    path = Path(field)
    return path if path.is_absolute() else folder / path


def parse_line(line: str, folder: Path, where: str) -> EvalItem:
    fields = line.rstrip("\r\n").split("|")
    if not 4 <= len(fields) <= 6:
        raise ListError(f"{where}: expected 4 to 6 '|'-separated fields (utt|prompt_text|prompt_wav|target_text"
                        f"[|ground_truth_wav[|speaker]]), got {len(fields)}")
    utt, prompt_text, prompt_wav, target_text = (f.strip() for f in fields[:4])
    gt = fields[4].strip() if len(fields) > 4 else ""
    speaker = fields[5].strip() if len(fields) > 5 else ""
    if not UTT_PATTERN.match(utt):
        raise ListError(f"{where}: utterance id {utt!r} must be letters, digits, '_', '.' or '-' (it names a file)")
    for name, value in (("prompt_text", prompt_text), ("prompt_wav", prompt_wav), ("target_text", target_text)):
        if not value:
            raise ListError(f"{where}: {name} is empty")
    return EvalItem(utt, prompt_text, _resolve(prompt_wav, folder), target_text,
                    _resolve(gt, folder) if gt else None, speaker or None, where)


def read_list(path: str | os.PathLike, check_files: bool = True) -> list[EvalItem]:
    """Parse a list; any problem (format, duplicate id, and with `check_files` a missing audio file) raises
    `ListError` naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise ListError(f"{path}: no such list file")
    items: list[EvalItem] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{line_no}"
        item = parse_line(line, path.parent, where)
        if item.utt in seen:
            raise ListError(f"{where}: utterance id {item.utt!r} already used on line {seen[item.utt]}")
        seen[item.utt] = line_no
        if check_files and missing_audio(item):
            raise ListError(next(iter(missing_audio(item).values())))
        items.append(item)
    if not items:
        raise ListError(f"{path}: the list has no utterances")
    return items


def missing_audio(item: EvalItem) -> dict[str, str]:
    """{"prompt" / "ground_truth": "file:line: ... not found"} for each audio file of `item` that does not exist."""
    return {key: f"{item.where}: {key.replace('_', '-')} audio {wav} not found{_remake_hint(item, wav)}"
            for key, wav in (("prompt", item.prompt_wav), ("ground_truth", item.ground_truth_wav))
            if wav is not None and not wav.is_file()}


def _remake_hint(item: EvalItem, wav: Path) -> str:
    if wav.parent.parent.name != "wavs":  # not laid out as a synthetic corpus (CORPUS/wavs/VOICE/ID.wav)
        return ""
    list_file = item.where.rsplit(":", 1)[0]
    return f"; if it is a synthetic voice's, `python -m recipes.corpora synth-list {list_file}` remakes the list's wavs"


def _relative(path: Path, folder: Path) -> str:
    # Lists stay valid when their folder moves together with the data next to it.
    return os.path.relpath(Path(path).absolute(), Path(folder).absolute())


def format_item(item: EvalItem, folder: Path) -> str:
    for text in (item.utt, item.prompt_text, item.target_text, item.speaker or ""):
        if "|" in text or "\n" in text:
            raise ValueError(f"{item.utt}: '|' and newlines cannot be written in a list field: {text!r}")
    fields = [item.utt, item.prompt_text, _relative(item.prompt_wav, folder), item.target_text]
    if item.ground_truth_wav is not None or item.speaker:
        fields.append(_relative(item.ground_truth_wav, folder) if item.ground_truth_wav is not None else "")
    if item.speaker:
        fields.append(item.speaker)
    return "|".join(fields)


def write_list(items: list[EvalItem], path: str | os.PathLike, header: str = "") -> Path:
    """Write `items` with paths relative to the list's folder; `header` lines become `#` comments."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {h}".rstrip() for h in header.splitlines()] if header else []
    lines += [format_item(item, path.parent) for item in items]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
