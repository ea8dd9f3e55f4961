"""`sac-tts serve` on loopback: the official OpenAI client, voice endpoints, errors, back-pressure and a load test.

The real uvicorn server runs in a background thread on 127.0.0.1 with the tiny random model, whose audio is noise:
these tests check mechanics (status codes, formats, lengths, errors, concurrency), never quality.
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

from tts.server import add_parser, create_app, serve_in_thread
from tts.server_audio import available_formats

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
RATE = 16000
MAX_INPUT_CHARS = 200
UPLOAD_LIMIT = 256 * 1024  # small, so that the oversize upload is cheap


def voiced_clip(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A speech-like signal (120 Hz pulse train with noise, syllable-rate envelope); the model is random anyway."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pulses = (np.sin(2 * np.pi * 120 * t) > 0.95).astype(np.float64)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.3 * envelope * (pulses + 0.05 * rng.standard_normal(t.size))).astype(np.float32)


def wav_bytes(audio: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tts(tiny_tts_dir):
    from tts.pipeline import TTS

    return TTS.from_pretrained(tiny_tts_dir)


@pytest.fixture(scope="module")
def store(tts, tmp_path_factory):
    from tts.voices import VoiceStore

    voices = VoiceStore(tmp_path_factory.mktemp("voices"))
    voices.add("alice", tts.clone_voice(voiced_clip(), "hello there, this is a test.", sample_rate=RATE))
    return voices


@dataclass
class Live:
    app: object
    url: str


@pytest.fixture(scope="module")
def server(tts, store):
    app = create_app(tts, store, api_key=API_KEY, max_input_chars=MAX_INPUT_CHARS, max_queue=64,
                     max_upload_bytes=UPLOAD_LIMIT)
    with serve_in_thread(app) as url:
        yield Live(app, url)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def speak(http, **fields) -> httpx.Response:
    body = {"model": "tts-1", "input": "Hello there.", "voice": "alice", "seed": 1, **fields}
    return http.post("/v1/audio/speech", json=body)


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    return error


def assert_idle(http) -> None:
    """The server still answers and holds no request slot (bounded wait: slots return after a close)."""
    deadline = time.monotonic() + 10
    while True:
        health = http.get("/health").json()
        if health["requests_in_progress"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert health["status"] == "ok" and health["requests_in_progress"] == 0, health


# ---- the official OpenAI client --------------------------------------------------------------------------------
def test_openai_client_wav_and_pcm(client):
    wav = client.audio.speech.create(model="tts-1", voice="alice", input="Hello there.", extra_body={"seed": 3})
    assert wav.response.headers["x-sample-rate"] == "16000"
    audio, rate = sf.read(io.BytesIO(wav.content), dtype="int16")
    assert rate == RATE and audio.ndim == 1 and audio.size > 0

    pcm = client.audio.speech.create(model="sac-tts", voice="alice", input="Hello there.", response_format="pcm",
                                     extra_body={"seed": 3})
    assert pcm.response.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) % 2 == 0
    samples = np.frombuffer(pcm.content, dtype="<i2")
    np.testing.assert_array_equal(samples, audio)  # same seed: the same audio, without the 44-byte header


def test_openai_client_streaming(client):
    request = {"model": "tts-1", "voice": {"id": "alice"}, "input": "One two three. Four five six seven.",
               "extra_body": {"seed": 5}}
    with client.audio.speech.with_streaming_response.create(**request) as response:
        chunks = [chunk for chunk in response.iter_bytes()]
    assert len(chunks) >= 2, [len(c) for c in chunks]
    body = b"".join(chunks)
    assert body[:4] == b"RIFF" and len(body) > 44
    audio, rate = sf.read(io.BytesIO(body), dtype="int16")
    assert rate == RATE and audio.size == (len(body) - 44) // 2
    assert client.audio.speech.create(**request).content == body  # streamed == whole


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_compressed_formats(http, fmt):
    if fmt not in available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    response = speak(http, response_format=fmt)
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == RATE and audio.ndim == 1 and audio.size > 0


# ---- authentication --------------------------------------------------------------------------------------------
def test_api_key_is_required(server, http):
    for headers, words in (({}, "missing API key"), ({"Authorization": "Bearer wrong"}, "incorrect API key"),
                           ({"Authorization": API_KEY}, "incorrect API key")):
        for method, path in (("GET", "/health"), ("GET", "/v1/voices"), ("POST", "/v1/audio/speech"),
                             ("DELETE", "/v1/voices/alice")):
            response = httpx.request(method, server.url + path, headers=headers, timeout=10)
            assert assert_error(response, 401, words)["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.speech.create(model="tts-1", voice="alice", input="Hi.")
    assert http.get("/v1/voices").status_code == 200  # alice survived the unauthorised DELETE


# ---- voices ----------------------------------------------------------------------------------------------------
def test_voice_lifecycle(http, client):
    upload = {"file": ("bob.wav", wav_bytes(voiced_clip(seed=1)), "audio/wav")}
    response = http.post("/v1/voices", data={"name": "bob", "text": "a short sample."}, files=upload)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "bob" and response.json()["duration_s"] == pytest.approx(3.0, abs=0.01)
    names = [v["name"] for v in http.get("/v1/voices").json()["data"]]
    assert names == sorted(names) and {"alice", "bob"} <= set(names)

    audio = client.audio.speech.create(model="tts-1", voice="bob", input="Hi.").content
    assert sf.info(io.BytesIO(audio)).samplerate == RATE

    assert http.delete("/v1/voices/bob").json() == {"id": "bob", "object": "voice", "deleted": True}
    assert "bob" not in [v["name"] for v in http.get("/v1/voices").json()["data"]]
    assert assert_error(speak(http, voice="bob"), 400, "bob", "alice")["code"] == "voice_not_found"
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.audio.speech.create(model="tts-1", voice="bob", input="Hi.")
    assert_error(http.delete("/v1/voices/bob"), 404, "bob")


@pytest.mark.parametrize("fields, files, status, words", [
    ({"name": "x", "text": "hello"}, {"file": ("junk.wav", b"not audio at all" * 64, "audio/wav")}, 400,
     ["junk.wav", "cannot read as audio"]),
    ({"name": "x", "text": "hello"}, {"file": ("big.wav", b"\0" * (UPLOAD_LIMIT + 4096), "audio/wav")}, 413,
     ["limit"]),
    ({"name": "x", "text": "hello"}, {"file": ("short.wav", wav_bytes(voiced_clip(0.3)), "audio/wav")}, 400,
     ["voice prompt", "0.3 s"]),
    ({"name": "x"}, {"file": ("a.wav", wav_bytes(voiced_clip()), "audio/wav")}, 400, ["'text'"]),
    ({"name": "x", "text": "hello"}, None, 400, ["'file'"]),
    ({"name": "../etc", "text": "hello"}, {"file": ("a.wav", wav_bytes(voiced_clip()), "audio/wav")}, 400,
     ["voice name", "not allowed"]),
])
def test_bad_uploads(http, fields, files, status, words):
    assert_error(http.post("/v1/voices", data=fields, files=files), status, *words)
    assert "x" not in [v["name"] for v in http.get("/v1/voices").json()["data"]]
    assert_idle(http)


def test_oversize_bodies_without_content_length(http):
    """Chunked bodies declare no length: the server counts bytes as they arrive and stops at the limit."""
    def chunks(head: bytes, total: int):
        yield head
        for _ in range(total // 65536 + 1):
            yield b"\0" * 65536

    boundary = "sactts"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    response = http.post("/v1/voices", content=chunks(head, 2 * UPLOAD_LIMIT),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "limit")
    response = http.post("/v1/audio/speech", content=chunks(b'{"input": "', 16 * MAX_INPUT_CHARS + 65 * 1024))
    assert_error(response, 413, "limit")
    assert_idle(http)


def test_upload_must_be_multipart(http):
    assert_error(http.post("/v1/voices", json={"name": "x"}), 400, "multipart/form-data")


# ---- bad speech requests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, param, words", [
    ({"input": ""}, "input", ["input is empty"]),
    ({"input": " \n\t "}, "input", ["input is empty"]),
    ({"input": "a" * (MAX_INPUT_CHARS + 1)}, "input", [f"{MAX_INPUT_CHARS + 1} characters", str(MAX_INPUT_CHARS)]),
    ({"voice": "nobody"}, "voice", ["nobody", "known voices: alice"]),
    ({"response_format": "aac"}, "response_format", ["'aac'", "wav", "pcm"]),
    ({"speed": 5.0}, "speed", ["speed", "4"]),
    ({"speed": 0.1}, "speed", ["speed", "0.25"]),
    ({"temperature": -1}, "temperature", ["temperature"]),
    ({"stream_format": "sse"}, "stream_format", ["'sse'"]),
    ({"input": None}, "input", ["input"]),
    ({"model": None}, "model", ["model"]),
])
def test_bad_speech_requests(http, fields, param, words):
    assert assert_error(speak(http, **fields), 400, *words)["param"] == param
    assert_idle(http)


def test_malformed_bodies(http):
    assert_error(http.post("/v1/audio/speech", content=b"{not json"), 400, "not valid JSON")
    assert_error(http.post("/v1/audio/speech", content=b"x" * (16 * MAX_INPUT_CHARS + 65 * 1024)), 413, "limit")
    assert_error(http.get("/v1/nowhere"), 404, "not found")
    assert speak(http).status_code == 200  # still serving


# ---- robustness ------------------------------------------------------------------------------------------------
def test_busy_server_answers_503(server, http):
    pool = server.app.state.pool
    taken = 0
    try:
        for _ in range(pool.max_queue):
            pool.acquire()
            taken += 1
        response = speak(http)
        assert assert_error(response, 503, "server busy")["code"] == "server_busy"
        assert response.headers["retry-after"] == "1"
    finally:
        for _ in range(taken):
            pool.release()
    assert speak(http).status_code == 200


def test_unexpected_errors_are_500_and_logged(http, store, monkeypatch, caplog):
    def broken() -> list:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "list", broken)
    error = assert_error(http.get("/v1/voices"), 500, "internal server error", "RuntimeError")
    assert "disk on fire" not in error["message"]  # internals stay in the log
    assert any("disk on fire" in r.getMessage() or "disk on fire" in str(r.exc_info) for r in caplog.records)
    monkeypatch.undo()
    assert http.get("/v1/voices").status_code == 200


def test_inference_runs_on_worker_threads(http, tts, monkeypatch):
    original, seen = tts.stream, []

    def recording_stream(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            seen.append(threading.current_thread().name)
            yield chunk

    monkeypatch.setattr(tts, "stream", recording_stream)
    assert speak(http, input="One two three. Four five six.").status_code == 200
    assert seen and all(name.startswith("tts-infer") for name in seen), seen


def test_failure_mid_stream_ends_the_response_and_frees_the_slot(http, tts, monkeypatch):
    def failing_stream(*args, **kwargs):
        yield np.zeros(1600, dtype=np.float32)
        raise RuntimeError("model exploded")

    monkeypatch.setattr(tts, "stream", failing_stream)
    response = speak(http, response_format="pcm")
    assert response.status_code == 200 and len(response.content) == 3200  # the chunk before the failure
    monkeypatch.undo()
    assert_idle(http)
    assert speak(http).status_code == 200


def test_client_hang_up_frees_the_slot(server, http):
    body = {"model": "tts-1", "input": "One two three. Four five six seven. Eight nine ten.", "voice": "alice"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, headers=AUTH, timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the header, then hang up mid-stream
    assert_idle(http)


def test_serve_subcommand_parses():
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "--port", "9001", "--api-key", "k"])
    assert (args.host, args.port, args.api_key, args.max_input_chars, args.max_queue) == ("127.0.0.1", 9001, "k",
                                                                                           4096, 64)
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-queue", "0"])


def test_load_benchmark_against_a_running_server(server):
    from benchmarks.server_load import main as load_benchmark

    result = load_benchmark(["--url", server.url, "--api-key", API_KEY, "--voice", "alice", "--clients", "2",
                             "--requests", "1", "--text", "Hi."])["results"][0]
    assert result["ok"] == 2 and result["errors"] == 0 and 0 < result["ttfa_p50_s"] <= result["total_p95_s"]


# ---- load ------------------------------------------------------------------------------------------------------
def test_load_32_concurrent_clients(server, http):
    clients, per_client = 32, 2
    process = psutil.Process()
    speak(http)  # warm-up, so one-time allocations do not count as growth
    rss_before = peak = process.memory_info().rss
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(clients + 1, timeout=30)
    done = threading.Event()

    def watch_memory() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, process.memory_info().rss)

    def one_client(index: int) -> None:
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
        start.wait()
        for j in range(per_client):
            fmt = "wav" if (index + j) % 2 else "pcm"
            t0 = time.perf_counter()
            try:
                data = c.audio.speech.create(model="tts-1", voice="alice", input=f"Hi number {index}.",
                                             response_format=fmt, extra_body={"seed": index * 10 + j}).content
                if fmt == "wav":
                    assert sf.info(io.BytesIO(data)).samplerate == RATE
                assert len(data) > 44
                latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted, never raised from a thread
                errors.append(f"client {index} request {j}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one_client, args=(i,), daemon=True) for i in range(clients)]
    monitor = threading.Thread(target=watch_memory, daemon=True)
    for t in threads:
        t.start()
    monitor.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max(1.0, 120 - (time.perf_counter() - t0)))
    elapsed = time.perf_counter() - t0
    done.set()
    monitor.join(timeout=5)
    growth_mb = (process.memory_info().rss - rss_before) / 2**20
    peak_mb = (peak - rss_before) / 2**20

    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"
    latencies.sort()
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    print(f"\nload: {len(latencies) + len(errors)} requests from {clients} clients in {elapsed:.1f} s, "
          f"{len(errors)} errors, p50 {p50:.2f} s, p95 {p95:.2f} s, RSS +{growth_mb:.0f} MB (peak +{peak_mb:.0f} MB)")
    assert errors == [], errors[:3]
    assert len(latencies) == clients * per_client
    assert elapsed < 90
    assert peak_mb < 300
    assert_idle(http)
