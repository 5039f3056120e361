"""The HTTP service: FastAPI app with the scoring API and the web page.

Endpoints (JSON unless noted):

- ``POST /v1/predict`` — multipart field ``file``: scores, MC-dropout uncertainty, per-segment
  timeline (and encoder tags when the encoder has them) for one song.
- ``POST /v1/compare`` — multipart fields ``a`` and ``b``: P(listeners prefer A) and both
  predictions.
- ``GET /v1/model`` — the model card; ``GET /healthz`` — liveness and load.
- ``GET /`` — the web page (static files shipped in the package, no external network).
- ``GET /docs``, ``GET /openapi.json`` — the generated API docs, served with no
  outside request (:mod:`apexmusic.api_docs`).

Resource bounds, so a burst of uploads or a crowd of slow clients never exhausts memory or
disk and never locks other clients out (:mod:`apexmusic.serve_guard`):

- Request headers must arrive within ``header_timeout_s`` of the connection opening (408,
  connection closed); bodies within ``body_timeout_s`` of the headers (408).
- Bodies over the limit get 413: a declared ``Content-Length`` before a byte is read, a
  chunked body as soon as it passes the limit.
- A request is admitted only once its whole body has arrived, so slow uploads cannot hold
  the gate: at most ``max_concurrency + max_queue`` admitted requests, the rest get 503 with
  ``Retry-After``. Inside, a semaphore lets ``max_concurrency`` of them decode and score at a
  time, in the thread pool, so the event loop stays free. At most ``max_uploading`` bodies
  arrive at once.
- Decoding is bounded in samples × channels (``decode_budget``), checked against the
  container header before decoding (422), and enforced while decoding when the header has no
  duration.
- Exactly one file part per song field; uploads are spooled to a private temporary folder
  and decoded from there; no endpoint reads a path named by a request, and no response
  carries a server path.

The model loads once, at startup (lifespan).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures, and the
fastapi names they use are imported inside ``create_app`` (kept out of ``import apexmusic``).
"""

import asyncio
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from apexmusic.api_docs import mount_offline_docs
from apexmusic.errors import ApexError, AudioContentError, AudioDecodeError, ConfigError, InputError
from apexmusic.predict import DEFAULT_MC_SAMPLES, Predictor, compare_scores
from apexmusic.serve_guard import (
    MB,
    UploadGate,
    decode_limit_seconds,
    error_body,
    header_deadline_protocol,
    scrub_paths,
)
from apexmusic.sources import AUDIO_EXTENSIONS, Song

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers on top of the file bytes
_COPY_CHUNK = 1024 * 1024


