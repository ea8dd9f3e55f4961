"""The sac-tts voice-cloning web demo (gradio): `python -m demo.app` or `sac-tts demo`.

It binds 127.0.0.1 unless told otherwise and fetches nothing from the internet: analytics are off, the theme uses
local fonts, server-side rendering (which would need Node) is off, and a share link is made only on request.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

    from tts.pipeline import TTS
    from tts.voices import VoiceStore

    from .handlers import DemoBackend

# Read by gradio when it is imported and when a Blocks is made: set first so no usage ping ever leaves the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_MAX_UPLOAD_MB = "127.0.0.1", 7860, 20
TITLE = "sac-tts: zero-shot voice cloning"
DTYPES = ("float32", "bfloat16", "float16")


def _gradio():
    """gradio, imported on first use: it takes seconds, and `sac-tts --help` (which imports this) must stay fast
    and work without the optional extra."""
    try:
        import gradio
    except ImportError as exc:
        raise RuntimeError("the demo needs gradio: pip install 'sac-tts[demo]' (or pip install gradio)") from exc
    return gradio


def example_prompts() -> list[list[str]]:
    """[[wav path, transcript], ...] for the bundled espeak-ng clips (see demo/README.md)."""
    rows = []
    for wav in sorted(EXAMPLES_DIR.glob("*.wav")):
        transcript = wav.with_suffix(".txt")
        if transcript.is_file():
            rows.append([str(wav), transcript.read_text().strip()])
    return rows


def can_stream_audio() -> bool:
    # gradio encodes a streamed player's chunks to AAC with ffmpeg; without it only the finished file is played.
    return shutil.which("ffmpeg") is not None


def _voice_panel(backend: DemoBackend) -> tuple[gr.Dropdown, gr.Audio, gr.Textbox]:
    """Left column: which voice, the prompt upload/recording, examples, save/delete."""
    from .handlers import PROMPT_CHOICE

    gr = _gradio()
    gr.Markdown("### 1. Voice")
    choice = gr.Dropdown(backend.voice_choices(), value=PROMPT_CHOICE, label="Voice", elem_id="voice-choice",
                         info="Clone the prompt below, or use a voice saved earlier.")
    about = gr.Markdown(backend.describe_voice(PROMPT_CHOICE), elem_id="voice-about")
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice prompt (3-15 s of speech)",
                     elem_id="prompt-audio", buttons=[])  # no "share": it posts to Hugging Face
    transcript = gr.Textbox(label="Transcript of the prompt", lines=2, elem_id="prompt-text",
                            placeholder="Exactly what is said in the prompt audio")
    examples = example_prompts()
    if examples:
        gr.Examples(examples, inputs=[audio, transcript], label="Example prompts (espeak-ng, click one to use it)")
    with gr.Accordion("Save or delete voices", open=False):
        name = gr.Textbox(label="Save this voice as…", placeholder="e.g. alice", elem_id="voice-name")
        with gr.Row():
            save = gr.Button("Save voice", elem_id="save-voice")
            delete = gr.Button("Delete selected voice", variant="stop", elem_id="delete-voice")
        saved_msg = gr.Markdown()
    choice.change(backend.describe_voice, choice, about, api_visibility="private")
    save.click(backend.save_voice, [name, audio, transcript], [choice, saved_msg])
    delete.click(backend.delete_voice, choice, [choice, saved_msg])
    return choice, audio, transcript


def _sampling_panel() -> list[gr.Component]:
    """The sampling controls, in the order `DemoBackend.synthesize` takes them."""
    from tts.pipeline import SynthesisOptions

    gr, default = _gradio(), SynthesisOptions()
    with gr.Accordion("Sampling settings", open=False):
        with gr.Row():
            temperature = gr.Slider(0.1, 2.0, default.temperature, step=0.05, label="Temperature",
                                    info="Higher = livelier")
            top_p = gr.Slider(0.05, 1.0, default.top_p, step=0.05, label="Top-p", info="Nucleus mass kept")
            top_k = gr.Slider(0, 200, default.top_k, step=1, label="Top-k", info="0 = no limit")
        with gr.Row():
            flow_steps = gr.Slider(1, 64, default.flow_steps, step=1, label="Flow steps", info="More = finer, slower")
            cfg_scale = gr.Slider(1.0, 5.0, default.cfg_scale, step=0.1, label="CFG scale",
                                  info="Voice-prompt adherence")
            speed = gr.Slider(0.5, 2.0, default.speed, step=0.05, label="Speed", info="Pitch is kept")
        seed = gr.Number(-1, precision=0, label="Seed (-1 = random; the one used is shown after synthesis)",
                         elem_id="seed")
    return [temperature, top_p, top_k, flow_steps, cfg_scale, speed, seed]


def build_demo(tts: TTS, voices: VoiceStore, *, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB) -> gr.Blocks:
    """The demo page for a loaded `TTS` and a `VoiceStore` (launch it with `launch`, which applies the limits)."""
    gr = _gradio()
    from .handlers import DemoBackend

    backend = DemoBackend(tts, voices)
    streaming = can_stream_audio()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nGive a few seconds of someone's speech and its transcript, type a text, and hear it "
                    "in that voice. Runs on this machine only.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                choice, audio, transcript = _voice_panel(backend)
            with gr.Column(scale=1):
                gr.Markdown("### 2. Speech")
                text = gr.Textbox(label="Text to speak", lines=4, elem_id="text",
                                  placeholder="Type what the voice should say.")
                sampling = _sampling_panel()
                button = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
                player = gr.Audio(label="Playback" if streaming else "Playback (live streaming needs ffmpeg)",
                                  streaming=streaming, autoplay=True, interactive=False, elem_id="stream-audio",
                                  buttons=["download"])
                result = gr.File(label="Download (WAV, 16-bit)", interactive=False, elem_id="result-file")
                status = gr.Markdown(elem_id="status")

        # Named parameters, so the HTTP API (gradio_client) documents them by name.
        def synthesize(voice: str, prompt_audio: str | None, prompt_text: str, text: str, temperature: float,
                       top_p: float, top_k: float, flow_steps: float, cfg_scale: float, speed: float, seed: float):
            yield from backend.synthesize(voice, prompt_audio, prompt_text, text, temperature, top_p, top_k,
                                          flow_steps, cfg_scale, speed, seed, stream=streaming)

        # One synthesis at a time: on a CPU a second one only halves the speed of both.
        button.click(synthesize, [choice, audio, transcript, text, *sampling], [player, result, status],
                     api_name="synthesize", concurrency_limit=1)
        # Voices saved from another tab or the CLI show up on reload.
        demo.load(backend.voice_dropdown, None, choice, api_visibility="private")
    demo.max_file_size = max_upload_mb * 1024 * 1024  # launch() sets it again; this covers mounting elsewhere
    demo.sac_max_upload_mb = max_upload_mb
    demo.sac_backend = backend
    return demo


def launch(tts: TTS, voices: VoiceStore, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
           max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Build and serve the demo; with `block=False` it returns once the server is up (for tests)."""
    demo = build_demo(tts, voices, max_upload_mb=max_upload_mb)
    demo.queue(max_size=32)
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=f"{max_upload_mb}mb",
                prevent_thread_lock=not block, quiet=quiet, ssr_mode=False, inbrowser=False, show_error=True,
                allowed_paths=[str(EXAMPLES_DIR)], footer_links=["api"])
    return demo


