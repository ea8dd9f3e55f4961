"""python -m recipes.corpora {build,shared,synth,validate,engines} ...  (`--help` on each)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from recipes.corpora import builders


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="a manifest from a folder, a table, LibriTTS or LJSpeech")
    kinds = p.add_subparsers(dest="kind", required=True)
    f = kinds.add_parser("folder", help="x.wav + x.txt/x.lab; speaker = parent folder name")
    f.add_argument("root", type=Path)
    f.add_argument("--speaker", help="one speaker for every file (default: the parent folder's name)")
    f.add_argument("--allow-missing-text", action="store_true", help="keep audio without transcript (text null)")
    t = kinds.add_parser("table", help="CSV / TSV (header line) or JSONL list")
    t.add_argument("table", type=Path)
    t.add_argument("--audio-col", default="audio")
    t.add_argument("--text-col", default="text")
    t.add_argument("--speaker-col", default="speaker", help="'' for none")
    t.add_argument("--id-col", default=None)
    t.add_argument("--speaker", help="speaker when there is no speaker column")
    t.add_argument("--audio-root", type=Path, help="audio paths are relative to this (default: the table's folder)")
    t.add_argument("--delimiter", help="default: tab for .tsv, comma otherwise")
    lt = kinds.add_parser("libritts", help="<speaker>/<chapter>/<utt>.wav + <utt>.normalized.txt")
    lt.add_argument("root", type=Path)
    lt.add_argument("--speaker-prefix", default="", help="e.g. libritts_ to keep ids of several corpora apart")
    lt.add_argument("--text-kind", default="normalized", choices=("normalized", "original"))
    lj = kinds.add_parser("ljspeech", help="metadata.csv (id|text|normalized_text) + wavs/")
    lj.add_argument("root", type=Path)
    lj.add_argument("--speaker", default="ljspeech")
    lj.add_argument("--raw-text", action="store_true", help="use column 2 (as written) instead of column 3")
    for k in (f, t, lt, lj):
        k.add_argument("--out", "-o", type=Path, required=True, help="the manifest to write (.jsonl)")


def _build(args: argparse.Namespace) -> int:
    if args.kind == "folder":
        res = builders.build_from_folder(args.root, args.out, args.speaker, allow_missing_text=args.allow_missing_text)
    elif args.kind == "table":
        res = builders.build_from_table(args.table, args.out, args.audio_col, args.text_col or None,
                                        args.speaker_col or None, args.id_col, args.speaker, args.audio_root,
                                        args.delimiter)
    elif args.kind == "libritts":
        res = builders.build_libritts(args.root, args.out, args.speaker_prefix, args.text_kind)
    else:
        res = builders.build_ljspeech(args.root, args.out, args.speaker, use_normalized=not args.raw_text)
    print(res.report())
    return 0 if res.rows else 1


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="a multi-speaker English corpus from offline engines")
    p.add_argument("--out", "-o", type=Path, required=True)
    p.add_argument("--hours", type=float, default=2.0, help="hours of training audio (held-out comes on top)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--engines", help="comma list of " + ",".join(_engines()) + " (default: all installed)")
    p.add_argument("--espeak-voices", type=int, default=16, help="espeak accent x variant x pitch combinations")
    p.add_argument("--pitch-shifts", default="-300,300", help="cents; each natural voice also speaks shifted ('' none)")
    p.add_argument("--holdout-speakers", type=int, default=0,
                   help="N real voices (all engines and shifts of each) go to heldout.jsonl, never to training")
    p.add_argument("--holdout-identities", default="",
                   help="comma list of the voice identities to hold out, instead of --holdout-speakers' seeded pick "
                        "(which moves when a voice fails its probe); e.g. mbrola_us2,pico_en_us")
    p.add_argument("--exclude", type=Path, nargs="+", default=[], metavar="MANIFEST",
                   help="never use the voice identities or read the sentences of these manifests (e.g. an earlier "
                        "corpus's heldout.jsonl, to add data without touching its evaluation voices and texts)")
    p.add_argument("--exclude-texts", type=Path, nargs="+", default=[], metavar="MANIFEST",
                   help="never read the sentences of these manifests but keep their voices (e.g. earlier corpora, "
                        "so that a new one reads only sentences they have not)")
    p.add_argument("--max-utterances", type=int, help="stop after this many utterances (smoke tests)")
    p.add_argument("--text", type=Path, help="your own sentences, one a line (default: the public-domain books)")
    every, default = _text_sources()
    p.add_argument("--sources", default=",".join(default),
                   help=f"comma list of the public-domain texts to read, of {','.join(every)} "
                   "(default: the four Canterbury books)")
    p.add_argument("--no-install", action="store_true",
                   help="do not run install_engines.sh for missing engines (apt needs root; pip installs here)")


def _add_synth_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth-list", help="only the synthetic-voice wavs that evaluation lists name (the same audio "
                                          "as their corpus), when that corpus is not on this machine")
    p.add_argument("lists", type=Path, nargs="+", help="evaluation lists (recipes/eval_lists/*.lst)")
    p.add_argument("--no-install", action="store_true", help="do not run install_engines.sh for missing engines")


def _synth_list(args: argparse.Namespace) -> int:
    from recipes.corpora.synth import listed_item, synthesise_listed
    from tts.evaluation.lists import read_list

    wavs: dict[Path, str] = {}
    for path in args.lists:
        for item in read_list(path, check_files=False):
            for wav, text in ((item.prompt_wav, item.prompt_text), (item.ground_truth_wav, item.target_text)):
                if wav is None:
                    continue
                if wavs.setdefault(wav.resolve(), text) != text:
                    raise SystemExit(f"{item.where}: {wav} is listed with two different texts")
    synthetic = []
    for wav, text in wavs.items():
        try:
            synthetic.append(listed_item(wav, text))
        except ValueError:
            if not wav.is_file():  # a real recording that is missing cannot be made here
                raise SystemExit(f"{wav}: missing, and not a synthetic voice's wav (CORPUS/wavs/VOICE/ID.wav)")
    _install_missing({item.speaker.voice.engine for item, _ in synthetic}, args.no_install)
    report = synthesise_listed(synthetic)
    print(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


def _engines() -> tuple[str, ...]:
    from recipes.corpora.engines import ENGINES

    return ENGINES


def _text_sources() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every public-domain text source, the default ones)."""
    from recipes.corpora.texts import CANTERBURY, SOURCES

    return tuple(SOURCES), CANTERBURY


