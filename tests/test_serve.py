"""The HTTP service: every endpoint and error path, upload limits, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from apexmusic.predict import Predictor
from apexmusic.serve import ServeConfig, background_server, create_app
from apexmusic.tasks import ALL_TASKS

HIPHOP = "acestep_hiphop_rap_shirt_song.opus"
JAZZ = "acestep_saxphone_jazz.opus"


@pytest.fixture(scope="module")
def song(shared_data: Path) -> Path:
    return shared_data / "real-audio" / HIPHOP


@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    app = create_app(predictor=predictor, config=ServeConfig(max_upload_mb=2, max_seconds=120))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def predicted(client, song):
    r = client.post("/v1/predict", files={"file": (song.name, song.read_bytes(), "audio/ogg")})
    assert r.status_code == 200, r.text
    return r.json()


def _error(r, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"}
    if kind:
        assert body["error"] == kind
    return body


# ---- the endpoints --------------------------------------------------------------------------


def test_predict_returns_the_predictor_numbers(predicted, predictor, song):
    expected = predictor.predict(song)[0]
    assert predicted["id"] == song.stem and predicted["path"] == song.name  # the client's name
    assert predicted["model_id"] == predictor.model_id
    assert predicted["scores"] == pytest.approx(expected.scores)
    assert predicted["uncertainty"] == pytest.approx(expected.uncertainty)
    assert set(predicted["scores"]) == set(ALL_TASKS)
    assert len(predicted["timeline"]) == 3
    assert predicted["timeline"][0]["start_s"] == 0.0 and set(predicted["timeline"][0]["scores"]) == set(
        ALL_TASKS
    )
    assert predicted["duration_s"] == pytest.approx(63.53, abs=0.05)


def test_compare_returns_probabilities_and_both_predictions(client, song, shared_data, predicted):
    other = shared_data / "real-audio" / JAZZ
    files = {
        "a": (song.name, song.read_bytes(), "audio/ogg"),
        "b": (other.name, other.read_bytes(), "audio/ogg"),
    }
    r = client.post("/v1/compare", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "fallback"
    assert 0 < body["prob_a"] < 1 and body["prob_a"] + body["prob_b"] == pytest.approx(1)
    assert body["a"]["scores"] == pytest.approx(predicted["scores"])
    assert body["a"]["uncertainty"] == pytest.approx(predicted["uncertainty"])  # batch-independent
    assert body["b"]["path"] == JAZZ
    # symmetric: swapping the songs swaps the probability
    swapped = client.post("/v1/compare", files={"a": files["b"], "b": files["a"]}).json()
    assert swapped["prob_a"] == pytest.approx(body["prob_b"])


def test_model_card_health_docs_and_page(client, predictor):
    card = client.get("/v1/model").json()
    assert card["model_id"] == predictor.model_id and card["tasks"] == list(ALL_TASKS)
    assert card["encoder_spec"]["encoder"] == "handcrafted"
    assert card["card_markdown"].startswith("# ") and predictor.model_id in card["card_markdown"]
    assert card["limits"]["max_upload_mb"] == 2 and card["ranges"]["coherence"] == [1.0, 5.0]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model_id"] == predictor.model_id
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/compare", "/v1/model", "/healthz"} <= set(spec["paths"])
    post = spec["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"200", "408", "413", "415", "422", "503"} <= set(post["responses"])
    assert {"PredictionOut", "ComparisonOut", "ErrorOut"} <= set(spec["components"]["schemas"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/v1/predict" in js.text
    for path in ("/", "/static/app.js", "/static/style.css"):  # nothing from another host (no CDN)
        text = client.get(path).text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


# ---- error paths ----------------------------------------------------------------------------


def test_413_for_an_upload_over_the_limit(client, shared_data):
    big = shared_data / "real-audio" / "suno_01_en.mp3"  # 3.5 MB > 2 MB limit
    body = _error(client.post("/v1/predict", files={"file": (big.name, big.read_bytes(), "audio/mpeg")}), 413)
    assert body["error"] == "too_large" and "limit" in body["detail"]


def _asgi_upload(app, total: int, chunk: int, declare_length: bool) -> tuple[int, int]:
    """Drive the ASGI app directly with a body of ``total`` bytes; returns (status, bytes read)."""
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    if declare_length:
        headers.append((b"content-length", str(total).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = {"bytes": 0}
    status = {}

    async def receive():
        if sent["bytes"] >= total:
            return {"type": "http.disconnect"}
        n = min(chunk, total - sent["bytes"])
        body = head if sent["bytes"] == 0 else b"\0" * n
        sent["bytes"] += len(body) if sent["bytes"] == 0 else n
        return {"type": "http.request", "body": body, "more_body": sent["bytes"] < total}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]

    async def run():
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    return status["code"], sent["bytes"]


def test_413_before_reading_a_declared_oversized_body(predictor):
    app = create_app(predictor=predictor, config=ServeConfig(max_upload_mb=1))
    status, read = _asgi_upload(app, total=200 * 1024 * 1024, chunk=64 * 1024, declare_length=True)
    assert status == 413 and read == 0  # refused on Content-Length alone, not a byte read


def test_413_while_streaming_a_chunked_body(predictor):
    app = create_app(predictor=predictor, config=ServeConfig(max_upload_mb=1))
    total = 200 * 1024 * 1024
    status, read = _asgi_upload(app, total=total, chunk=64 * 1024, declare_length=False)
    assert status == 413
    assert read < 1.2 * 1024 * 1024  # stopped just past the 1 MB limit, not after 200 MB


def test_415_for_declared_non_audio(client):
    _error(client.post("/v1/predict", files={"file": ("a.txt", b"hello", "text/plain")}), 415, "decode")


def test_415_for_undecodable_bytes_and_no_server_path_is_read(client, song):
    # The filename names a real audio file on the server; the bytes are not audio. The service
    # must decode what was uploaded (and fail), never open the named path.
    r = client.post(
        "/v1/predict", files={"file": (str(song), b"\x00garbage" * 200, "application/octet-stream")}
    )
    body = _error(r, 415, "decode")
    assert body["detail"].startswith(f"{song.name}: not a decodable audio file")
    assert "apexmusic-uploads" not in body["detail"] and str(song.parent) not in body["detail"]


def test_422_for_a_missing_field(client, song):
    _error(
        client.post("/v1/predict", files={"wrong": (song.name, b"x", "audio/ogg")}), 422, "invalid_request"
    )
    _error(client.post("/v1/compare", files={"a": (song.name, b"x", "audio/ogg")}), 422, "invalid_request")


def test_422_for_a_song_over_max_seconds(predictor, song):
    from fastapi.testclient import TestClient

    app = create_app(predictor=predictor, config=ServeConfig(max_seconds=20))
    with TestClient(app) as c:
        body = _error(c.post("/v1/predict", files={"file": (song.name, song.read_bytes(), "audio/ogg")}), 422)
    assert body["error"] == "content" and "20" in body["detail"]


def test_model_loads_once_at_startup(predict_model_dir, monkeypatch, song):
    from fastapi.testclient import TestClient

    calls = []
    real = Predictor.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Predictor, "from_pretrained", classmethod(counting))
    app = create_app(predict_model_dir, ServeConfig(mc_samples=2))
    assert calls == []  # nothing loads before startup
    with TestClient(app) as c:
        assert len(calls) == 1
        for _ in range(2):
            r = c.post("/v1/predict", files={"file": (song.name, song.read_bytes(), "audio/ogg")})
            assert r.status_code == 200
        assert c.get("/v1/model").json()["mc_samples"] == 2
    assert len(calls) == 1


# ---- concurrency ----------------------------------------------------------------------------


class _BlockingPredictor:
    """Wraps a predictor; ``predict`` waits for ``release`` so requests pile up on purpose."""

    def __init__(self, inner: Predictor):
        self.inner, self.release, self.entered = inner, threading.Event(), threading.Semaphore(0)
        self.model_id, self.comparator, self.max_seconds = inner.model_id, None, None

    def predict(self, items, batch_size=8):
        self.entered.release()
        assert self.release.wait(60)
        return self.inner.predict(items, batch_size)

    def card(self):
        return self.inner.card()


def test_busy_server_answers_503_with_retry_after_and_stays_responsive(predictor, song):
    blocking = _BlockingPredictor(predictor)
    app = create_app(predictor=blocking, config=ServeConfig(max_concurrency=1, max_queue=1, retry_after_s=3))
    data = song.read_bytes()
    with background_server(app) as url:
        results = []

        def upload():
            with httpx.Client(base_url=url, timeout=120) as c:
                results.append(
                    c.post("/v1/predict", files={"file": (song.name, data, "audio/ogg")}).status_code
                )

        threads = [threading.Thread(target=upload) for _ in range(2)]  # one running, one queued
        threads[0].start()
        assert blocking.entered.acquire(timeout=60)  # the first is inside inference
        threads[1].start()
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 30
            while c.get("/healthz").json()["in_flight"] < 2:  # the event loop answers meanwhile
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = c.post("/v1/predict", files={"file": (song.name, data, "audio/ogg")})
            body = _error(r, 503, "busy")
            assert r.headers["retry-after"] == "3" and "busy" in body["detail"]
            blocking.release.set()
            for t in threads:
                t.join(120)
            assert results == [200, 200]
            assert c.get("/healthz").json() == {
                "status": "ok",
                "model_id": predictor.model_id,
                "in_flight": 0,
                "uploading": 0,
                "rejected": 1,
                "timed_out": 0,
            }


def _read_response(sock) -> str:
    """Read one HTTP response: headers, then as many body bytes as Content-Length says
    (the body may arrive in a later packet than the headers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_real_server_answers_413_to_headers_alone(predictor):
    """Over a real socket: announce 1 GB, send no body at all, and get the 413 back."""
    import socket

    app = create_app(predictor=predictor, config=ServeConfig(max_upload_mb=1))
    with background_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n"
            )
            reply = _read_response(sock)
    assert reply.startswith("HTTP/1.1 413")
    assert '"error": "too_large"' in reply


