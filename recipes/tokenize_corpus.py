"""Tokenize a corpus with the codec: a JSONL manifest -> semantic + acoustic tokens in shards, an index and a report.

    python recipes/tokenize_corpus.py MANIFEST --codec FOLDER --out DIR [--batch-size 16] [--shard-size 2000]
        [--min-seconds 0.5] [--max-seconds 30] [--min-peak 1e-3] [--device cuda] [--dtype float32] [--workers 2]
    accelerate launch --multi_gpu --num_processes 8 recipes/tokenize_corpus.py MANIFEST --codec FOLDER --out DIR

Manifest: one JSON object per line with `id`, `audio` (relative to the manifest's folder, or absolute) and optionally
`text`, `speaker`, `duration` (or `duration_s`) and any other fields, which the index keeps. The on-disk format is
described in recipes/shards.py.

Plan. Manifest row r goes to shard r // shard_size, whatever happens to it, so a shard's content is a pure function
of the manifest and the settings (both recorded in meta.json and checked on every start). Process p of W (RANK and
WORLD_SIZE, as `accelerate launch` and torchrun set them) takes shards p, p + W, ... . Shards are written whole and
renamed into place, so after any crash (`kill -9` included) a restart with the same command keeps every finished
shard and redoes the others: no utterance is lost or written twice. No process waits for another: the one that finds
every shard complete when it ends writes index.jsonl and report.json (both derived, so writing them twice is
harmless).

Files that cannot be used are skipped and listed in the shard's sidecar and in report.json, never stopping the run:
unreadable (missing, undecodable, empty, NaN), too_short, too_long, silent (peak below --min-peak) and
encode_failed. Throughput (audio hours per hour, real-time factor) is printed and written to report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as `python recipes/tokenize_corpus.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.audio import load_audio
from codec.codec import SpeechCodec
from recipes import shards
from recipes.data import ManifestError, read_jsonl_manifest, require_text, speaker_of

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
WINDOW_CLIPS = 8  # x batch_size clips go to codec.encode at once: it batches only equal lengths, so offer it many
WINDOW_SECONDS = 1800.0  # ... but hold at most this much audio in memory
RESERVED = {"shard", "semantic_offset", "semantic_length", "acoustic_offset", "acoustic_length", "_path"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tokenize a JSONL manifest of audio into codec token shards "
                                     "(recipes/shards.py); resumable: run the same command again after a crash.")
    parser.add_argument("manifest", type=Path, help="JSONL: id, audio, [text, speaker, duration, ...] per line")
    parser.add_argument("--codec", required=True, help="codec folder (with semantic_tokenizer/)")
    parser.add_argument("--semantic-tokenizer", help="tokenizer folder, when the codec folder has none")
    parser.add_argument("--out", type=Path, required=True, help="token folder to write (or to finish)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per codec batch (equal lengths batch)")
    parser.add_argument("--shard-size", type=int, default=2000, help="manifest rows per shard")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="skip shorter clips")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="skip longer clips")
    parser.add_argument("--min-peak", type=float, default=1e-3, help="skip clips whose peak is below (silent)")
    parser.add_argument("--device", help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="codec dtype")
    parser.add_argument("--workers", type=int, default=2, help="processes decoding audio (0: in this process)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.shard_size < 1 or args.workers < 0:
        parser.error("--batch-size and --shard-size must be >= 1 and --workers >= 0")
    if not 0 <= args.min_seconds < args.max_seconds:
        parser.error(f"need 0 <= --min-seconds < --max-seconds, got {args.min_seconds} and {args.max_seconds}")
    return args


# ---- manifest ----------------------------------------------------------------------------------------------------
def _parse_row(row: dict, root: Path) -> dict[str, Any]:
    """A manifest row -> the fields the index keeps (+ "_path", the audio file to read)."""
    audio = require_text(row, "audio")
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise ManifestError(f"'text' must be a string (or absent), got {text!r}")
    clash = sorted(RESERVED & set(row))
    if clash:
        raise ManifestError(f"fields {clash} are reserved for the token index; rename them")
    # the decoded length replaces the manifest's duration, so it is left out here
    extras = {k: v for k, v in row.items() if k not in ("id", "audio", "text", "speaker", "duration", "duration_s")}
    return {"id": row["id"], "audio": audio, "text": text, "speaker": speaker_of(row), **extras,
            "_path": str(Path(audio) if Path(audio).is_absolute() else root / audio)}


def read_corpus(manifest: Path) -> list[dict[str, Any]]:
    return read_jsonl_manifest(manifest, _parse_row)


# ---- audio -------------------------------------------------------------------------------------------------------
class Clip(NamedTuple):
    row: int  # manifest row
    audio: np.ndarray | None  # float64 [samples] at the codec rate; None when skipped
    skip: dict[str, str] | None  # {"id", "audio", "reason", "detail"} when skipped


class AudioFiles(Dataset):
    """Manifest rows `order[i]` -> a `Clip`, decoded and checked (runs in DataLoader workers)."""

    def __init__(self, rows: list[dict], order: list[int], sample_rate: int, args: argparse.Namespace):
        self.rows, self.order, self.sample_rate = rows, order, sample_rate
        self.min_seconds, self.max_seconds, self.min_peak = args.min_seconds, args.max_seconds, args.min_peak

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Clip:
        index = self.order[i]
        row = self.rows[index]

        def skip(reason: str, detail: str) -> Clip:
            return Clip(index, None, {"id": row["id"], "audio": row["audio"], "reason": reason, "detail": detail})

        header_seconds = _header_seconds(row["_path"])
        if header_seconds > self.max_seconds:  # the header alone tells a file too long to be worth decoding
            return skip("too_long", f"{header_seconds:.2f} s > {self.max_seconds} s")
        try:
            audio = load_audio(row["_path"], self.sample_rate)
        except Exception as error:  # noqa: BLE001 - libsndfile and soxr raise several types; never stop the run
            return skip("unreadable", str(error))
        seconds, peak = len(audio) / self.sample_rate, float(np.abs(audio).max())
        if seconds < self.min_seconds:
            return skip("too_short", f"{seconds:.3f} s < {self.min_seconds} s")
        if seconds > self.max_seconds:
            return skip("too_long", f"{seconds:.2f} s > {self.max_seconds} s")
        if peak < self.min_peak:
            return skip("silent", f"peak {peak:.2g} < {self.min_peak:g}")
        return Clip(index, audio, None)


def _header_seconds(path: str) -> float:
    """The duration a file's header states; 0 when it states none or cannot be read (load_audio then says why)."""
    try:
        return float(soundfile.info(path).duration)
    except Exception:  # noqa: BLE001 - libsndfile raises several types
        return 0.0