def _names(comma_list: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in comma_list.split(",") if name.strip())


def _install_flags(missing: list[str]) -> list[str]:
    flags = []
    if "kokoro" not in missing:
        flags.append("--no-kokoro")
    if not {"mbrola", "rhvoice", "pico"} & set(missing):
        flags.append("--no-nonfree")
    if not {"piper", "kokoro"} & set(missing):
        flags.append("--no-pip")
    if not {"espeak", "mbrola", "flite", "festival", "rhvoice", "pico"} & set(missing):
        flags.append("--no-apt")
    return flags


def _install_missing(engines, no_install: bool) -> None:
    """Run install_engines.sh for those of `engines` that are not installed (unless `no_install`)."""
    from recipes.corpora.engines import engine_available

    missing = sorted({engine for engine in engines if not engine_available(engine)})
    if missing and not no_install:
        print(f"installing missing engines {missing} (--no-install to skip)", file=sys.stderr)
        subprocess.run(["bash", str(Path(__file__).with_name("install_engines.sh")), *_install_flags(missing)],
                       check=False)  # a failed step is reported by the script; we use whatever got installed


def _synth(args: argparse.Namespace) -> int:
    from recipes.corpora.synth import SynthConfig, generate
    from recipes.corpora.texts import load_sentences

    engines = list(_names(args.engines)) if args.engines else None
    unknown = sorted(set(engines or []) - set(_engines()))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose from {','.join(_engines())}")
    _install_missing(engines or _engines(), args.no_install)
    shifts = tuple(map(int, _names(args.pitch_shifts)))
    sources = list(_names(args.sources))
    try:
        sentences = load_sentences(text_file=args.text, sources=sources)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(f"{len(sentences)} sentences", file=sys.stderr)
    cfg = SynthConfig(args.out, args.hours, args.seed, args.workers, engines, args.espeak_voices, shifts,
                      args.holdout_speakers, _names(args.holdout_identities), args.max_utterances,
                      tuple(args.exclude), tuple(args.exclude_texts))
    report = generate(cfg, sentences)
    keys = ("total_hours", "utterances", "speakers", "hours", "wall_seconds", "x_real_time", "engines_missing",
            "unusable_voices", "failure_counts")
    print(json.dumps({k: report[k] for k in keys}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.corpora", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_build(sub)
    sh = sub.add_parser("shared", help="manifests for shared/corpora and shared/speech (eval speakers excluded)")
    sh.add_argument("--shared", type=Path, default=Path("../shared"))
    sh.add_argument("--out", "-o", type=Path, required=True)
    _add_synth(sub)
    _add_synth_list(sub)
    va = sub.add_parser("validate", help="check manifests; lists every problem as file:line")
    va.add_argument("manifests", type=Path, nargs="+")
    va.add_argument("--check-audio", action="store_true", help="also open every audio file's header")
    va.add_argument("--require-text", action="store_true")
    me = sub.add_parser("merge", help="one manifest from several (audio paths re-rooted at the output's folder)")
    me.add_argument("manifests", type=Path, nargs="+")
    me.add_argument("--out", "-o", type=Path, required=True)
    me.add_argument("--require-text", action="store_true", help="keep only rows with a transcript")
    me.add_argument("--max-rows", type=int, help="at most this many rows of each manifest, a seeded random draw")
    me.add_argument("--seed", type=int, default=0, help="the draw's seed (with --max-rows)")
    sub.add_parser("engines", help="which speech engines are installed")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        return _build(args)
    if args.cmd == "shared":
        from recipes.corpora.shared import build_shared

        print(json.dumps(build_shared(args.shared, args.out), indent=1))
        return 0
    if args.cmd == "synth":
        return _synth(args)
    if args.cmd == "synth-list":
        return _synth_list(args)
    if args.cmd == "merge":
        from recipes.corpora.manifest import merge_manifests, summary

        try:
            rows = merge_manifests(args.manifests, args.out, args.require_text, args.max_rows, args.seed)
        except ValueError as exc:  # ManifestError included: it names the file and line
            raise SystemExit(f"merge: {exc}") from None
        print(json.dumps(summary(rows), indent=1))
        return 0
    if args.cmd == "validate":
        from recipes.corpora.manifest import validate_manifest

        bad = 0
        for m in args.manifests:
            problems = validate_manifest(m, args.check_audio, args.require_text)
            print("\n".join(problems) if problems else f"{m}: OK")
            bad += bool(problems)
        return 1 if bad else 0
    from recipes.corpora.engines import ENGINES, engine_available

    for e in ENGINES:
        print(f"{e:10s} {'yes' if engine_available(e) else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
