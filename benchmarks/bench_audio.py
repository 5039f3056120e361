"""Audio input and the handcrafted encoder: speed and memory, measured in one run.

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_audio.py

Prints, on the seven real songs in ../shared/data/real-audio:
  - decode + mono + resample speed (CPU seconds, so other load on the machine does not count),
  - handcrafted encoder speed on one core,
  - the whole `embed_inputs` pipeline (handcrafted: each worker process decodes and encodes)
    with 1 and 2 workers: audio seconds per wall second, against decode then encode in one
    process,
  - peak RSS (main process and decoder process) for one 10-minute song through the pipeline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = ROOT.parent / "shared" / "data" / "real-audio"


def cpu_time(fn) -> tuple[float, object]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def bench_decode(files: list[Path], rate: int) -> tuple[float, float]:
    from apexmusic.audio import SegmentConfig, iter_segments

    audio = cpu = 0.0
    for path in files:
        stream = iter_segments(path, rate, SegmentConfig())
        seconds, _ = cpu_time(lambda stream=stream: sum(1 for _ in stream))
        cpu += seconds
        audio += stream.duration_s
    return audio, cpu


def bench_handcrafted(files: list[Path]) -> tuple[float, float]:
    from apexmusic.audio import SegmentConfig, iter_segments
    from apexmusic.encoders.handcrafted import HandcraftedEncoder

    enc = HandcraftedEncoder()
    audio = cpu = 0.0
    for path in files:
        segments = list(iter_segments(path, enc.sample_rate, SegmentConfig()))
        batch = np.stack([s.audio for s in segments])
        lengths = np.array([s.valid for s in segments])
        seconds, _ = cpu_time(lambda batch=batch, lengths=lengths: enc.encode(batch, lengths))
        cpu += seconds
        audio += lengths.sum() / enc.sample_rate
    return audio, cpu


def bench_pipeline(files: list[Path], workdir: Path, workers: int) -> tuple[float, float]:
    from apexmusic.embed import EmbedConfig, embed_inputs
    from apexmusic.sources import Song

    songs = [Song(p.stem, str(p)) for p in files]
    report = embed_inputs(songs, workdir / f"store-{workers}", EmbedConfig(workers=workers))
    assert report.n_failed == 0
    return report.audio_seconds, report.wall_seconds


def bench_serial(files: list[Path]) -> tuple[float, float]:
    """Decode then encode, one song after the other, in one process (no overlap)."""
    from apexmusic.audio import SegmentConfig, iter_segments
    from apexmusic.encoders.handcrafted import HandcraftedEncoder

    enc = HandcraftedEncoder()
    start = time.perf_counter()
    audio = 0.0
    for path in files:
        stream = iter_segments(path, enc.sample_rate, SegmentConfig())
        segments = list(stream)
        enc.encode(np.stack([s.audio for s in segments]), np.array([s.valid for s in segments]))
        audio += stream.duration_s
    return audio, time.perf_counter() - start


def make_long_song(path: Path, files: list[Path], seconds: float = 600.0) -> None:
    import av

    from apexmusic.audio import decode_mono

    parts, total = [], 0
    while total < seconds * 44100:
        for f in files:
            x, _ = decode_mono(f, 44100)
            parts.append(x)
            total += x.size
    x = np.concatenate(parts)[: int(seconds * 44100)]
    with av.open(str(path), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=44100)
        stream.layout = "mono"
        for start in range(0, x.size, 1152):
            frame = av.AudioFrame.from_ndarray(x[None, start : start + 1152], format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


_RSS_CHILD = """
import json, resource, sys
from apexmusic.embed import EmbedConfig, embed_inputs
from apexmusic.sources import Song
report = embed_inputs([Song("long", sys.argv[1])], sys.argv[2], EmbedConfig(encoder=sys.argv[3], workers=1))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent benchmark process.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"audio_s": report.audio_seconds, "failed": report.n_failed, "main_mb": hwm_kb / 1024,
                  "decoder_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def bench_rss(long_song: Path, workdir: Path, encoder: str = "handcrafted") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(long_song), str(workdir / f"rss-{encoder}"), encoder],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    files = sorted(REAL_AUDIO.glob("*.*"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for rate in (24000, 22050, 16000):
            audio, cpu = bench_decode(files, rate)
            rows.append((f"decode + mono + resample to {rate} Hz", f"{audio / cpu:.0f}x real time per core"))
        audio, cpu = bench_handcrafted(files)
        rows.append(("handcrafted encoder (109 descriptors)", f"{audio / cpu:.0f}x real time per core"))
        audio, serial_wall = bench_serial(files)
        rows.append(("decode then encode, serial, 1 process", f"{audio / serial_wall:.0f} audio s / wall s"))
        for workers in (1, 2):
            audio, wall = bench_pipeline(files, workdir, workers)
            rows.append(
                (
                    f"embed_inputs (handcrafted, {workers} worker processes decode + encode)",
                    f"{audio / wall:.0f} audio s / wall s ({serial_wall / wall:.2f}x serial)",
                )
            )
        long_song = workdir / "ten_minutes.mp3"
        make_long_song(long_song, files)
        rss = bench_rss(long_song, workdir)
        rows.append(
            (
                "peak RSS, 10-minute song (handcrafted)",
                f"main {rss['main_mb']:.0f} MB, decoder {rss['decoder_mb']:.0f} MB",
            )
        )
    print(f"# bench_audio: {len(files)} real songs, {audio:.0f} s of audio\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
