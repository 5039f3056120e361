"""What flushing finished songs to a shard every few seconds costs, measured in one run.

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_flush.py

Prints:
  - the store side alone: MERT-v1-95M-sized songs (13 x 768 song vector, 8 segments) written
    through the run's ``StoreSink`` in one shard versus one shard per few songs: the fixed
    cost of one flush (new file, fsyncs of file and folder, footer) in ms, and the share of
    wall time that is at the default flush interval (one flush per ``FLUSH_SECONDS``);
  - reading the store back (``load``) from one shard versus the many small shards;
  - end to end: ``embed_inputs`` (handcrafted encoder, in-process decoding) on generated
    songs with a flush only at the end versus a flush every 0.1 s, songs per second each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _songs(n: int, n_layers: int = 13, dim: int = 768, n_segments: int = 8):
    from apexmusic.store import SongEmbedding

    rng = np.random.default_rng(0)
    for i in range(n):
        segments = rng.standard_normal((n_segments, n_layers, dim)).astype(np.float32)
        yield SongEmbedding(
            id=f"s{i:05d}",
            path=f"/music/s{i:05d}.mp3",
            sha256=f"{i:064x}",
            duration_s=240.0,
            layers=segments.mean(0),
            segments=segments,
            segment_weights=np.full(n_segments, 30.0, np.float32),
            size=4_000_000,
            mtime_ns=i,
        )


def _spec():
    from apexmusic.store import EmbeddingSpec

    return EmbeddingSpec(encoder="mert-v1-95m", weights="bench", n_layers=13, dim=768, sample_rate=24000)


def bench_sink(n: int, songs_per_flush: int, root: Path) -> tuple[float, int, float]:
    """Seconds to put ``n`` songs through a StoreSink flushing every ``songs_per_flush`` songs,
    the number of shards, and the seconds to load the store back."""
    from apexmusic.embed.sink import RunPlan, StoreSink
    from apexmusic.store import EmbeddingStore

    store = EmbeddingStore.create(root, _spec())
    songs = list(_songs(n))
    sink = StoreSink(RunPlan(store, [], 0), shard_songs=songs_per_flush, on_progress=None, flush_seconds=1e9)
    start = time.perf_counter()
    for song in songs:
        sink.add(song)
    sink.flush()
    seconds = time.perf_counter() - start
    store.close()
    start = time.perf_counter()
    assert len(EmbeddingStore.open(root).load()) == n
    return seconds, len(store.shards()), time.perf_counter() - start


def bench_end_to_end(folder: Path, out: Path, flush_seconds: float) -> tuple[float, int]:
    from apexmusic.embed import EmbedConfig, embed_inputs
    from apexmusic.sources import resolve_inputs
    from apexmusic.store import EmbeddingStore

    songs = resolve_inputs([str(folder)])
    config = EmbedConfig(workers=0, segment_seconds=2.0, batch_size=2, flush_seconds=flush_seconds)
    start = time.perf_counter()
    report = embed_inputs(songs, out, config)
    wall = time.perf_counter() - start
    assert report.n_done == len(songs)
    return len(songs) / wall, len(EmbeddingStore.open(out).shards())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--songs", type=int, default=512, help="songs through the sink (default 512)")
    parser.add_argument("--every", type=int, default=4, help="songs per shard in the many-shards run")
    parser.add_argument("--files", type=int, default=60, help="generated songs end to end (default 60)")
    args = parser.parse_args()

    from _audio_files import music_like, write_audio

    from apexmusic.embed import FLUSH_SECONDS

    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        one, _, read_one = bench_sink(args.songs, args.songs, tmp_path / "one")
        many, n_shards, read_many = bench_sink(args.songs, args.every, tmp_path / "many")
        per_flush = (many - one) / max(1, n_shards - 1)
        result["sink"] = {
            "songs": args.songs,
            "one_shard_s": round(one, 3),
            "shards": n_shards,
            "many_shards_s": round(many, 3),
            "cost_per_flush_ms": round(1000 * per_flush, 2),
            "share_of_wall_at_default_interval": f"{per_flush / FLUSH_SECONDS:.2e}",
            "load_one_shard_s": round(read_one, 3),
            "load_many_shards_s": round(read_many, 3),
        }
        folder = tmp_path / "wav"
        folder.mkdir()
        for i in range(args.files):
            write_audio(folder / f"s{i:03d}.wav", music_like(3.0, 22050, seed=i), 22050)
        bench_end_to_end(folder, tmp_path / "warm", 1e9)  # imports and caches warm
        end_only, shards_a = bench_end_to_end(folder, tmp_path / "end", 1e9)
        frequent, shards_b = bench_end_to_end(folder, tmp_path / "often", 0.1)
        result["end_to_end"] = {
            "songs": args.files,
            "flush_at_end_songs_per_s": round(end_only, 2),
            "flush_every_0.1s_songs_per_s": round(frequent, 2),
            "shards": [shards_a, shards_b],
            "ratio": round(frequent / end_only, 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
