"""The FastAPI app behind `sac-tts serve`: OpenAI-compatible speech plus saved-voice management.

Errors use OpenAI's JSON shape, `{"error": {"message", "type", "param", "code"}}`, so the official client raises
its usual exceptions with our messages.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import TTSError
from .server_audio import AudioFormat, available_formats, decode_upload, encode, to_pcm16, wav_header
from .server_pool import ChunkStream, InferencePool, ServerBusy
from .voices import VoiceNotFound, VoiceStore

log = logging.getLogger("tts.server")
MODEL_ID = "sac-tts"


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(error: APIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(error_body(error.message, error.kind, error.param, error.code), error.status, headers)


class VoiceRef(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body; `seed` and `temperature` are our extras, unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str
    voice: str | VoiceRef
    response_format: str = "wav"  # OpenAI's default is mp3; a streamable default suits a local server better
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: str | None = None
    instructions: str | None = None  # accepted for compatibility, has no effect
    seed: int | None = None
    temperature: float | None = Field(None, gt=0.0, le=10.0)

    def overrides(self) -> dict[str, Any]:
        """The `SynthesisOptions` fields this request sets."""
        extras = {"seed": self.seed, "temperature": self.temperature}
        return {"speed": self.speed, **{k: v for k, v in extras.items() if v is not None}}


def _validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """Pydantic errors -> one readable line naming the fields, and the first field (OpenAI's `param`)."""
    parts, param = [], None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        param = param or loc.split(".")[0] or None
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})")
            continue
        got = ""
        if "input" in err and err.get("type") != "missing":  # a missing field's "input" is the whole body
            shown = repr(err["input"])
            got = f" (got {shown[:57] + '...' if len(shown) > 60 else shown})"
        parts.append(f"{loc or 'body'}: {err['msg']}{got}")
    return "; ".join(parts) or "invalid request", param


class _LimitedReceive:
    """Counts request-body bytes as they arrive and stops at `limit`, so an oversize body never fills memory."""

    def __init__(self, receive: Receive, limit: int, what: str):
        self.receive, self.limit, self.what, self.seen = receive, limit, what, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise _too_large(self.what, self.limit)
        return message


def _too_large(what: str, limit: int) -> APIError:
    return APIError(413, f"{what} is larger than the limit of {limit / 2**20:.1f} MB ({limit} bytes)",
                    code="request_too_large")


def _limited_request(request: Request, limit: int, what: str) -> Request:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(what, limit)
    return Request(request.scope, _LimitedReceive(request.receive, limit, what))


