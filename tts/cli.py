"""The `sac-tts` command line."""

from __future__ import annotations

import argparse
import sys

from . import codec_cli, server, tts_cli
from .errors import TTSError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sac-tts", description="Zero-shot TTS on SAC codec tokens.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    tts_cli.add_parsers(subparsers)
    server.add_parser(subparsers)
    from .evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(subparsers)
    codec_cli.add_parser(subparsers)
    from demo.app import add_parser as add_demo_parser  # light: gradio is imported only when the demo runs

    add_demo_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (TTSError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
