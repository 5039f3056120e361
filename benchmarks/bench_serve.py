"""Serving benchmarks: single-song latency, a bounded loopback load, and store re-scoring.

1. Latency of one ~3-minute real song (acestep_female_pop.opus, 195 s) through
   ``Predictor.predict`` (decode + segment + encode + head + MC dropout), with the offline
   handcrafted encoder and with real-size MERT-v1-95M (random weights: same compute as the
   real checkpoint, no download).
2. A loopback load against a real uvicorn server: N requests, C at a time, each uploading a
   real 15 s clip to ``POST /v1/predict``; counts errors and reports p50 / p95 / p99 latency.
3. ``score_store``: re-scoring a 1,000,000-song handcrafted embedding store without audio.

Run it alone on the machine (timings are provisional on a shared box)::

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_serve.py
    python benchmarks/bench_serve.py --quick     # smaller sizes, a smoke run

Models are untrained heads of the published size (weights do not change the timing).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = ROOT.parent / "shared" / "data" / "real-audio"
LONG_SONG = REAL_AUDIO / "acestep_female_pop.opus"  # 195 s
CLIP_SOURCE = REAL_AUDIO / "acestep_saxphone_jazz.opus"


def make_model_dir(out: Path, encoder: str, weights: str, n_layers: int, dim: int) -> Path:
    """An untrained published-size head whose encoder_spec is that of ``encoder``'s vectors."""
    from apexmusic.embed import EmbedConfig, build_encoder, spec_for
    from apexmusic.model import HeadConfig, ScoringModel, build_net

    mixing = "learned" if n_layers > 1 else "mean"
    net = build_net(HeadConfig(n_layers=n_layers, dim=dim, mixing=mixing))
    net.eval()
    config = EmbedConfig(encoder=encoder, weights=None if weights == "none" else weights, workers=0)
    spec = spec_for(build_encoder(config), config)
    assert spec.shape == (n_layers, dim), spec.shape
    model = ScoringModel(net=net, encoder_spec=spec, card={"title": f"benchmark head ({encoder})"})
    model.save_pretrained(out)
    return out


def time_one_song(model_dir: Path, repeats: int) -> dict:
    from apexmusic.predict import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.from_pretrained(model_dir)
    load_s = time.perf_counter() - t0
    predictor.predict(LONG_SONG)  # warm-up (first-call allocations, thread pools)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        [pred] = predictor.predict(LONG_SONG)
        times.append(time.perf_counter() - t0)
    return {
        "load_s": load_s,
        "latency_s": statistics.median(times),
        "duration_s": pred.duration_s,
        "repeats": repeats,
    }


def wav_clip(seconds: float) -> bytes:
    """A real ``seconds``-long clip of a real song as 16-bit PCM WAV bytes."""
    from apexmusic.audio import decode_mono

    sr = 22050
    audio, _ = decode_mono(CLIP_SOURCE, sr)
    clip = np.clip(audio[int(10 * sr) : int((10 + seconds) * sr)], -1, 1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((clip * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def load_test(model_dir: Path, n_requests: int, concurrency: int, clip_s: float) -> dict:
    import httpx

    from apexmusic.serve import ServeConfig, background_server, create_app

    body = wav_clip(clip_s)
    app = create_app(model_dir, ServeConfig(max_concurrency=2, max_queue=16))
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    with background_server(app) as url:
        local = threading.local()

        def one(_: int) -> None:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=url, timeout=300)
            t0 = time.perf_counter()
            try:
                status = client.post(
                    "/v1/predict", files={"file": ("clip.wav", body, "audio/wav")}
                ).status_code
            except httpx.HTTPError:
                status = -1
            with lock:
                latencies.append(time.perf_counter() - t0)
                statuses.append(status)

        with httpx.Client(base_url=url) as c:  # warm-up
            c.post("/v1/predict", files={"file": ("clip.wav", body, "audio/wav")}, timeout=300)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(n_requests)))
        wall = time.perf_counter() - t0
    lat = np.sort(np.asarray(latencies))
    return {
        "requests": n_requests,
        "concurrency": concurrency,
        "clip_s": clip_s,
        "wall_s": wall,
        "errors": sum(s != 200 for s in statuses),
        "rps": n_requests / wall,
        "p50_s": float(np.percentile(lat, 50)),
        "p95_s": float(np.percentile(lat, 95)),
        "p99_s": float(np.percentile(lat, 99)),
    }