@dataclass
class ServeConfig:
    max_upload_mb: float = 50.0  # per uploaded file
    max_seconds: float = 900.0  # longest song accepted
    max_concurrency: int = 2  # songs decoded and scored at once
    max_queue: int = 16  # admitted requests waiting beyond those; more get 503
    max_uploading: int = 64  # request bodies arriving at once; more get 503
    header_timeout_s: float = 10.0  # request headers complete within this of connecting
    body_timeout_s: float = 60.0  # request body complete within this of its headers
    decode_budget: float | None = None  # samples x channels per song; None: max_seconds at 96 kHz stereo
    mc_samples: int = DEFAULT_MC_SAMPLES
    retry_after_s: int = 2
    weights: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        positive = {
            "max_upload_mb": self.max_upload_mb,
            "max_seconds": self.max_seconds,
            "max_concurrency": self.max_concurrency,
            "max_uploading": self.max_uploading,
            "header_timeout_s": self.header_timeout_s,
            "body_timeout_s": self.body_timeout_s,
            "retry_after_s": self.retry_after_s,
        }
        if self.decode_budget is not None:
            positive["decode_budget"] = self.decode_budget
        for name, value in positive.items():
            if not (isinstance(value, int | float) and value > 0 and value != float("inf")):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("max_concurrency", "max_uploading", "max_queue", "mc_samples", "retry_after_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_upload_mb * MB) + MULTIPART_SLACK

    @property
    def samples_budget(self) -> float:
        """Samples x channels one song may decode to."""
        return self.decode_budget if self.decode_budget is not None else self.max_seconds * 96_000 * 2


def _schemas() -> Any:
    """Pydantic response models: they document the JSON in ``/docs`` and ``/openapi.json``."""
    from types import SimpleNamespace

    from pydantic import BaseModel, Field

    class SegmentOut(BaseModel):
        start_s: float
        end_s: float
        scores: dict[str, float | None] = Field(description="this segment scored on its own")

    class TagOut(BaseModel):
        tag: str
        prob: float

    class PredictionOut(BaseModel):
        id: str
        path: str = Field(description="the uploaded file's name")
        scores: dict[str, float | None] = Field(
            description="task -> score (0-100 popularity, 1-5 aesthetics); null: task not trained"
        )
        uncertainty: dict[str, float | None] = Field(description="task -> MC-dropout standard deviation")
        timeline: list[SegmentOut]
        duration_s: float
        model_id: str
        tags: list[TagOut] | None = Field(None, description="top encoder tags, when the encoder has them")
        novelty: float | None = Field(None, description="RMS z-score vs the training data; ~1 in range")
        intervals: dict[str, dict[str, float]] = Field({}, description="task -> {lo, hi} at interval_level")
        interval_level: float | None = Field(None, description="e.g. 0.9: calibrated coverage of lo-hi")
        in_domain: bool | None = Field(None, description="false: the song is unlike the training data")
        domain_distance: float | None = Field(None, description="distance to the training data, ~1 in domain")
        simulated_training_data: bool | None = Field(None, description="model trained on simulated songs")

    class ComparisonOut(BaseModel):
        prob_a: float = Field(description="P(listeners prefer A)")
        prob_b: float
        method: str = Field(description="'comparator' (arena-trained) or 'fallback'")
        a: PredictionOut
        b: PredictionOut

    class HealthOut(BaseModel):
        status: str
        model_id: str
        in_flight: int = Field(description="admitted requests: queued or being scored")
        uploading: int = Field(description="request bodies still arriving")
        rejected: int = Field(description="503s since start")
        timed_out: int = Field(description="408s for late bodies since start")

    class ErrorOut(BaseModel):
        error: str
        detail: str

    return SimpleNamespace(
        prediction=PredictionOut, comparison=ComparisonOut, health=HealthOut, error=ErrorOut
    )


def create_app(
    model_dir: str | Path | None = None,
    config: ServeConfig | None = None,
    predictor: Predictor | None = None,
) -> Any:
    """The FastAPI app; pass ``predictor`` to reuse an already loaded one (tests, benchmarks)."""
    from fastapi import FastAPI, File, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if model_dir is None and predictor is None:
        raise ValueError("create_app needs model_dir or predictor")
    config = config or ServeConfig()
    gate_state = {"active": 0, "uploading": 0, "rejected": 0, "timed_out": 0}
    schemas = _schemas()
    errors = {
        code: {"model": schemas.error, "description": text}
        for code, text in {
            408: "request headers or body not received in time",
            413: "upload over the size limit",
            415: "not audio",
            422: "too long, over the decode budget, unusable audio, or missing / repeated fields",
            503: "busy: retry after Retry-After seconds",
        }.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = predictor or Predictor.from_pretrained(
            model_dir,
            weights=config.weights,
            device=config.device,
            mc_samples=config.mc_samples,
            max_seconds=config.max_seconds,
        )
        if isinstance(loaded, Predictor) and loaded.max_seconds != config.max_seconds:
            loaded = loaded.with_max_seconds(config.max_seconds)  # never mutate a caller's predictor
        app.state.predictor = loaded
        app.state.serve_config = config
        app.state.slots = asyncio.Semaphore(config.max_concurrency)
        app.state.upload_dir = Path(tempfile.mkdtemp(prefix="apexmusic-uploads-"))  # mode 0700
        log.info("serving model %s", app.state.predictor.model_id)
        try:
            yield
        finally:
            shutil.rmtree(app.state.upload_dir, ignore_errors=True)

    app = FastAPI(
        title="apexmusic",
        summary="Predict streams, likes and perceptual aesthetics of AI-generated songs from audio.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    mount_offline_docs(app)
    body_limits = {"/v1/predict": config.max_body_bytes, "/v1/compare": 2 * config.max_body_bytes}
    app.state.serve_config = config  # read by the server runners (header deadline)
    app.add_middleware(
        UploadGate,
        limit=config.max_concurrency + config.max_queue,
        max_uploading=config.max_uploading,
        body_timeout_s=config.body_timeout_s,
        retry_after_s=config.retry_after_s,
        state=gate_state,
        body_limits=body_limits,
    )

    # ---- errors as JSON ------------------------------------------------------------------
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        message = (
            f"request body over the {config.max_upload_mb:g} MB per-file upload limit"
            if exc.status_code == 413
            else str(exc.detail)
        )
        return JSONResponse(
            error_body(kind, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()]
        return JSONResponse(
            error_body("invalid_request", f"missing or invalid fields: {fields}"), status_code=422
        )

    @app.exception_handler(ApexError)
    async def _apex_error(request: Request, exc: ApexError):
        if isinstance(exc, AudioDecodeError):
            status = 415
        elif isinstance(exc, AudioContentError | InputError | ConfigError):
            status = 422
        else:  # an unexpected failure inside decoding or encoding
            status = 500
        return JSONResponse(error_body(exc.kind, str(exc)), status_code=status)

    # ---- endpoints -----------------------------------------------------------------------
    @app.post(
        "/v1/predict",
        max_body_size=body_limits["/v1/predict"],
        summary="Score one song (multipart field 'file')",
        response_model=schemas.prediction,
        responses=errors,
    )
    async def predict(request: Request, file: Annotated[UploadFile, File(description="an audio file")]):
        await _one_part_each(request, ("file",))
        pred = await _score(request.app, [file])
        return scrub_paths(pred[0].to_dict())

    @app.post(
        "/v1/compare",
        max_body_size=body_limits["/v1/compare"],
        summary="P(listeners prefer A over B) (multipart fields 'a' and 'b')",
        response_model=schemas.comparison,
        responses=errors,
    )
    async def compare(
        request: Request,
        a: Annotated[UploadFile, File(description="song A")],
        b: Annotated[UploadFile, File(description="song B")],
    ):
        await _one_part_each(request, ("a", "b"))
        pa, pb = await _score(request.app, [a, b])
        prob, method = compare_scores(pa.scores, pb.scores, request.app.state.predictor.comparator)
        body = {"prob_a": prob, "prob_b": 1.0 - prob, "method": method, "a": pa.to_dict(), "b": pb.to_dict()}
        return scrub_paths(body)

    @app.get("/v1/model", summary="The model card")
    async def model_card(request: Request):
        card = request.app.state.predictor.card()
        card["limits"] = {k: v for k, v in asdict(config).items() if k not in ("weights", "device")}
        card["limits"]["decode_budget"] = config.samples_budget
        return scrub_paths(card)

    @app.get("/healthz", summary="Liveness and load", response_model=schemas.health)
    async def healthz(request: Request):
        return {
            "status": "ok",
            "model_id": request.app.state.predictor.model_id,
            "in_flight": gate_state["active"],
            "uploading": gate_state["uploading"],
            "rejected": gate_state["rejected"],
            "timed_out": gate_state["timed_out"],
        }

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def _score(app_: Any, uploads: list[Any]) -> list[Any]:
        from starlette.concurrency import run_in_threadpool

        for upload in uploads:
            _check_content_type(upload)
        async with app_.state.slots:
            paths = [await run_in_threadpool(_spool, upload, app_.state.upload_dir) for upload in uploads]
            predictor = app_.state.predictor
            try:
                predictor = await run_in_threadpool(_within_budget, predictor, paths, config)
                songs = [Song(_song_id(u.filename), str(p)) for u, p in zip(uploads, paths, strict=True)]
                preds = await run_in_threadpool(predictor.predict, songs, len(songs))
            except ApexError as exc:  # name the upload, never the server's temp path
                message = str(exc)
                if isinstance(exc, AudioContentError) and predictor is not app_.state.predictor:
                    message += (
                        f" (the decode budget of {config.samples_budget:.3g} samples x channels allows "
                        f"{predictor.max_seconds:.3g} s at this file's rate and channels)"
                    )
                for upload, path in zip(uploads, paths, strict=True):
                    message = message.replace(str(path), _upload_name(upload))
                raise type(exc)(message) from None
            finally:
                for p in paths:
                    p.unlink(missing_ok=True)
        for pred, upload in zip(preds, uploads, strict=True):
            pred.path = _upload_name(upload)  # the client's file name, never the server's temp path
        return preds

    return app


async def _one_part_each(request: Any, fields: tuple[str, ...]) -> None:
    """Each song field must be sent exactly once, and no other file may ride along."""
    form = await request.form()
    files = [key for key, value in form.multi_items() if not isinstance(value, str)]
    repeated = sorted({key for key in files if files.count(key) > 1})
    unexpected = sorted({key for key in files if key not in fields})
    if repeated or unexpected:
        problems = [f"field {key!r} sent {files.count(key)} times" for key in repeated]
        problems += [f"unexpected file field {key!r}" for key in unexpected]
        wanted = " and ".join(repr(f) for f in fields)
        raise InputError(f"send exactly one file in {wanted} per request: {'; '.join(problems)}")


def _within_budget(predictor: Any, paths: list[Path], config: ServeConfig) -> Any:
    """Refuse (AudioContentError) any upload whose header says it decodes past the samples budget;
    otherwise the predictor, limited to the tightest seconds the budget allows these files."""
    limit = min(decode_limit_seconds(p, config.samples_budget, config.max_seconds) for p in paths)
    return predictor if limit >= config.max_seconds else predictor.with_max_seconds(limit)


def _check_content_type(upload: Any) -> None:
    """Refuse declared non-audio types early (415); undeclared / generic types are sniffed by
    decoding, which raises AudioDecodeError (also 415) for non-audio bytes."""
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    generic = ("", "application/octet-stream", "application/ogg", "binary/octet-stream")
    if ctype in generic or ctype.startswith(("audio/", "video/")):
        return
    raise AudioDecodeError(f"{_upload_name(upload)}: content type {ctype!r} is not audio")


def _spool(upload: Any, folder: Path) -> Path:
    """Copy an upload into a private temp file (decoders need a seekable file)."""
    suffix = Path(upload.filename or "").suffix.lower()
    suffix = suffix if suffix in AUDIO_EXTENSIONS else ".bin"
    fd, name = tempfile.mkstemp(suffix=suffix, dir=folder)
    with os.fdopen(fd, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, _COPY_CHUNK)
    return Path(name)


def _upload_name(upload: Any) -> str:
    """The client's file name without any folder part: a request never echoes back paths."""
    return Path(upload.filename or "upload").name or "upload"


def _song_id(filename: str | None) -> str:
    stem = Path(filename or "upload").stem
    return re.sub(r"[^\w.\- ]+", "_", stem)[:200] or "upload"


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "info") -> Any:
    """uvicorn settings for ``app``: its h11 protocol with the app's header deadline, and the
    keep-alive idle limit no longer than that deadline."""
    import uvicorn

    config = getattr(app.state, "serve_config", None) or ServeConfig()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=header_deadline_protocol(config.header_timeout_s),
        timeout_keep_alive=min(5, max(1, int(config.header_timeout_s))),
    )


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread (tests, benchmarks); yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("apexmusic")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0"


def run_server(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    log_level: str = "info",
) -> None:
    """Load the model and serve until interrupted (``apexmusic serve``)."""
    import uvicorn

    app = create_app(model_dir, config)
    uvicorn.Server(uvicorn_config(app, host, port, log_level)).run()


__all__ = ["ServeConfig", "background_server", "create_app", "run_server", "uvicorn_config"]
