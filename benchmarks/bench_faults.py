"""Fault injection on ``apexmusic embed``: kill -9 and SIGTERM at random moments, then resume.

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_faults.py [--kills 6] [--songs 24]

Generates short wav files and runs one uninterrupted ``apexmusic embed`` (handcrafted encoder)
as the reference. Then, per fault, a fresh run into a new store is stopped at a random moment
by ``kill -9`` (or SIGTERM for the last ``--terms`` faults) and resumed to the end with
``--resume``. For each fault it reads the progress bar (with timestamps) to count the songs
that had finished more than ``--flush-seconds`` (plus a 0.5 s margin) before the kill but are
not in the store: songs lost beyond the flush window (target 0); and it checks the resumed
store holds every song exactly once with vectors bit-equal to the reference. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FLAGS = ["--workers", "0", "--segment-seconds", "2", "--batch-size", "2"]


def _start(command: list[str], env: dict[str, str], marks: list[tuple[float, int]]) -> subprocess.Popen:
    """Run ``command`` with stderr on a terminal (the progress bar is drawn only on one); a
    thread records ``(time, songs done)`` from the bar."""
    import fcntl
    import pty
    import struct
    import termios

    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 240, 0, 0))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)

    def read() -> None:
        text = ""
        try:
            while chunk := os.read(master, 4096):
                text += chunk.decode("utf-8", "replace")
                done = [int(n) for n in re.findall(r"\| *(\d+)/\d+ \[", text[-400:])]
                if done:
                    marks.append((time.monotonic(), max(done)))
        except OSError:  # EIO: the process closed the terminal
            pass
        finally:
            os.close(master)

    proc.reader = threading.Thread(target=read, daemon=True)
    proc.reader.start()
    return proc


def _rows(out: Path) -> int:
    from apexmusic.store import EmbeddingStore

    if not (out / "manifest.json").exists():
        return 0
    return len(EmbeddingStore.open(out).done_ids())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--songs", type=int, default=24)
    parser.add_argument("--kills", type=int, default=6, help="kill -9 runs")
    parser.add_argument("--terms", type=int, default=2, help="SIGTERM runs")
    parser.add_argument("--flush-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    from _audio_files import music_like, write_audio

    from apexmusic.store import EmbeddingStore, verify_store

    rng = np.random.default_rng(args.seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(args.songs):
            write_audio(folder / f"s{i:03d}.wav", music_like(3.0, 22050, seed=i), 22050)
        command = [sys.executable, "-m", "apexmusic.cli", "embed", str(folder), *FLAGS]
        ref_out, out = tmp_path / "ref", tmp_path / "store"
        start = time.monotonic()
        subprocess.run([*command, "--out", str(ref_out)], env=env, check=True, capture_output=True)
        full_run = time.monotonic() - start
        ref = EmbeddingStore.open(ref_out).load(with_segments=True)
        runs = []
        for k in range(args.kills + args.terms):
            sig = signal.SIGKILL if k < args.kills else signal.SIGTERM
            out = tmp_path / f"store{k}"
            marks: list[tuple[float, int]] = []
            flush = ["--flush-seconds", str(args.flush_seconds)]
            proc = _start([*command, "--out", str(out), *flush], env, marks)
            delay = float(rng.uniform(0.2, 0.9) * full_run)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            killed_at = time.monotonic()
            proc.send_signal(sig)
            code = proc.wait()
            proc.reader.join(10)
            window = killed_at - args.flush_seconds - 0.5
            due = max([n for t, n in marks if t <= window], default=0)  # finished well before the kill
            kept = _rows(out)
            clean = not out.exists() or verify_store(out).clean
            subprocess.run(
                [*command, "--out", str(out), "--resume"], env=env, check=True, capture_output=True
            )
            got = EmbeddingStore.open(out).load(with_segments=True)
            equal = got.ids == ref.ids and np.array_equal(got.layers, ref.layers)
            equal = equal and all(
                np.array_equal(a, b) for a, b in zip(got.segments, ref.segments, strict=True)
            )
            runs.append(
                {
                    "signal": sig.name,
                    "exit": code,
                    "at_s": round(delay, 2),
                    "songs_finished": max([n for _, n in marks], default=0),
                    "songs_kept": kept,
                    "lost_beyond_flush_window": max(0, due - kept),
                    "store_clean_after_fault": bool(clean),
                    "resumed_rows": len(got.ids),
                    "resumed_bit_equal": bool(equal),
                }
            )
    print(
        json.dumps(
            {
                "songs": args.songs,
                "uninterrupted_run_s": round(full_run, 2),
                "flush_seconds": args.flush_seconds,
                "faults": len(runs),
                "lost_beyond_flush_window": sum(r["lost_beyond_flush_window"] for r in runs),
                "every_store_clean": all(r["store_clean_after_fault"] for r in runs),
                "every_resume_bit_equal_to_uninterrupted": all(r["resumed_bit_equal"] for r in runs),
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