# ---- slow clients ---------------------------------------------------------------------------


def _slow_client(url: str, kind: str, results: list, pace_s: float = 0.25, give_up_s: float = 15.0) -> None:
    """A loopback client that dribbles its request: ``silent`` sends nothing, ``headers`` never
    finishes its headers, ``body`` declares 200 KB and sends a few bytes per step. It stops at
    the first reply and records (kind, status line, seconds connected)."""
    import select
    import socket

    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=give_up_s) as sock:
        if kind == "body":
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
        elif kind == "headers":
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        reply = b""
        while time.monotonic() - started < give_up_s:
            readable, _, _ = select.select([sock], [], [], pace_s)
            if readable:
                reply = _read_response(sock).encode()
                break
            piece = {"silent": b"", "headers": b"X-Slow: 1\r\n", "body": b"x" * 16}[kind]
            try:
                sock.sendall(piece)
            except OSError:
                break
    results.append((kind, reply.split(b"\r\n", 1)[0].decode(), time.monotonic() - started))


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory) -> bytes:
    from _audio_files import music_like, write_audio

    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    return write_audio(path, music_like(5.0, 22050), 22050).read_bytes()


def test_slow_clients_time_out_with_408_and_never_lock_others_out(predictor, short_wav):
    """20 slow clients (more than max_concurrency + max_queue = 2) stay connected while a normal
    client is served; each slow one gets a 408 about when its deadline passes."""
    config = ServeConfig(max_concurrency=1, max_queue=1, header_timeout_s=1.5, body_timeout_s=6.0)
    app = create_app(predictor=predictor, config=config)
    results: list = []
    kinds = ["silent"] * 2 + ["headers"] * 8 + ["body"] * 10
    with background_server(app) as url:
        threads = [threading.Thread(target=_slow_client, args=(url, kind, results)) for kind in kinds]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 10
            while c.get("/healthz").json()["uploading"] < 10:  # every slow body is arriving
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.get("/healthz").json()["in_flight"] == 0  # none of them holds an admission slot
            r = c.post("/v1/predict", files={"file": ("clip.wav", short_wav, "audio/wav")})
            assert r.status_code == 200, r.text
            assert sum(kind == "body" for kind, _, _ in results) == 0  # served while they dribbled
            for t in threads:
                t.join(30)
            health = c.get("/healthz").json()
    assert sorted(kind for kind, _, _ in results) == sorted(kinds)
    for kind, status, seconds in results:
        assert status == "HTTP/1.1 408 Request Timeout", (kind, status)
        deadline_s = config.header_timeout_s if kind != "body" else config.body_timeout_s
        assert deadline_s - 0.1 <= seconds < deadline_s + 5, (kind, seconds)
    assert health["timed_out"] == 10 and health["uploading"] == 0 and health["rejected"] == 0


