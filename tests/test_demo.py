"""The gradio demo: its handlers, its HTTP API and a real headless Chromium clicking through the page.

The model is the tiny random one, so the audio is noise: these tests check the plumbing (upload, synthesis,
streaming, download, errors), never how it sounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")

from demo.app import EXAMPLES_DIR, add_parser, example_prompts, launch
from demo.handlers import PROMPT_CHOICE, DemoBackend
from tts.pipeline import TTS
from tts.voices import VoiceStore

pytestmark = pytest.mark.filterwarnings(  # pandas 3 deprecations inside gradio's queue, not ours
    "ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword is deprecated:Warning")

UPLOAD_LIMIT_MB = 1  # small, so the limit test needs no big file; the bundled clips are ~110 kB
SAMPLING = {"temperature": 1.0, "top_p": 0.8, "top_k": 25, "flow_steps": 4, "cfg_scale": 2.0, "speed": 1.0, "seed": 7}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1300"]


@pytest.fixture(scope="module")
def tts(tiny_tts_dir) -> TTS:
    return TTS.from_pretrained(tiny_tts_dir)


@pytest.fixture(scope="module")
def prompt() -> tuple[str, str]:
    wav, transcript = example_prompts()[0]
    return wav, transcript


@pytest.fixture
def backend(tts, tmp_path) -> DemoBackend:
    return DemoBackend(tts, VoiceStore(tmp_path / "voices"), results_dir=tmp_path / "results")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tts, tmp_path_factory):
    """The demo served in this process on a free localhost port (gradio runs it in a thread)."""
    voices = VoiceStore(tmp_path_factory.mktemp("served_voices"))
    demo = launch(tts, voices, port=_free_port(), max_upload_mb=UPLOAD_LIMIT_MB, block=False, quiet=True)
    try:
        yield demo
    finally:
        demo.close()


def _run(backend: DemoBackend, text: str, audio: str | None, transcript: str | None, *, choice=PROMPT_CHOICE,
         stream=True) -> list[tuple]:
    values = [SAMPLING[k] for k in ("temperature", "top_p", "top_k", "flow_steps", "cfg_scale", "speed", "seed")]
    return list(backend.synthesize(choice, audio, transcript, text, *values, stream=stream))


# ---- the handlers, called directly ---------------------------------------------------------------------------
def test_bundled_examples_are_short_16k_mono_clips_with_transcripts():
    rows = example_prompts()
    assert 2 <= len(rows) <= 3
    for wav, transcript in rows:
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels) == (16000, 1)
        assert 3.0 <= info.duration <= 5.0
        assert os.path.getsize(wav) < 200_000 and transcript
    assert (EXAMPLES_DIR / "make_examples.sh").is_file()  # how they were made travels with them


def test_synthesize_streams_chunks_then_a_wav_file(backend, prompt):
    outputs = _run(backend, "Hello there. This is the demo.", *prompt)
    *live, final = outputs
    assert live, "no streamed chunk before the final result"
    for (rate, chunk), _, status in live:
        assert rate == 16000 and chunk.dtype == np.int16 and chunk.ndim == 1 and status.startswith("Speaking")
    _, path, status = final
    wav, rate = soundfile.read(path)
    assert rate == 16000 and len(wav) == sum(len(c) for (_, c), _, _ in live)
    assert "seed 7" in status


def test_without_streaming_the_player_gets_the_whole_take(backend, prompt):
    (player, path, _), = _run(backend, "Hello there.", *prompt, stream=False)
    rate, wav = player
    assert rate == 16000 and len(wav) == len(soundfile.read(path)[0])


@pytest.mark.parametrize("text, audio, transcript, message", [
    ("", "PROMPT", "TRANSCRIPT", "text to speak is empty"),
    ("Hello.", "SILENT", "Some words.", "silent"),
    ("Hello.", None, "Some words.", "No voice prompt"),
    ("Hello.", "PROMPT", "  ", "transcript is empty"),
    ("Hello.", "GARBAGE", "Some words.", "Cannot read the voice prompt"),
])
def test_bad_input_is_a_message_not_a_crash(backend, prompt, tmp_path, text, audio, transcript, message):
    files = {"PROMPT": prompt[0], None: None, "SILENT": tmp_path / "silent.wav", "GARBAGE": tmp_path / "junk.wav"}
    soundfile.write(files["SILENT"], np.zeros(48000, np.float32), 16000)
    files["GARBAGE"].write_bytes(b"not audio at all")
    transcript = prompt[1] if transcript == "TRANSCRIPT" else transcript
    with pytest.raises(gr.Error, match=message):
        _run(backend, text, files[audio] and str(files[audio]), transcript)


def test_out_of_range_option_names_the_setting(backend, prompt):
    with pytest.raises(gr.Error, match="speed"):
        list(backend.synthesize(PROMPT_CHOICE, *prompt, "Hi.", 1.0, 0.8, 25, 4, 2.0, 9.0, 1))


def test_save_use_and_delete_a_voice(backend, prompt):
    update, message = backend.save_voice("alice", *prompt)
    assert update["value"] == "alice" and "alice" in message
    assert "alice" in [value for _, value in backend.voice_choices()]
    assert "Saved voice **alice**" in backend.describe_voice("alice")
    *_, (_, path, _) = _run(backend, "Hello, Alice.", None, None, choice="alice")  # no prompt needed any more
    assert Path(path).is_file()
    update, _ = backend.delete_voice("alice")
    assert update["value"] == PROMPT_CHOICE and backend.voice_choices() == [backend.voice_choices()[0]]
    with pytest.raises(gr.Error, match="no voice named 'alice'"):
        _run(backend, "Hello.", None, None, choice="alice")
    with pytest.raises(gr.Error, match="not allowed"):
        backend.save_voice("../escape", *prompt)
    with pytest.raises(gr.Error, match="Pick a saved voice"):
        backend.delete_voice(PROMPT_CHOICE)


def test_cli_subcommand_defaults_to_localhost():
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--model", "m"])
    assert (args.host, args.port, args.share, args.max_upload_mb) == ("127.0.0.1", 7860, False, 20)
    assert callable(args.func)
    assert parser.parse_args(["demo", "--share", "false"]).share is False
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--share", "maybe"])


# ---- over HTTP -----------------------------------------------------------------------------------------------
def test_gradio_client_synthesizes_and_gets_errors_as_messages(server, prompt):
    from gradio_client import Client, handle_file

    client = Client(server.local_url, verbose=False)
    args = [PROMPT_CHOICE, handle_file(prompt[0]), prompt[1]]
    _, path, status = client.predict(*args, "Over the wire.", *SAMPLING.values(), api_name="/synthesize")
    wav, rate = soundfile.read(path)
    assert rate == 16000 and len(wav) > 0 and status.startswith("Done")
    with pytest.raises(Exception, match="text to speak is empty"):
        client.predict(*args, "   ", *SAMPLING.values(), api_name="/synthesize")


def test_server_binds_localhost_and_limits_uploads(server):
    import httpx

    assert server.local_url.startswith("http://127.0.0.1:")
    assert server.max_file_size == UPLOAD_LIMIT_MB * 1024 * 1024
    big = b"\0" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1024)
    response = httpx.post(server.local_url + "gradio_api/upload", files={"files": ("big.wav", big)}, timeout=30)
    assert response.status_code == 413


# ---- in a real browser ---------------------------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver, "
                    "or run .ci/install_browser.sh)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    # An explicit driver path: selenium-manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_browser_upload_type_click_and_listen(server, browser, prompt, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def first(css: str):
        return WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, css))[0]

    browser.get(server.local_url)
    first("#prompt-audio input[type=file]").send_keys(str(Path(prompt[0]).resolve()))
    first("#prompt-text textarea").send_keys(prompt[1])
    loaded = "#prompt-audio audio, #prompt-audio canvas, #prompt-audio wave"
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, loaded))

    first("#synthesize").click()  # no text yet: the page must say so and keep working
    WebDriverWait(browser, 30).until(lambda b: "text to speak is empty" in b.find_element(By.TAG_NAME, "body").text)

    first("#text textarea").send_keys("Hello from a real browser.")
    first("#synthesize").click()
    link = WebDriverWait(browser, 60).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#result-file a[href*='.wav']"))[0]
    WebDriverWait(browser, 30).until(lambda b: any(
        a.get_attribute("src") for a in b.find_elements(By.CSS_SELECTOR, "#stream-audio audio")))
    assert "Done" in first("#status").text

    download = httpx.get(link.get_attribute("href"), timeout=30)
    assert download.status_code == 200 and download.content[:4] == b"RIFF"
    # Nothing the page loaded came from outside this machine.
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(("http://127.0.0.1", "blob:", "data:")) for url in loaded), loaded
    if os.environ.get("SAC_TTS_DEMO_SCREENSHOT"):
        time.sleep(0.5)  # let the player draw its final state
        browser.save_screenshot(os.environ["SAC_TTS_DEMO_SCREENSHOT"])
