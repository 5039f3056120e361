"""The HTTP service: every endpoint and error path, upload limits, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
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
    assert {"200", "413", "415", "422", "503"} <= set(post["responses"])
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
                "rejected": 1,
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
