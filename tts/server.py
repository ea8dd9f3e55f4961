"""`sac-tts serve`: an OpenAI-compatible text-to-speech HTTP server with saved voices.

The app itself lives in `server_app.py` (model work: `server_pool.py`, formats: `server_audio.py`), so that the rest
of the command line works without the server's dependencies (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .pipeline import TTS
    from .voices import VoiceStore

API_KEY_ENV = "SAC_TTS_API_KEY"
DESCRIPTION = """\
An OpenAI-compatible text-to-speech server with saved voices (see also `sac-tts voice add`).

  POST   /v1/audio/speech   OpenAI's speech API; `voice` names a saved voice. wav and pcm stream as they are
                            synthesized; pcm is 16-bit little-endian mono at 16 kHz (OpenAI's is 24 kHz), the rate
                            is also in the X-Sample-Rate header; flac, mp3 and opus arrive whole at the end.
                            Extras: `seed`, `temperature`.
  GET    /v1/voices         saved voices: {"object": "list", "data": [{"name", "text", "duration_s"}]}
  POST   /v1/voices         multipart form: `name`, `text` (the transcript), `file` (1-30 s of speech) -> 201
  DELETE /v1/voices/{name}
  GET    /v1/models, /health

example:
  sac-tts serve --port 8000 &
  curl -s localhost:8000/v1/voices -F name=alice -F text="Hello, this is Alice." -F file=@alice.wav
  curl -s localhost:8000/v1/audio/speech -H 'Content-Type: application/json' \\
       -d '{"model": "sac-tts", "voice": "alice", "input": "Hi there!"}' -o hi.wav
  # or: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused").audio.speech.create(...)
"""
SERVER_EXTRA_HINT = "the server needs fastapi, uvicorn and python-multipart: pip install 'sac-tts[server]'"
log = logging.getLogger("tts.server")


def create_app(tts: TTS, voices: VoiceStore, *, api_key: str | None = None, max_input_chars: int = 4096,
               max_queue: int = 64, workers: int = 1, max_upload_bytes: int = 20 * 2**20) -> FastAPI:
    """The server's FastAPI app around a loaded model and a voice store.

    `api_key`: required as `Authorization: Bearer KEY` on every path. `max_queue`: requests admitted at once
    (running or waiting); more get 503. `workers`: inference threads; 1 suits one CPU or GPU, where torch already
    uses every core. `max_upload_bytes`: voice uploads above it get 413.
    """
    try:
        from .server_app import build_app
    except ImportError as exc:
        raise ImportError(f"{SERVER_EXTRA_HINT} ({exc})") from exc
    return build_app(tts, voices, api_key=api_key, max_input_chars=max_input_chars, max_queue=max_queue,
                     workers=workers, max_upload_bytes=max_upload_bytes)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                    start_timeout_s: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread for the `with` block; yields its base URL (tests, notebooks).

    Port 0 picks a free port; the socket is bound before uvicorn starts, so there is no race for it.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the server did not start within {start_timeout_s:g} s")
            time.sleep(0.02)
        bound = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise SystemExit(f"error: {SERVER_EXTRA_HINT}")
    import torch

    from .pipeline import TTS
    from .voices import VoiceStore

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")  # resolved late: --help stays fast
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not _is_loopback(args.host) and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the server "
                    "(set --api-key or $%s)", args.host, API_KEY_ENV)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    tts = TTS.from_pretrained(args.model, device=device, dtype=dtypes[args.dtype])
    voices = VoiceStore(args.voices_dir)
    app = create_app(tts, voices, api_key=api_key, max_input_chars=args.max_input_chars, max_queue=args.max_queue,
                     workers=args.workers, max_upload_bytes=int(args.max_upload_mb * 2**20))
    log.info("model on %s, voices in %s (%d saved), API key %s", device, voices.folder, len(voices.names()),
             "required" if api_key else "not required")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server (POST /v1/audio/speech) with saved voices",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    p.add_argument("--model", help="model folder (default: $SAC_TTS_MODEL or the bundled model)")
    p.add_argument("--voices-dir", help="saved voices (default: $SAC_TTS_VOICES_DIR or ~/.local/share/sac-tts/voices)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on every request (default: ${API_KEY_ENV})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--max-input-chars", type=_positive_int, default=4096, help="longest input text (default: 4096)")
    p.add_argument("--max-queue", type=_positive_int, default=64,
                   help="requests admitted at once; more get 503 'server busy' (default: %(default)s)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="inference threads (default: 1, best on one CPU or GPU as torch uses every core)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest voice upload (default: %(default)s)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(func=cmd_serve)


if __name__ == "__main__":  # python -m tts.server ...
    parser = argparse.ArgumentParser(prog="python -m tts.server")
    add_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["serve", *sys.argv[1:]])
    sys.exit(arguments.func(arguments))