def _as_is(item: Clip) -> Clip:  # DataLoader's default would turn the arrays into tensors
    return item


def _die_with_parent(parent: int, worker_id: int) -> None:
    """DataLoader worker start: exit when the run is SIGKILLed, rather than linger blocked on a full pipe."""
    del worker_id
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


# ---- the run -----------------------------------------------------------------------------------------------------
def process_layout() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment `accelerate launch` and torchrun set."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def make_meta(args: argparse.Namespace, codec: SpeechCodec, rows: list[dict]) -> dict[str, Any]:
    plan = {"manifest": str(args.manifest.resolve()), "manifest_sha256": shards.sha256_file(args.manifest),
            "rows": len(rows), "shard_size": args.shard_size, "num_shards": math.ceil(len(rows) / args.shard_size),
            "min_seconds": args.min_seconds, "max_seconds": args.max_seconds, "min_peak": args.min_peak,
            "dtype": args.dtype}  # another dtype gives other ids at near-ties: one folder, one dtype
    return {"format": shards.FORMAT, "codec": shards.codec_meta(codec, args.codec), "plan": plan,
            "token_dtype": np.dtype(shards.TOKEN_DTYPE).name}


def open_folder(out: Path, meta: dict[str, Any]) -> None:
    """Create the token folder, or check that the one there was started with this manifest, codec and plan."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / shards.META_NAME).is_file():
        shards.write_json(out / shards.META_NAME, meta)  # every process writes the same bytes: no race to lose
        return
    old = shards.read_meta(out)
    ignore = {"path", "manifest"}  # moved files are fine; different content is not
    changed = [f"{section}.{key}" for section in ("codec", "plan")
               for key in set(old[section]) | set(meta[section])
               if key not in ignore and old[section].get(key) != meta[section].get(key)]
    if changed:
        raise shards.ShardError(f"{out} was started with a different {', '.join(sorted(changed))} (see its "
                                f"{shards.META_NAME}); finish it with the same manifest, codec and settings, or "
                                "write to a new --out")


def encode_window(codec: SpeechCodec, clips: list[Clip], rows: list[dict], batch_size: int
                  ) -> list[tuple[dict, np.ndarray, np.ndarray] | dict]:
    """Clips -> (index fields, semantic, acoustic) each, or a skip record for a clip the codec refuses."""
    try:
        tokens = codec.encode([c.audio for c in clips], codec.sample_rate, batch_size)
        results = [tokens.clip(i) for i in range(len(clips))]
    except Exception:  # noqa: BLE001 - find the clip(s) at fault one by one; the others still count
        results = []
        for clip in clips:
            try:
                results.append(codec.encode([clip.audio], codec.sample_rate, 1).clip(0))
            except Exception as error:  # noqa: BLE001 - this clip's failure, never the run's
                results.append(f"{type(error).__name__}: {error}")
    out: list[tuple[dict, np.ndarray, np.ndarray] | dict] = []
    for clip, result in zip(clips, results):
        row = rows[clip.row]
        if isinstance(result, str):
            out.append({"id": row["id"], "audio": row["audio"], "reason": "encode_failed", "detail": result})
            continue
        fields = {k: v for k, v in row.items() if k != "_path"}
        fields["duration"] = round(len(clip.audio) / codec.sample_rate, 4)
        out.append((fields, result[0].numpy(), result[1].numpy()))
    return out


def tokenize_shards(codec: SpeechCodec, rows: list[dict], todo: list[int], args: argparse.Namespace,
                    desc: str) -> dict[str, float]:
    """Tokenize and write the shards `todo`; returns this process's counts and timings."""
    size = args.shard_size
    spans = {s: range(s * size, min((s + 1) * size, len(rows))) for s in todo}
    order = [r for s in todo for r in spans[s]]
    loader = DataLoader(AudioFiles(rows, order, codec.sample_rate, args), batch_size=None, shuffle=False,
                        num_workers=args.workers, collate_fn=_as_is, prefetch_factor=16 if args.workers else None,
                        worker_init_fn=partial(_die_with_parent, os.getpid()))
    clips, audio_seconds, kept, start = iter(loader), 0.0, 0, time.perf_counter()
    bar = tqdm(total=len(order), unit="utt", desc=desc, dynamic_ncols=True, mininterval=1.0)
    for s in todo:
        done: list[tuple[int, tuple | dict]] = []  # (manifest row, result), put back in manifest order below
        window: list[Clip] = []
        window_samples = 0
        for _ in spans[s]:
            clip = next(clips)
            if clip.skip is not None:
                done.append((clip.row, clip.skip))
                bar.update(1)
            else:
                window.append(clip)
                window_samples += len(clip.audio)
            last = len(done) + len(window) == len(spans[s])
            full = len(window) >= WINDOW_CLIPS * args.batch_size or window_samples >= WINDOW_SECONDS * codec.sample_rate
            if window and (last or full):
                done += zip([c.row for c in window], encode_window(codec, window, rows, args.batch_size))
                bar.update(len(window))
                window, window_samples = [], 0
        done.sort(key=lambda item: item[0])
        utterances = [r for _, r in done if isinstance(r, tuple)]
        shards.write_shard(args.out, s, utterances, [r for _, r in done if isinstance(r, dict)],
                           (spans[s].start, spans[s].stop))
        kept += len(utterances)
        audio_seconds += sum(u[0]["duration"] for u in utterances)
        bar.set_postfix_str(f"{audio_seconds / max(time.perf_counter() - start, 1e-9):.1f} audio h/h")
    bar.close()
    return {"shards": len(todo), "utterances": kept, "audio_seconds": audio_seconds,
            "wall_seconds": time.perf_counter() - start}