def test_too_many_uploads_at_once_get_503(predictor, short_wav):
    app = create_app(predictor=predictor, config=ServeConfig(max_uploading=1, body_timeout_s=3.0))
    results: list = []
    with background_server(app) as url:
        slow = threading.Thread(target=_slow_client, args=(url, "body", results))
        slow.start()
        with httpx.Client(base_url=url, timeout=30) as c:
            deadline = time.monotonic() + 10
            while c.get("/healthz").json()["uploading"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = c.post("/v1/predict", files={"file": ("clip.wav", short_wav, "audio/wav")})
            body = _error(r, 503, "busy")
            assert "uploads in progress" in body["detail"] and r.headers["retry-after"] == "2"
            slow.join(30)
            assert results[0][1].startswith("HTTP/1.1 408")
            r = c.post("/v1/predict", files={"file": ("clip.wav", short_wav, "audio/wav")})
            assert r.status_code == 200  # the slot is free again after the deadline


def test_408_body_is_json_and_unread_bodies_are_not_waited_for(predictor):
    import socket

    app = create_app(predictor=predictor, config=ServeConfig(body_timeout_s=0.5))
    results: list = []
    with background_server(app) as url:
        _slow_client(url, "body", results, pace_s=0.1)
        [(_, status, _)] = results
        assert status.startswith("HTTP/1.1 408")
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            reply = _read_response(sock)
        assert reply.startswith("HTTP/1.1 408") and "connection: close" in reply.lower()
        assert '"error": "timeout"' in reply and "0.5 s" in reply
        # A body nobody reads (the route answers 405 at once) is not waited for either.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nab")
            assert _read_response(sock).startswith("HTTP/1.1 405")
            assert _closed_within(sock, 3.0)


def _closed_within(sock, seconds: float) -> bool:
    """Keep sending until the server closes the connection (True) or ``seconds`` pass."""
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"x" * 1000)
            if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                return True
        except BlockingIOError:
            pass
        except OSError:
            return True
        time.sleep(0.05)
    return False