# ---- command line --------------------------------------------------------------------------------------------
def _bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return port


def cmd_demo(args: argparse.Namespace) -> int:
    _gradio()  # fail before the model loads
    import torch

    from tts.pipeline import TTS
    from tts.voices import VoiceStore

    if args.share:
        print("warning: --share true publishes the demo through gradio's tunnel servers on the internet",
              file=sys.stderr)
    tts = TTS.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    launch(tts, VoiceStore(args.voices_dir), host=args.host, port=args.port, share=args.share,
           max_upload_mb=args.max_upload_mb)
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, got {number}")
    return number


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (default: $SAC_TTS_MODEL or the bundled default model)")
    p.add_argument("--voices-dir", help="saved voices folder (default: $SAC_TTS_VOICES_DIR or ~/.local/share)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (default 7860)")
    p.add_argument("--share", type=_bool, nargs="?", const=True, default=False, metavar="true|false",
                   help="make a public gradio.live link (default false; contacts gradio's servers)")
    p.add_argument("--max-upload-mb", type=_positive, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest prompt upload accepted, in MB (default 20)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.set_defaults(func=cmd_demo)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `demo` on the `sac-tts` command line (the sub-command calls `args.func(args)`)."""
    p = subparsers.add_parser("demo", help="web demo: clone a voice and listen in the browser (needs sac-tts[demo])",
                              description="Serve the voice-cloning web demo (gradio) on this machine.")
    _add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.app", description="Serve the sac-tts voice-cloning web demo.")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