def throughput(audio_seconds: float, wall_seconds: float) -> dict[str, float | None]:
    return {"audio_hours": audio_seconds / 3600, "wall_seconds": wall_seconds,
            "audio_hours_per_hour": audio_seconds / wall_seconds if wall_seconds > 0 else None,
            "real_time_factor": wall_seconds / audio_seconds if audio_seconds > 0 else None}


def write_report(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """report.json from the index, the sidecars' skip lists and every process's timings of its latest run."""
    index = [json.loads(line) for line in (out / shards.INDEX_NAME).read_text(encoding="utf-8").splitlines() if line]
    skipped = shards.skipped_rows(out, meta["plan"]["num_shards"])
    runs = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("rank-*.json"))]
    report = {"manifest": meta["plan"]["manifest"], "codec": meta["codec"]["path"],
              "rows": meta["plan"]["rows"], "utterances": len(index),
              "audio_hours": sum(row["duration"] for row in index) / 3600, "shards": meta["plan"]["num_shards"],
              "skipped": len(skipped), "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
              "skipped_files": skipped,
              "last_run": {**throughput(sum(r["audio_seconds"] for r in runs),
                                        max((r["wall_seconds"] for r in runs), default=0.0)), "processes": runs}}
    shards.write_json(out / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run (or finish) a tokenization; returns report.json's content from the process that wrote it, else None."""
    args = parse_args(argv)
    rank, world, local_rank = process_layout()
    rows = read_corpus(args.manifest)
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    load_start = time.perf_counter()
    codec = SpeechCodec.from_pretrained(args.codec, semantic_tokenizer=args.semantic_tokenizer,
                                        dtype=DTYPES[args.dtype], device=device)
    if codec.tokenizer is None:
        raise SystemExit(f"{args.codec} has no semantic_tokenizer/; pass --semantic-tokenizer FOLDER")
    meta = make_meta(args, codec, rows)
    open_folder(args.out, meta)
    num_shards = meta["plan"]["num_shards"]
    mine = list(range(rank, num_shards, world))
    partial = shards.remove_partial(args.out, {shards.shard_stem(s) for s in mine})
    todo = [s for s in mine if shards.read_sidecar(args.out, s) is None]
    print(f"[rank {rank}/{world}] {len(rows)} utterances in {num_shards} shards; mine: {len(mine)}, "
          f"{len(mine) - len(todo)} already done, {len(todo)} to do ({partial} partial file(s) removed); "
          f"codec {meta['codec']['layout']} Hz k={meta['codec']['acoustic_per_semantic']} on {device}", flush=True)

    stats = tokenize_shards(codec, rows, todo, args, f"rank {rank}" if world > 1 else "tokenize")
    stats.update(rank=rank, world_size=world, device=device, dtype=args.dtype, batch_size=args.batch_size,
                 workers=args.workers, load_seconds=time.perf_counter() - load_start - stats["wall_seconds"])
    (args.out / "stats").mkdir(exist_ok=True)
    for stale in (args.out / "stats").glob("rank-*.json"):  # left by an earlier run with more processes
        if int(stale.stem.split("-")[1]) >= world:
            stale.unlink(missing_ok=True)
    shards.write_json(args.out / "stats" / f"rank-{rank}.json", stats)
    mine_rate = throughput(stats["audio_seconds"], stats["wall_seconds"])
    print(f"[rank {rank}] {stats['utterances']} utterances, {mine_rate['audio_hours']:.3f} h of audio in "
          f"{stats['wall_seconds']:.1f} s: {mine_rate['audio_hours_per_hour'] or 0:.1f} audio hours per hour "
          f"(RTF {mine_rate['real_time_factor'] or 0:.4f})", flush=True)

    if any(shards.read_sidecar(args.out, s) is None for s in range(num_shards)):
        print(f"[rank {rank}] other processes are still working; the last to finish writes the index", flush=True)
        return None
    shards.build_index(args.out)
    report = write_report(args.out, meta)
    rate = report["last_run"]
    print(f"done: {report['utterances']} utterances, {report['audio_hours']:.3f} h in {args.out / shards.INDEX_NAME}; "
          f"skipped {report['skipped']} {report['skipped_by_reason'] or ''}; this run: "
          f"{rate['audio_hours_per_hour'] or 0:.1f} audio hours per hour (RTF {rate['real_time_factor'] or 0:.4f}); "
          f"details in {args.out / 'report.json'}", flush=True)
    return report


if __name__ == "__main__":
    main()