# ---- decode budget --------------------------------------------------------------------------


def _flac_8ch_192k(path: Path, seconds: float, header_seconds: float | None) -> Path:
    """An 8-channel 192 kHz FLAC of ``seconds`` of silence whose STREAMINFO claims
    ``header_seconds`` (0: unknown length)."""
    from _audio_files import write_audio

    write_audio(path, np.zeros((int(seconds * 192_000), 8), np.float32), 192_000)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    if header_seconds is not None:
        packed = int.from_bytes(data[18:26], "big")
        packed = (packed & ~((1 << 36) - 1)) | int(header_seconds * 192_000)
        data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


class _CountingPredictor:
    def __init__(self, inner: Predictor):
        self.inner, self.calls, self.views = inner, 0, []
        self.model_id, self.comparator, self.max_seconds = inner.model_id, None, inner.max_seconds

    def predict(self, items, batch_size=8):
        self.calls += 1
        return self.inner.predict(items, batch_size)

    def with_max_seconds(self, max_seconds):
        view = _CountingPredictor(self.inner.with_max_seconds(max_seconds))
        self.views.append(view)
        return view

    def card(self):
        return self.inner.card()


def test_decompression_bomb_flac_is_refused_from_its_header(predictor, tmp_path):
    """The 8-channel 192 kHz, 1,300 s FLAC: under the 900 s limit's header tolerance, but 2e9
    samples to decode. 422 before any decoding."""
    import av

    bomb = _flac_8ch_192k(tmp_path / "bomb.flac", 0.5, header_seconds=1300)
    with av.open(str(bomb)) as c:
        assert c.duration / 1e6 == pytest.approx(1300) and c.streams.audio[0].codec_context.channels == 8
    counting = _CountingPredictor(predictor)
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor=counting, config=ServeConfig())) as c:
        r = c.post("/v1/predict", files={"file": ("bomb.flac", bomb.read_bytes(), "audio/flac")})
    body = _error(r, 422, "content")
    assert "8 channels at 192000 Hz for 1300 s" in body["detail"] and "budget" in body["detail"]
    assert counting.calls == 0  # refused from the header: nothing was decoded


def test_decode_budget_holds_when_the_header_has_no_length(predictor, tmp_path):
    stealth = _flac_8ch_192k(tmp_path / "stealth.flac", 3.0, header_seconds=0)
    config = ServeConfig(max_seconds=60, decode_budget=192_000 * 8 * 1.0)  # one second of it
    counting = _CountingPredictor(predictor)
    from fastapi.testclient import TestClient

    with TestClient(create_app(predictor=counting, config=config)) as c:
        r = c.post("/v1/predict", files={"file": ("stealth.flac", stealth.read_bytes(), "audio/flac")})
    body = _error(r, 422, "content")
    assert "decode budget of 1.54e+06 samples x channels allows 1 s" in body["detail"]
    [view] = counting.views
    assert view.max_seconds == pytest.approx(1.0) and view.calls == 1  # decoded under the budget's seconds
    # the same file is fine where the budget allows it
    with TestClient(create_app(predictor=predictor, config=ServeConfig(max_seconds=60))) as c:
        ok = c.post("/v1/predict", files={"file": ("stealth.flac", stealth.read_bytes(), "audio/flac")})
    assert ok.status_code == 200 and ok.json()["duration_s"] == pytest.approx(3.0, abs=0.01)


