"""Local engine vs Ray engine throughput on the same files, measured in one run.

Run (timing-sensitive, so under the shared lock):

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_scale.py              # ~1 h of audio
    flock /tmp/apexmusic-bench.lock python benchmarks/bench_scale.py --hours 0.3  # smoke

Files: the seven real songs in ../shared/data/real-audio, copied as many times as needed to
reach ``--hours`` of audio. Each copy gets a different number of trailing zero bytes, so every
file has its own size and SHA-256 (decoders ignore the padding): the local engine's content
cache cannot skip any of them and both engines do the same work.

Rows (each engine run ``--repeats`` times, interleaved, best kept):
  local            ``embed_inputs`` (decoder processes + in-process encoder)
  ray, 1 actor     ``embed_inputs_ray`` on a local Ray instance, 1 encoder actor
  ray, 2 actors    the same with 2 encoder actors
Ray start-up (``ray.init`` of a local instance) is timed separately; the engine rows include
everything after it (planning, encoder probe, actor start, decode, encode, store writes).

Then the MERT-95M FLOP count per audio second: analytic (``mert_fast.model_flops_per_second``)
and counted by ``torch.utils.flop_counter`` on a meta-device HubertModel (no compute), the
basis of the estimate in docs/scale.md. Target: Ray overhead <= 15 % vs local.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO = ROOT.parent / "shared" / "data" / "real-audio"


def make_corpus(folder: Path, hours: float) -> tuple[list, float]:
    """Unique-content copies of the real songs until ``hours`` of audio; returns (songs, seconds)."""
    from apexmusic.audio import decode_mono
    from apexmusic.sources import Song

    originals = sorted(REAL_AUDIO.glob("*.*"))
    durations = {p: decode_mono(p, 8000)[1] for p in originals}
    songs, total, copy = [], 0.0, 0
    while total < hours * 3600:
        for p in originals:
            dst = folder / f"c{copy:03d}_{p.name}"
            shutil.copyfile(p, dst)
            with dst.open("ab") as f:
                f.write(b"\0" * (copy + 1))
            songs.append(Song(dst.stem, str(dst)))
            total += durations[p]
        copy += 1
    return songs, total


def time_local(songs, out: Path, encoder: str) -> float:
    from apexmusic.embed import EmbedConfig, embed_inputs

    start = time.perf_counter()
    report = embed_inputs(songs, out, EmbedConfig(encoder=encoder))
    assert report.n_failed == 0 and report.n_done == len(songs), report.failures[:3]
    return time.perf_counter() - start


def time_ray(songs, out: Path, encoder: str, actors: int) -> float:
    from apexmusic.distributed import embed_inputs_ray
    from apexmusic.embed import EmbedConfig

    start = time.perf_counter()
    report = embed_inputs_ray(songs, out, EmbedConfig(encoder=encoder), concurrency=actors)
    assert report.n_failed == 0 and report.n_done == len(songs), report.failures[:3]
    return time.perf_counter() - start


def mert_flops_per_audio_second(segment_seconds: float = 30.0) -> tuple[float, float]:
    """(analytic, counted) FLOPs per audio second of MERT-v1-95M on ``segment_seconds`` segments."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from apexmusic.encoders.mert import MERT_V1_95M, build_model
    from apexmusic.encoders.mert_fast import model_flops_per_second

    analytic = model_flops_per_second(MERT_V1_95M, segment_seconds)["total"]
    with torch.device("meta"):
        model = build_model(MERT_V1_95M).eval()
        audio = torch.zeros(1, int(segment_seconds * 24000))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(audio, output_hidden_states=True)
    return analytic, counter.get_total_flops() / segment_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=1.0, help="hours of audio per run (default 1)")
    parser.add_argument("--encoder", default="handcrafted")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per engine (best kept)")
    parser.add_argument("--cpus", type=int, default=None, help="local Ray instance size (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    import ray

    from apexmusic.distributed import connect

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        (work / "audio").mkdir()
        songs, seconds = make_corpus(work / "audio", args.hours)
        print(f"corpus: {len(songs)} files, {seconds / 3600:.2f} h of audio ({args.encoder} encoder)")
        t0 = time.perf_counter()
        connect(num_cpus=args.cpus)
        startup = time.perf_counter() - t0
        cpus = ray.cluster_resources().get("CPU", 0)
        print(f"ray start-up (local instance, {cpus:g} CPUs): {startup:.1f} s")

        runs = {"local": [], "ray, 1 actor": [], "ray, 2 actors": []}
        order = list(runs)
        for rep in range(args.repeats):
            for name in order if rep % 2 == 0 else order[::-1]:
                out = work / f"store-{len(runs[name])}-{name.replace(' ', '').replace(',', '-')}"
                if name == "local":
                    wall = time_local(songs, out, args.encoder)
                else:
                    wall = time_ray(songs, out, args.encoder, 1 if "1 actor" in name else 2)
                runs[name].append(wall)
                shutil.rmtree(out)
                print(
                    f"  {name:14s} run {rep + 1}: {wall:6.1f} s ({seconds / wall:6.1f}x real time)",
                    flush=True,
                )
        ray.shutdown()

        best = {name: min(walls) for name, walls in runs.items()}
        print(f"\n{'engine':16s}{'best wall s':>12s}{'x real time':>13s}{'vs local':>10s}")
        for name, wall in best.items():
            print(f"{name:16s}{wall:12.1f}{seconds / wall:13.1f}{best['local'] / wall:10.3f}")
        ray1, ray2 = best["ray, 1 actor"], best["ray, 2 actors"]
        overhead = ray1 / best["local"] - 1
        print(f"\nray (1 actor) overhead vs local: {overhead:+.1%} (target <= +15%)")
        print(f"ray overhead incl. start-up:     {(ray1 + startup) / best['local'] - 1:+.1%}")
        print(f"ray 2 actors vs 1 actor speed-up: {ray1 / ray2:.3f}x")
        best_ray = min(ray1, ray2)
        print(f"best ray vs local:               {best['local'] / best_ray:.3f}x throughput")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    analytic, counted = mert_flops_per_audio_second()
    print(
        f"\nMERT-v1-95M FLOPs per audio second (30 s segments): analytic {analytic / 1e9:.1f} G, "
        f"counted by torch.utils.flop_counter {counted / 1e9:.1f} G"
    )


if __name__ == "__main__":
    main()
