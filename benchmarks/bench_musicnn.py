"""musicnn throughput alone: the musicnn/handcrafted rows of ``bench_embed.py`` without the MERT rows.

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_musicnn.py [--quick] [--threads N]

Prints audio seconds per wall second (x real time) on the real songs in ../shared/data/real-audio
for handcrafted and musicnn-msd (fp32 and bf16) through ``embed_inputs`` end to end, and for
musicnn's forward alone, then the bf16/fp32 speed ratios measured in this run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL_AUDIO = HERE.parent.parent / "shared" / "data" / "real-audio"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the two shortest songs only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from bench_embed import extra_encoder_rows

    files = sorted(REAL_AUDIO.glob("*.*"))
    if args.quick:
        files = sorted(files, key=lambda f: f.stat().st_size)[:2]
    print(f"{len(files)} files, torch threads {torch.get_num_threads()}", flush=True)
    rows = extra_encoder_rows(files)
    print(f"\n{'row':<58} {'audio s':>8} {'wall s':>8} {'x real time':>12}")
    for row in rows:
        rate = row["audio_s"] / row["wall_s"]
        print(f"{row['row']:<58} {row['audio_s']:>8.1f} {row['wall_s']:>8.2f} {rate:>12.2f}")
    rate = {row["row"]: row["audio_s"] / row["wall_s"] for row in rows}
    pipe = [r for r in rate if r.startswith("musicnn-msd pipeline")]
    fwd = [r for r in rate if r.startswith("musicnn-msd forward")]
    hand = next(r for r in rate if r.startswith("handcrafted"))
    print(f"\nbf16 / fp32, pipeline: {rate[pipe[1]] / rate[pipe[0]]:.2f}x", end="; ")
    print(f"forward only: {rate[fwd[1]] / rate[fwd[0]]:.2f}x")
    print(f"musicnn-msd fp32 pipeline / handcrafted pipeline: {rate[pipe[0]] / rate[hand]:.2f}x")


if __name__ == "__main__":
    main()