def build_big_store(out: Path, n_rows: int, dim: int, shard_rows: int = 100_000) -> Path:
    """A handcrafted-shaped store of ``n_rows`` songs written through EmbeddingStore."""
    from apexmusic.store import EmbeddingSpec, EmbeddingStore, SongEmbedding

    spec = EmbeddingSpec(encoder="handcrafted", weights="none", n_layers=1, dim=dim, sample_rate=22050)
    store = EmbeddingStore.create(out, spec)
    rng = np.random.default_rng(0)
    one = np.ones(1, np.float32)
    for start in range(0, n_rows, shard_rows):
        block = rng.normal(size=(min(shard_rows, n_rows - start), 1, dim)).astype(np.float32)
        store.write(
            SongEmbedding(
                f"song{start + i:07d}", f"/catalogue/song{start + i:07d}.mp3", "", 180.0, v, v[None], one
            )
            for i, v in enumerate(block)
        )
    return out


def time_score_store(model_dir: Path, store_dir: Path, out: Path) -> dict:
    from apexmusic.predict import score_store

    report = score_store(store_dir, model_dir, out)
    return {
        "rows": report.n_rows,
        "wall_s": report.wall_seconds,
        "rows_per_s": report.n_rows / report.wall_seconds,
        "out_mb": out.stat().st_size / 1e6,
    }


def time_head_only(model_dir: Path, n_rows: int, dim: int) -> dict:
    """The compute floor of store scoring: the published head on ``n_rows`` vectors."""
    from apexmusic.model import ScoringModel

    model = ScoringModel.from_pretrained(model_dir)
    x = np.random.default_rng(0).normal(size=(n_rows, 1, dim)).astype(np.float32)
    t0 = time.perf_counter()
    model.predict_layers(x)
    wall = time.perf_counter() - t0
    macs = sum(p.numel() for n, p in model.net.named_parameters() if p.dim() >= 2)  # ~ weights
    return {"wall_s": wall, "rows_per_s": n_rows / wall, "gflop": 2 * macs * n_rows / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--skip-mert", action="store_true")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--store-rows", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.quick:
        args.requests, args.store_rows = 24, 50_000
    import torch

    print(
        f"torch threads {torch.get_num_threads()}, cpu cores {__import__('os').cpu_count()}", file=sys.stderr
    )
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        from apexmusic.encoders import load_encoder

        dim = load_encoder("handcrafted").dim
        hand = make_model_dir(tmp / "hand", "handcrafted", "none", 1, dim)

        r = time_one_song(hand, repeats=1 if args.quick else 3)
        rows.append(
            (
                "1 song, handcrafted (195 s opus)",
                f"{r['latency_s']:.2f} s latency ({r['duration_s'] / r['latency_s']:.0f}x real time); "
                f"model load {r['load_s']:.2f} s",
            )
        )
        print(rows[-1], file=sys.stderr)

        if not args.skip_mert:
            mert = make_model_dir(tmp / "mert", "mert-v1-95m", "random", 13, 768)
            r = time_one_song(mert, repeats=1)
            rows.append(
                (
                    "1 song, MERT-v1-95M size, random weights (195 s)",
                    f"{r['latency_s']:.1f} s latency ({r['duration_s'] / r['latency_s']:.1f}x real time); "
                    f"model load {r['load_s']:.1f} s",
                )
            )
            print(rows[-1], file=sys.stderr)

        r = load_test(hand, args.requests, args.concurrency, clip_s=15.0)
        rows.append(
            (
                f"loopback load: {r['requests']} x 15 s WAV, {r['concurrency']} at a time",
                f"{r['errors']} errors; p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
                f"p99 {r['p99_s']:.2f} s; {r['rps']:.1f} req/s ({r['wall_s']:.0f} s wall)",
            )
        )
        print(rows[-1], file=sys.stderr)

        t0 = time.perf_counter()
        store = build_big_store(tmp / "store", args.store_rows, dim)
        setup = time.perf_counter() - t0
        r = time_head_only(hand, args.store_rows, dim)
        rows.append(
            (
                f"head only: predict_layers on {args.store_rows:,} rows in memory",
                f"{r['wall_s']:.1f} s ({r['rows_per_s'] / 1e3:.0f}k rows/s; "
                f"{r['gflop'] / r['wall_s']:.0f} GFLOP/s of {r['gflop']:.0f} GFLOP)",
            )
        )
        print(rows[-1], file=sys.stderr)
        for suffix in (".parquet", ".csv", ".jsonl"):
            r = time_score_store(hand, store, tmp / f"scores{suffix}")
            rows.append(
                (
                    f"score_store {r['rows']:,} rows -> {suffix}",
                    f"{r['wall_s']:.1f} s ({r['rows_per_s'] / 1e3:.0f}k rows/s, {r['out_mb']:.0f} MB out)",
                )
            )
            print(rows[-1], f"(store built in {setup:.0f} s)", file=sys.stderr)

    width = max(len(name) for name, _ in rows)
    print(f"\n| {'benchmark':<{width}} | result |\n|{'-' * (width + 2)}|---|")
    for name, result in rows:
        print(f"| {name:<{width}} | {result} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
