"""`sac-tts synthesize`, `sac-tts convert` and `sac-tts voice add|list|remove`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .config import FLOW_CODES
from .errors import TTSError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _load_tts(args: argparse.Namespace):
    from .pipeline import TTS

    return TTS.from_pretrained(args.model, device=args.device, dtype=DTYPES[args.dtype])


def _voice(args: argparse.Namespace, tts):
    """--voice is an audio file (cloned now, with --voice-text) or the name of a saved voice."""
    from .voices import VoiceStore

    if Path(args.voice).is_file():
        if not args.voice_text:
            raise TTSError(f"--voice {args.voice} is an audio file: also give its transcript with --voice-text")
        return tts.clone_voice(args.voice, args.voice_text)
    store = VoiceStore(args.voices_dir)
    saved = store.names()
    if args.voice not in saved:  # name both readings: a mistyped path is not a badly formed voice name
        raise TTSError(f"--voice {args.voice}: no such audio file, and no saved voice of that name "
                       f"(saved: {', '.join(saved) or 'none yet'})")
    return store.get(args.voice)


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_length_vs_prompt", "flow_steps", "cfg_scale",
                   "flow_temperature", "flow_codes")


def sampling_options(args: argparse.Namespace, **fixed):
    """The SynthesisOptions named by the parser's sampling flags (those it has) and `fixed` (seed, speed)."""
    from .pipeline import SynthesisOptions

    given = {name: getattr(args, name) for name in SAMPLING_FIELDS if getattr(args, name, None) is not None}
    return SynthesisOptions(**given, **fixed)


def _read_jobs(path: Path) -> list[dict]:
    """JSONL: `text` and optional `id` (output name) per line."""
    jobs = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            jobs.append({"id": str(row.get("id", f"{line_no:05d}")), "text": row["text"]})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TTSError(f"{path}:{line_no}: expected a JSON object with 'text' (and optional 'id'): {exc}")
    if not jobs:
        raise TTSError(f"{path} has no lines to synthesize")
    return jobs


def cmd_synthesize(args: argparse.Namespace) -> int:
    from codec.audio import save_wav, wav_path

    if (args.text is None) == (args.input is None):
        raise TTSError("give either a text to speak or --input texts.jsonl")
    options = sampling_options(args, seed=args.seed, speed=args.speed)  # bad options fail before loading
    if args.input is None:
        wav_path(args.output)
    jobs = _read_jobs(Path(args.input)) if args.input else [{"id": None, "text": args.text}]
    tts = _load_tts(args)
    voice = _voice(args, tts)
    output, failures = Path(args.output), []
    for job in tqdm(jobs, desc="synthesize", unit="text", disable=len(jobs) == 1 or None):
        target = output if job["id"] is None else output / f"{job['id']}.wav"
        try:
            save_wav(target, tts.synthesize(job["text"], voice, options), tts.sample_rate)
        except TTSError as exc:
            failures.append((job["id"], str(exc)))
            if job["id"] is None:
                raise
    if args.input:
        print(f"synthesize: {len(jobs) - len(failures)} of {len(jobs)} texts done", file=sys.stderr)
        for job_id, message in failures:
            print(f"  FAILED {job_id}: {message}", file=sys.stderr)
    else:
        print(f"wrote {output}", file=sys.stderr)
    return 1 if failures else 0


def cmd_convert(args: argparse.Namespace) -> int:
    from codec.audio import save_wav, wav_path

    options = sampling_options(args, seed=args.seed, speed=args.speed)
    wav_path(args.output)
    if not Path(args.source).is_file():
        raise TTSError(f"source speech {args.source} not found")
    tts = _load_tts(args)
    save_wav(Path(args.output), tts.convert(args.source, _voice(args, tts), options=options), tts.sample_rate)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_voice(args: argparse.Namespace) -> int:
    from .voices import VoiceStore

    store = VoiceStore(args.voices_dir)
    if args.voice_command == "add":
        voice = _load_tts(args).clone_voice(args.audio, args.text)
        store.add(args.name, voice)
        print(f"saved voice {args.name!r} ({voice.duration_s:.1f} s) in {store.folder}", file=sys.stderr)
    elif args.voice_command == "list":
        for row in store.list():
            print(f"{row['name']}\t{row['duration_s']:.1f} s\t{row['text']}")
    else:
        store.remove(args.name)
        print(f"removed voice {args.name!r}", file=sys.stderr)
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (default: $SAC_TTS_MODEL or the bundled default model)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")


