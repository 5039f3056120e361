"""Embedding and serving under one busy core: the slowdown of one song through ``Predictor.predict``.

For the handcrafted encoder and real-size MERT-v1-95M (random weights, same compute), one 30 s
real clip is scored (decode, segment, encode, head) on the quiet machine and while a Python
busy loop (started and stopped here) holds one core, with torch's default thread count and with
one thread, interleaved in one run. A fair share of a 2-core machine costs at most 2x; the
training collapse (docs/training.md, Threads) was 5-20x.

Run: ``flock /tmp/apexmusic-bench.lock python benchmarks/bench_busy_core.py [--repeats 2]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import make_model_dir, wav_clip  # noqa: E402
from bench_train import BusyCore, _nothing, load  # noqa: E402


def time_predict(predictor, path: Path) -> float:
    t0 = time.perf_counter()
    predictor.predict(path)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--skip-mert", action="store_true")
    args = parser.parse_args()
    import torch

    from apexmusic.encoders import load_encoder
    from apexmusic.predict import Predictor
    from apexmusic.threads import torch_threads

    default = torch.get_num_threads()
    print(f"{os.cpu_count()} cores, torch threads {default}, load average {load()} at start")
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        tmp = Path(tmp)
        clip = tmp / "clip.wav"
        clip.write_bytes(wav_clip(args.clip_seconds))
        models = {
            "handcrafted": make_model_dir(
                tmp / "hand", "handcrafted", "none", 1, load_encoder("handcrafted").dim
            )
        }
        if not args.skip_mert:
            models["MERT-v1-95M size"] = make_model_dir(tmp / "mert", "mert-v1-95m", "random", 13, 768)
        for name, model_dir in models.items():
            predictor = Predictor.from_pretrained(model_dir)
            predictor.predict(clip)  # warm-up
            best: dict[tuple[int, bool], float] = {}
            for _ in range(args.repeats):
                for busy in (False, True):
                    with BusyCore() if busy else _nothing():
                        for threads in sorted({default, 1}, reverse=True):
                            with torch_threads(threads):
                                seconds = time_predict(predictor, clip)
                            key = (threads, busy)
                            best[key] = min(best.get(key, math.inf), seconds)
            print(f"\n{name}, one {args.clip_seconds:.0f} s clip, best of {args.repeats}, load {load()}:")
            print("| threads | quiet | one busy core | busy / quiet |")
            print("|---|---:|---:|---:|")
            for threads in sorted({default, 1}, reverse=True):
                q, b = best[(threads, False)], best[(threads, True)]
                print(f"| {threads} | {q:.2f} s | {b:.2f} s | {b / q:.2f}x |")


if __name__ == "__main__":
    main()
