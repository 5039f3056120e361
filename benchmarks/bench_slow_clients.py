"""The service under slow and hostile clients, on loopback against a real uvicorn server.

1. Normal clients alone: ``--normal`` threads upload a real 15 s WAV clip to ``/v1/predict``
   back to back for ``--seconds``; latency p50 / p95 and non-200 counts.
2. The same while ``--slow`` clients each dribble a 200 KB upload over ``--seconds`` (10 KB/s).
3. ``--loris`` connections that never finish their headers: how long the server holds them.
4. The decompression case: an 8-channel 192 kHz FLAC of 1,300 s (silence, about 0.7 MB):
   time to its 422.

The server runs with the default ``ServeConfig`` (``max_concurrency`` 2, ``max_queue`` 16), so
20 slow uploads are more than the admission limit. The script uses only the public serve API,
so it runs against older versions too (``PYTHONPATH=<other checkout>/src``)::

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_slow_clients.py
    python benchmarks/bench_slow_clients.py --seconds 5 --slow 4 --loris 4   # smoke run
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import make_model_dir, wav_clip  # noqa: E402

BOUNDARY = "benchboundary"


def normal_clients(url: str, threads: int, seconds: float, body: bytes) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    files = {"file": ("clip.wav", body, "audio/wav")}
                    status = client.post("/v1/predict", files=files).status_code
                except httpx.HTTPError:
                    status = -1
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(status)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ok = np.sort([lat for lat, s in zip(latencies, statuses, strict=True) if s == 200])
    return {
        "requests": len(statuses),
        "ok": int(len(ok)),
        "non_200": {s: statuses.count(s) for s in sorted(set(statuses)) if s != 200},
        "p50_s": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
        "p95_s": float(np.percentile(ok, 95)) if len(ok) else float("nan"),
    }


def _multipart(payload: bytes) -> tuple[bytes, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + payload, f"\r\n--{BOUNDARY}--\r\n".encode()


def slow_upload(url: str, body: bytes, seconds: float, out: list) -> None:
    """Send ``body`` as one multipart upload spread evenly over ``seconds``; record the status."""
    host, port = url.removeprefix("http://").split(":")
    start, tail = _multipart(body)
    data = start + tail
    steps = max(1, int(seconds / 0.2))
    piece = -(-len(data) // steps)
    t0 = time.monotonic()
    status = "no reply"
    try:
        with socket.create_connection((host, int(port)), timeout=seconds + 120) as sock:
            sock.sendall(
                f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(data)}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
            )
            for i in range(0, len(data), piece):
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered early
                sock.sendall(data[i : i + piece])
                time.sleep(0.2)
            status = _status_line(sock)
    except OSError as exc:
        status = f"error {type(exc).__name__}"
    out.append((status, time.monotonic() - t0))


def loris(url: str, hold_s: float, out: list) -> None:
    """Open a connection, send half a header line every second, and measure how long it stays open."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    status = "held"
    with socket.create_connection((host, int(port)), timeout=hold_s + 30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - t0 < hold_s:
            if select.select([sock], [], [], 1.0)[0]:
                status = _status_line(sock)
                break
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                status = "reset"
                break
    out.append((status, time.monotonic() - t0))


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return "closed" if not data else data.decode(errors="replace")
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def flac_bomb(path: Path, seconds: float = 1300.0, rate: int = 192_000) -> Path:
    """Silence in 8 channels at 192 kHz: tiny on disk, ``seconds`` long for the decoder."""
    import av

    if path.exists():
        return path
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate)
        stream.layout = "7.1"
        size = stream.codec_context.frame_size or 4608
        zeros = np.zeros((1, size * 8), np.int16)
        for k in range(int(seconds * rate / size)):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="7.1")
            frame.sample_rate, frame.pts, frame.time_base = rate, k * size, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def time_bomb(url: str, bomb: Path) -> tuple[int, float, str]:
    import httpx

    t0 = time.perf_counter()
    r = httpx.post(
        f"{url}/v1/predict", files={"file": ("bomb.flac", bomb.read_bytes(), "audio/flac")}, timeout=600
    )
    return r.status_code, time.perf_counter() - t0, r.json().get("detail", "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--normal", type=int, default=4, help="normal clients, back to back")
    ap.add_argument("--slow", type=int, default=20, help="slow uploads during phase 2")
    ap.add_argument("--loris", type=int, default=50, help="never-finished header blocks")
    ap.add_argument("--bomb", default="/tmp/apexmusic-bench-bomb.flac", help="where to cache the FLAC")
    args = ap.parse_args()

    import apexmusic
    from apexmusic.encoders import load_encoder
    from apexmusic.serve import ServeConfig, background_server, create_app

    print(f"apexmusic from {Path(apexmusic.__file__).parent}", file=sys.stderr)
    clip = wav_clip(15.0)
    slow_body = wav_clip(4.5)  # about 200 KB
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        model = make_model_dir(Path(tmp) / "hand", "handcrafted", "none", 1, load_encoder("handcrafted").dim)
        app = create_app(model, ServeConfig())
        with background_server(app) as url:
            normal_clients(url, 1, 1.0, clip)  # warm-up
            alone = normal_clients(url, args.normal, args.seconds, clip)
            rows.append((f"{args.normal} normal clients alone", _fmt(alone)))
            print(rows[-1], file=sys.stderr)

            slow: list = []
            uploads = [
                threading.Thread(target=slow_upload, args=(url, slow_body, args.seconds, slow))
                for _ in range(args.slow)
            ]
            for t in uploads:
                t.start()
            time.sleep(1.0)  # all slow uploads under way
            crowded = normal_clients(url, args.normal, args.seconds - 2, clip)
            for t in uploads:
                t.join()
            name = f"... while {args.slow} clients upload 200 KB over {args.seconds:g} s"
            rows.append((name, _fmt(crowded)))
            rows.append(("the slow uploads themselves", _outcomes(slow)))
            print(rows[-2:], file=sys.stderr)

            held: list = []
            lorises = [
                threading.Thread(target=loris, args=(url, args.seconds, held)) for _ in range(args.loris)
            ]
            for t in lorises:
                t.start()
            for t in lorises:
                t.join()
            rows.append((f"{args.loris} connections that never finish their headers", _outcomes(held)))
            print(rows[-1], file=sys.stderr)

            bomb = flac_bomb(Path(args.bomb))
            status, seconds, detail = time_bomb(url, bomb)
            rows.append(
                (
                    f"8-ch 192 kHz 1,300 s FLAC ({bomb.stat().st_size / 1e6:.2f} MB)",
                    f"{status} after {seconds:.2f} s: {detail[:90]}",
                )
            )
            print(rows[-1], file=sys.stderr)

    width = max(len(name) for name, _ in rows)
    print(f"\n| {'case':<{width}} | result |\n|{'-' * (width + 2)}|---|")
    for name, result in rows:
        print(f"| {name:<{width}} | {result} |")
    return 0


def _fmt(r: dict) -> str:
    return (
        f"{r['requests']} requests, {r['ok']} ok, non-200 {r['non_200'] or 'none'}; "
        f"p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s"
    )


def _outcomes(results: list) -> str:
    statuses = sorted({s for s, _ in results})
    parts = []
    for status in statuses:
        times = [t for s, t in results if s == status]
        parts.append(f"{len(times)} x '{status}' after {min(times):.1f}-{max(times):.1f} s")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