def _speaker_args(p: argparse.ArgumentParser) -> None:
    """The voice, the model, the seed and the speed, shared by synthesize and convert."""
    p.add_argument("--voice", required=True, help="a prompt audio file (with --voice-text) or a saved voice name")
    p.add_argument("--voice-text", help="transcript of the prompt audio")
    p.add_argument("--voices-dir", help="saved voices folder (default: $SAC_TTS_VOICES_DIR or ~/.local/share)")
    _model_args(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--speed", type=float, default=1.0)


def sampling_args(p: argparse.ArgumentParser, *, lm: bool) -> None:
    """Sampling flags, shared by synthesize, convert (no LM) and eval; one left out keeps SynthesisOptions' default
    (tts/pipeline.py), named in its help."""
    if lm:
        p.add_argument("--temperature", type=float, help="LM sampling temperature (default 1.0)")
        p.add_argument("--top-k", type=int, help="LM sampling: keep the k likeliest ids (default 25)")
        p.add_argument("--top-p", type=float, help="LM sampling: nucleus mass (default 0.8)")
        p.add_argument("--min-length-vs-prompt", type=float,
                       help="LM: speak at least this fraction of the length the voice prompt's pace predicts "
                            "(default 0 = off; guards against an early stop that drops the last words)")
    p.add_argument("--flow-steps", type=int, help="second stage: unmasking steps (default 12)")
    p.add_argument("--cfg-scale", type=float, help="second stage: guidance by the prompt (default 2.0)")
    p.add_argument("--flow-temperature", type=float, help="second stage: sampling temperature (default 1.0)")
    p.add_argument("--flow-codes", choices=FLOW_CODES,
                   help="second stage output: 'mean', each frame's code nearest its predicted mean code (clearer "
                        "speech), or 'sampled', the sampled id (default mean)")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synthesize", help="speak text in a cloned voice")
    p.add_argument("text", nargs="?", help="the text to speak (or --input)")
    p.add_argument("--input", help="JSONL with 'text' and optional 'id' per line; -o is then a folder")
    p.add_argument("-o", "--output", required=True, help="output .wav (or folder with --input)")
    _speaker_args(p)
    sampling_args(p, lm=True)
    p.set_defaults(func=cmd_synthesize)

    p = subparsers.add_parser("convert", help="voice conversion: say what a recording says, in a cloned voice")
    p.add_argument("source", help="the speech to convert (its words and timing are kept)")
    p.add_argument("-o", "--output", required=True, help="output .wav")
    _speaker_args(p)
    sampling_args(p, lm=False)
    p.set_defaults(func=cmd_convert)

    voice = subparsers.add_parser("voice", help="saved voices: add, list, remove")
    commands = voice.add_subparsers(dest="voice_command", required=True)
    add = commands.add_parser("add", help="clone a voice from a prompt and save it under a name")
    add.add_argument("name")
    add.add_argument("audio")
    add.add_argument("--text", required=True, help="transcript of the prompt audio")
    _model_args(add)
    listing = commands.add_parser("list", help="list saved voices")
    remove = commands.add_parser("remove", help="delete a saved voice")
    remove.add_argument("name")
    for p in (add, listing, remove):
        p.add_argument("--voices-dir", help="saved voices folder (default: $SAC_TTS_VOICES_DIR or ~/.local/share)")
        p.set_defaults(func=cmd_voice)
