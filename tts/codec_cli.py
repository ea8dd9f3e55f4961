"""`sac-tts codec ...`: reconstruct, encode, decode and convert with the SAC codec."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

DEFAULT_CODEC = "Soul-AILab/SAC-16k-37_5Hz"
DEFAULT_TOKENIZER = "zai-org/glm-4-voice-tokenizer"
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aif", ".aiff"}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Item:
    name: str  # output name without extension (may contain sub-folders)
    path: Path


def collect_inputs(source: Path, extensions: set[str]) -> list[Item]:
    """A file, a folder (searched recursively), or a JSONL with `index` and `wav_path` per line."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in extensions and p.is_file())
        if not files:
            raise SystemExit(f"error: no {'/'.join(sorted(extensions))} files under {source}")
        return [Item(str(p.relative_to(source).with_suffix("")), p) for p in files]
    if not source.is_file():
        raise SystemExit(f"error: input {source} not found")
    if source.suffix.lower() == ".jsonl":
        items = []
        for line_no, line in enumerate(source.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path = Path(row["wav_path"])
                path = path if path.is_absolute() else source.parent / path
                items.append(Item(str(row.get("index", path.stem)), path))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SystemExit(f"error: {source}:{line_no}: expected a JSON object with 'index' and 'wav_path' "
                                 f"({exc})")
        return items
    return [Item(source.stem, source)]


def output_path(items: list[Item], output: Path, item: Item, suffix: str) -> Path:
    if len(items) == 1 and output.suffix.lower() == suffix:
        return output
    return output / f"{item.name}{suffix}"


def save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic write: a crash never leaves a truncated token file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_codec(args: argparse.Namespace, with_tokenizer: bool):
    from codec import SpeechCodec

    return SpeechCodec.from_pretrained(
        args.codec, codec_config=args.codec_config,
        semantic_tokenizer=args.semantic_tokenizer if with_tokenizer else None,
        dtype=DTYPES[args.dtype], device=args.device)


def _run_batches(items: list[Item], batch_size: int, work: Callable[[list[Item]], None], desc: str) -> int:
    """Run `work` on batches; a failing batch is retried item by item so one bad file fails alone."""
    failures: list[tuple[Item, str]] = []
    with tqdm(total=len(items), desc=desc, unit="file", disable=None) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start: start + batch_size]
            try:
                work(batch)
            except Exception:
                for item in batch:
                    try:
                        work([item])
                    except Exception as exc:  # report and go on with the rest
                        failures.append((item, f"{type(exc).__name__}: {exc}"))
            bar.update(len(batch))
    done = len(items) - len(failures)
    print(f"{desc}: {done} of {len(items)} files done", file=sys.stderr)
    for item, message in failures:
        print(f"  FAILED {item.path}: {message}", file=sys.stderr)
    return 1 if failures else 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from codec.audio import load_audio, save_wav

    items = collect_inputs(Path(args.input), AUDIO_EXTENSIONS)
    codec = _load_codec(args, with_tokenizer=True)

    def work(batch: list[Item]) -> None:
        wavs = [load_audio(item.path, codec.sample_rate) for item in batch]
        for item, wav in zip(batch, codec.reconstruct(wavs, codec.sample_rate, args.batch_size)):
            save_wav(output_path(items, Path(args.output), item, ".wav"), wav.numpy(), codec.sample_rate)

    return _run_batches(items, args.batch_size, work, "reconstruct")


def cmd_encode(args: argparse.Namespace) -> int:
    from codec.audio import load_audio
    from codec.tokens import interleave

    items = collect_inputs(Path(args.input), AUDIO_EXTENSIONS)
    codec = _load_codec(args, with_tokenizer=True)

    def work(batch: list[Item]) -> None:
        tokens = codec.encode([load_audio(item.path, codec.sample_rate) for item in batch], codec.sample_rate,
                              args.batch_size)
        for i, item in enumerate(batch):
            save_npy(output_path(items, Path(args.output), item, ".npy"), interleave(*tokens.clip(i)))

    return _run_batches(items, args.batch_size, work, "encode")


def cmd_decode(args: argparse.Namespace) -> int:
    from codec.audio import save_wav
    from codec.tokens import CodecTokens, deinterleave

    items = collect_inputs(Path(args.input), {".npy"})
    codec = _load_codec(args, with_tokenizer=False)

    def work(batch: list[Item]) -> None:
        clips = []
        for item in batch:
            semantic, acoustic = deinterleave(np.load(item.path, allow_pickle=False), codec.acoustic_per_semantic)
            clips.append((torch.from_numpy(semantic), torch.from_numpy(acoustic)))
        for item, wav in zip(batch, codec.decode(CodecTokens.from_clips(clips), args.batch_size)):
            save_wav(output_path(items, Path(args.output), item, ".wav"), wav.numpy(), codec.sample_rate)

    return _run_batches(items, args.batch_size, work, "decode")


def cmd_convert(args: argparse.Namespace) -> int:
    from codec.checkpoint import convert_released

    out = convert_released(args.checkpoint, args.codec_config, args.output,
                           semantic_tokenizer=args.semantic_tokenizer, training_heads=not args.inference_only,
                           dtype=DTYPES[args.dtype] if args.dtype else None)
    print(f"wrote {out}/config.json and model.safetensors", file=sys.stderr)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    codec = subparsers.add_parser("codec", help="SAC codec: reconstruct, encode, decode, convert")
    commands = codec.add_subparsers(dest="codec_command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"

    def common(p: argparse.ArgumentParser, tokenizer: bool) -> None:
        p.add_argument("input", help="a file, a folder, or a JSONL with 'index' and 'wav_path' fields")
        p.add_argument("-o", "--output", required=True, help="output file (single input) or folder")
        p.add_argument("--codec", default=DEFAULT_CODEC,
                       help="our model folder, a released .pt, or a hub id (default: %(default)s)")
        p.add_argument("--codec-config", help="the released YAML of a .pt checkpoint (optional for the "
                                              "released full-size layouts)")
        if tokenizer:
            p.add_argument("--semantic-tokenizer", default=DEFAULT_TOKENIZER,
                           help="GLM-4-Voice tokenizer folder or hub id (default: %(default)s)")
        p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
        p.add_argument("--device", default=default_device)
        p.add_argument("--batch-size", type=int, default=8)

    p = commands.add_parser("reconstruct", help="audio -> tokens -> audio")
    common(p, tokenizer=True)
    p.set_defaults(func=cmd_reconstruct)
    p = commands.add_parser("encode", help="audio -> interleaved tokens s0,a0..a(k-1),s1,... (.npy, int64)")
    common(p, tokenizer=True)
    p.set_defaults(func=cmd_encode)
    p = commands.add_parser("decode", help="interleaved tokens (.npy) -> 16 kHz audio")
    common(p, tokenizer=False)
    p.set_defaults(func=cmd_decode)

    p = commands.add_parser("convert", help="released .pt + YAML -> our folder (config.json + model.safetensors)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--codec-config", help="the released YAML (optional for the full-size layouts)")
    p.add_argument("--semantic-tokenizer", help="tokenizer folder, if the checkpoint lacks the semantic codebook")
    p.add_argument("--inference-only", action="store_true", help="drop the training-only heads")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="store weights in this dtype")
    p.set_defaults(func=cmd_convert)