# ---- one file per field, validated options, no server paths ----------------------------------


def test_two_file_parts_are_refused_naming_the_problem(client, song, predicted):
    data = song.read_bytes()
    two = [("file", (song.name, data, "audio/ogg")), ("file", ("other.opus", data, "audio/ogg"))]
    body = _error(client.post("/v1/predict", files=two), 422, "input")
    assert "'file' sent 2 times" in body["detail"]
    extra = [("file", (song.name, data, "audio/ogg")), ("also", ("x.opus", data, "audio/ogg"))]
    body = _error(client.post("/v1/predict", files=extra), 422, "input")
    assert "unexpected file field 'also'" in body["detail"]
    three = [("a", (song.name, data, "audio/ogg")), ("b", (song.name, data, "audio/ogg"))]
    body = _error(client.post("/v1/compare", files=[*three, ("b", ("c.opus", data, "audio/ogg"))]), 422)
    assert "'b' sent 2 times" in body["detail"]
    # a plain text field beside the one file is fine
    r = client.post("/v1/predict", files={"file": (song.name, data, "audio/ogg")}, data={"note": "hi"})
    assert r.status_code == 200 and r.json()["scores"] == pytest.approx(predicted["scores"])


@pytest.mark.parametrize(
    "bad",
    [
        {"mc_samples": -5},
        {"max_upload_mb": 0},
        {"max_seconds": float("nan")},
        {"max_concurrency": 0},
        {"max_concurrency": 1.5},
        {"max_queue": -1},
        {"header_timeout_s": float("inf")},
        {"body_timeout_s": -1},
        {"decode_budget": 0},
        {"max_uploading": 0},
    ],
)
def test_hostile_options_are_refused(bad):
    from apexmusic.errors import ConfigError

    with pytest.raises(ConfigError):
        ServeConfig(**bad)


def test_cli_refuses_negative_mc_samples_in_one_line(capsys, predict_model_dir):
    from apexmusic.cli import main
    from apexmusic.errors import ConfigError
    from apexmusic.predict import PredictConfig

    assert main(["serve", "--model", str(predict_model_dir), "--mc-samples", "-5"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("apexmusic: config error:") and "mc_samples" in line
    for bad in ({"mc_samples": -5}, {"batch_size": 0}, {"max_seconds": 0}):
        with pytest.raises(ConfigError):
            PredictConfig(**bad)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_no_server_path_in_any_response(predictor, predict_model_dir, song, tmp_path):
    import copy

    from fastapi.testclient import TestClient

    leaky = copy.copy(predictor)
    leaky.model = copy.copy(predictor.model)
    secret = "/srv/private-data/run7"
    leaky.model.card = {
        "data": {"labels": f"{secret}/metadata.csv (plain)", "embeddings": f"{predict_model_dir}/../store"},
        "notes": [f"trained from {secret}/store on C:\\Users\\op\\songs", "see m-a-p/MERT-v1-95M"],
    }
    leaky.card_markdown = f"# model\n\nLabels: `{secret}/metadata.csv`, weights ~/models/mert.\n"
    with TestClient(create_app(predictor=leaky, config=ServeConfig(max_seconds=120))) as c:
        responses = {
            "model": c.get("/v1/model"),
            "predict": c.post("/v1/predict", files={"file": (str(song), song.read_bytes(), "audio/ogg")}),
            "bad": c.post("/v1/predict", files={"file": (f"{secret}/x.opus", b"junk" * 100, "audio/ogg")}),
            "health": c.get("/healthz"),
            "missing": c.post("/v1/predict", files={"wrong": ("a.opus", b"x", "audio/ogg")}),
        }
    assert responses["model"].status_code == 200 and responses["predict"].status_code == 200
    texts = [s for r in responses.values() for s in _strings(r.json())]
    server_paths = (
        secret,
        "/srv",
        str(predict_model_dir),
        str(song.parent),
        "C:\\",
        "~/",
        "/tmp",
        "apexmusic-uploads",
    )
    leaks = [(p, t) for t in texts for p in server_paths if p in t]
    assert not leaks
    card = responses["model"].json()
    assert card["card"]["data"]["labels"] == "metadata.csv (plain)"  # the file name stays, not the folder
    assert "see m-a-p/MERT-v1-95M" in card["card"]["notes"]  # hub ids are not paths
    assert card["limits"]["decode_budget"] == 120 * 96_000 * 2