class _AudioStream(StreamingResponse):
    """A StreamingResponse that always runs `on_close`: after the last chunk, an error, or a client hang-up."""

    def __init__(self, body: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs: Any):
        super().__init__(body, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _Guard:
    """Outermost app layer: the API key on every path, and a JSON 500 (logged once) for any unexpected error."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):  # constant time: the key cannot be guessed bytewise
                message = ("missing API key: send 'Authorization: Bearer KEY'" if not given
                           else "incorrect API key")
                await JSONResponse(error_body(message, code="invalid_api_key"), 401)(scope, receive, send)
                return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except ClientDisconnect:
            log.info("client hung up during %s %s", scope.get("method"), scope.get("path"))
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # otherwise the response is already under way and can only be cut short
                body = error_body(f"internal server error ({type(exc).__name__}); see the server log",
                                  kind="server_error", code="internal_error")
                await JSONResponse(body, 500)(scope, receive, send)


def build_app(tts, voices, *, api_key: str | None = None, max_input_chars: int = 4096, max_queue: int = 64,
              workers: int = 1, max_upload_bytes: int = 20 * 2**20) -> FastAPI:
    pool = InferencePool(workers, max_queue)
    formats = available_formats()
    sample_rate = int(tts.sample_rate)
    # JSON may escape each character as up to 12 bytes (a \uXXXX surrogate pair per 2 characters).
    max_json_bytes = 16 * max_input_chars + 64 * 1024

    async def lifespan(_app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(title="sac-tts", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible text-to-speech with zero-shot voice cloning. Audio is 16 kHz mono.")
    app.add_middleware(_Guard, api_key=api_key)
    app.state.pool = pool  # for /health-style introspection and tests

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(TTSError)
    async def _tts_error(_request: Request, exc: TTSError) -> JSONResponse:
        return _error_response(APIError(400, str(exc)))

    @app.exception_handler(ServerBusy)
    async def _busy(_request: Request, exc: ServerBusy) -> JSONResponse:
        log.warning("%s", exc)
        return _error_response(APIError(503, str(exc), code="server_busy", kind="server_error"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return _error_response(APIError(400, message, param=param))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": MODEL_ID, "sample_rate": sample_rate,
                "requests_in_progress": pool.active, "max_queue": pool.max_queue}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "sac-tts"}]}

    @app.post("/v1/audio/speech", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": SpeechRequest.model_json_schema()}}}})
    async def speech(request: Request) -> Response:
        """Speech for `input` in a saved `voice`: wav/pcm are streamed as synthesized; pcm is s16le mono 16 kHz."""
        body = await _limited_request(request, max_json_bytes, "the request body").body()
        req, fmt = _parse_speech(body, formats, max_input_chars)
        name = req.voice if isinstance(req.voice, str) else req.voice.id
        try:
            voice = await run_in_threadpool(voices.get, name)
        except VoiceNotFound:
            known = ", ".join(await run_in_threadpool(voices.names)) or "none saved yet"
            raise APIError(400, f"voice {name!r} not found (known voices: {known}); add it with POST /v1/voices",
                           param="voice", code="voice_not_found") from None
        text, overrides = req.input, req.overrides()

        started = time.perf_counter()
        stream = ChunkStream(pool, lambda: tts.stream(text, voice, **overrides))
        try:
            first = await stream.next()  # bad text or options fail here, while a 400 can still be sent
        except BaseException:
            stream.close()
            raise
        headers = {"X-Sample-Rate": str(sample_rate)}
        info = f"voice={name} chars={len(text)} format={fmt.name} first_audio={time.perf_counter() - started:.2f}s"
        if fmt.streamed:
            header = wav_header(sample_rate) if fmt.name == "wav" else b""
            return _AudioStream(_stream_body(stream, first, header, sample_rate, info, started), stream.close,
                                media_type=fmt.media_type, headers=headers)
        try:
            data = await _encode_all(pool, stream, first, sample_rate, fmt, info, started)
        finally:
            stream.close()
        return Response(data, media_type=fmt.media_type, headers=headers)

    @app.get("/v1/voices")
    async def list_voices() -> dict[str, Any]:
        return {"object": "list", "data": await run_in_threadpool(voices.list)}

    @app.post("/v1/voices", status_code=201)
    async def add_voice(request: Request) -> dict[str, Any]:
        """multipart/form-data: `name`, `text` (the transcript of the sample), `file` (1-30 s of speech)."""
        limited = _limited_request(request, max_upload_bytes, "the upload")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise APIError(400, "send multipart/form-data with the fields 'name', 'text' and 'file'")
        async with limited.form(max_files=1, max_fields=8) as form:
            name, text, upload = form.get("name"), form.get("text"), form.get("file")
            for field, value in (("name", name), ("text", text)):
                if not isinstance(value, str) or not value.strip():
                    raise APIError(400, f"the form field {field!r} is missing or empty", param=field)
            if not isinstance(upload, UploadFile):
                raise APIError(400, "the form field 'file' (the voice's audio) is missing", param="file")
            try:
                VoiceStore.check_name(name)  # before the costly decode and clone
            except TTSError as exc:
                raise APIError(400, str(exc), param="name") from None
            filename = upload.filename or "upload"
            try:
                audio, rate = await run_in_threadpool(decode_upload, upload.file, filename)
            except TTSError as exc:
                raise APIError(400, str(exc), param="file") from None
        started = time.perf_counter()
        voice = await pool.run_admitted(lambda: tts.clone_voice(audio, text, sample_rate=rate))
        try:
            await run_in_threadpool(voices.add, name, voice)
        except TTSError as exc:  # a name the store refuses
            raise APIError(400, str(exc), param="name") from None
        log.info("voice %r added from %s (%.1f s) in %.2f s", name, filename, voice.duration_s,
                 time.perf_counter() - started)
        return {"name": name, "text": voice.text, "duration_s": round(voice.duration_s, 2)}

    @app.delete("/v1/voices/{name}")
    async def delete_voice(name: str) -> dict[str, Any]:
        try:
            await run_in_threadpool(voices.remove, name)
        except VoiceNotFound as exc:
            raise APIError(404, str(exc), param="name", code="voice_not_found") from None
        log.info("voice %r removed", name)
        return {"id": name, "object": "voice", "deleted": True}

    return app


def _parse_speech(body: bytes, formats: dict[str, AudioFormat],
                  max_input_chars: int) -> tuple[SpeechRequest, AudioFormat]:
    try:
        req = SpeechRequest.model_validate_json(body)
    except ValidationError as exc:
        message, param = _validation_message(exc)
        raise APIError(400, message, param=param) from None
    if not req.input.strip():
        raise APIError(400, "input is empty: give the text to speak", param="input")
    if len(req.input) > max_input_chars:
        raise APIError(400, f"input is {len(req.input)} characters; the limit is {max_input_chars} (split the text "
                            "into several requests)", param="input", code="input_too_long")
    fmt = formats.get(req.response_format)
    if fmt is None:
        raise APIError(400, f"response_format {req.response_format!r} is not supported; use one of: "
                            f"{', '.join(formats)} (pcm is 16-bit little-endian mono at 16 kHz)",
                       param="response_format")
    if req.stream_format not in (None, "audio"):
        raise APIError(400, f"stream_format {req.stream_format!r} is not supported; leave it out or use 'audio' "
                            "(wav and pcm are always streamed)", param="stream_format")
    return req, fmt


async def _stream_body(stream: ChunkStream, first: np.ndarray | None, header: bytes, sample_rate: int,
                       info: str, started: float) -> AsyncIterator[bytes]:
    samples, chunk = 0, first
    if header:
        yield header
    while chunk is not None:
        if chunk.size:
            samples += chunk.size
            yield to_pcm16(chunk)
        try:
            chunk = await stream.next()
        except Exception:  # the status line is sent: all we can do is end the audio early and say why in the log
            log.exception("speech %s failed after %.1f s of audio; the response was cut short", info,
                          samples / sample_rate)
            return
    log.info("speech %s: %.2f s of audio in %.2f s", info, samples / sample_rate, time.perf_counter() - started)


async def _encode_all(pool: InferencePool, stream: ChunkStream, first: np.ndarray | None, sample_rate: int,
                      fmt: AudioFormat, info: str, started: float) -> bytes:
    chunks, chunk = [], first
    while chunk is not None:
        chunks.append(chunk)
        chunk = await stream.next()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    data = await pool.run(lambda: encode(audio, sample_rate, fmt))
    log.info("speech %s: %.2f s of audio in %.2f s", info, audio.size / sample_rate, time.perf_counter() - started)
    return data
