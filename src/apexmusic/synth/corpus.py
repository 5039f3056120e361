"""Generate a whole simulated corpus on disk, in the formats of the real data.

Layout of ``out_dir``::

    audio/<style>/<id>.<ext>   wav, flac, mp3 or ogg (opus), per style
    metadata.csv               id, path, plays, likes, platform, creator, created_at, style,
                               duration_s + the five aesthetic columns (mean over raters)
    ratings.jsonl              SongEval per-rater schema (file_name, id, annotation[...])
    battles.jsonl              Music Arena schema, between songs of the held-out styles
    truth.csv                  the hidden factors (latent quality, severities, preference)
    corpus.json                settings, style table, label statistics; the cache key

A second call with the same settings returns the cached corpus without rendering anything.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from apexmusic.errors import ConfigError
from apexmusic.synth import labels
from apexmusic.synth.music import DIMENSIONS, SongSpec, render_song
from apexmusic.synth.styles import CODEC_EXTENSIONS, HELDOUT_STYLES, STYLE_BY_NAME, STYLES, TRAIN_STYLES

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
MIN_SECONDS, MAX_SECONDS = 15.0, 30.0
START_DATE = datetime(2025, 9, 1, tzinfo=UTC)


@dataclass
class Corpus:
    root: Path
    n_songs: int
    seed: int
    train_styles: tuple[str, ...]
    heldout_styles: tuple[str, ...]
    cached: bool = False
    wall_seconds: float = 0.0
    stats: dict = field(default_factory=dict)

    @property
    def audio_dir(self) -> Path:
        return self.root / "audio"

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata.csv"

    @property
    def ratings_path(self) -> Path:
        return self.root / "ratings.jsonl"

    @property
    def battles_path(self) -> Path:
        return self.root / "battles.jsonl"

    @property
    def truth_path(self) -> Path:
        return self.root / "truth.csv"

    def metadata(self) -> list[dict]:
        with self.metadata_path.open(newline="") as f:
            return list(csv.DictReader(f))

    def truth(self) -> list[dict]:
        with self.truth_path.open(newline="") as f:
            return list(csv.DictReader(f))

    def battles(self) -> list[dict]:
        return [json.loads(x) for x in self.battles_path.read_text().splitlines() if x.strip()]


def generate_corpus(
    out_dir: str | Path,
    n_songs: int = 600,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Corpus:
    """Render ``n_songs`` simulated songs with labels into ``out_dir`` (cached by settings)."""
    if n_songs < 2 * len(STYLES):
        raise ConfigError(f"need at least {2 * len(STYLES)} songs (two per style), got {n_songs}")
    root = Path(out_dir)
    settings = {"generator_version": GENERATOR_VERSION, "n_songs": int(n_songs), "seed": int(seed)}
    cached = _load_cached(root, settings)
    if cached is not None:
        if on_progress:
            on_progress(n_songs, n_songs)
        return cached
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.json").unlink(missing_ok=True)  # invalid until the new corpus is complete
    plan = plan_corpus(n_songs, seed)
    _render_all(root, plan["specs"], plan["paths"], on_progress, workers)
    stats = _write_tables(root, plan)
    corpus = Corpus(
        root, n_songs, seed, TRAIN_STYLES, HELDOUT_STYLES, False, time.perf_counter() - start, stats
    )
    manifest = {
        **settings,
        "train_styles": TRAIN_STYLES,
        "heldout_styles": HELDOUT_STYLES,
        "styles": [asdict(s) for s in STYLES],
        "stats": stats,
        "files": plan["paths"],
        "wall_seconds": corpus.wall_seconds,
    }
    (root / "corpus.json").write_text(json.dumps(manifest, indent=1))
    return corpus


def _load_cached(root: Path, settings: dict) -> Corpus | None:
    try:
        manifest = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    if any(manifest.get(k) != v for k, v in settings.items()):
        return None
    needed = ["metadata.csv", "ratings.jsonl", "battles.jsonl", "truth.csv", *manifest["files"]]
    if not all((root / p).is_file() for p in needed):
        return None
    log.info("using the cached corpus in %s", root)
    return Corpus(
        root,
        settings["n_songs"],
        settings["seed"],
        tuple(manifest["train_styles"]),
        tuple(manifest["heldout_styles"]),
        True,
        0.0,
        manifest.get("stats", {}),
    )


# --- the random draws, all in one place and in a fixed order ------------------------------


def plan_corpus(n: int, seed: int) -> dict:
    """Every random draw of a corpus except the audio itself (cheap: no rendering)."""
    rng = np.random.default_rng(seed)
    style_idx = rng.permutation(np.arange(n) % len(STYLES))
    styles = [STYLES[i] for i in style_idx]
    shift = np.array([[s.quality + b for b in s.dim_bias] for s in styles])
    rating_model = labels.RatingModel()
    z = labels.draw_latents(shift, rng, rating_model.rho)
    severity = labels.severity_of(z)
    durations = rng.uniform(MIN_SECONDS, MAX_SECONDS, n).round(2)
    clarity_mix = rng.uniform(0.4, 1.0, (n, 3))
    natural_mix = rng.uniform(0.4, 1.0, (n, 2))
    ratings, raters = labels.simulate_ratings(z, rng, rating_model)

    creators, reach = _creators(styles, rng)
    style_effect = rng.normal(0.0, 1.0, len(STYLES))[style_idx]
    quality = z.mean(axis=1) + 0.5 * z[:, DIMENSIONS.index("memorability")]
    plays, likes, pop_latent = labels.simulate_popularity(quality, style_effect, reach, rng)
    created = [START_DATE + timedelta(seconds=float(s)) for s in rng.uniform(0, 90 * 86400, n)]

    preference = labels.listener_preference(z, pop_latent, rng)
    heldout = np.flatnonzero([s.heldout for s in styles])
    systems = np.array([s.name for s in styles])
    battles = labels.draw_battles(heldout, systems, preference, max(20, round(n * 4 / 3)), rng)
    battle_ids = [str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i)) for i in range(len(battles))]

    ids = [f"song_{i:04d}" for i in range(n)]
    paths = [f"audio/{s.name}/{ids[i]}{CODEC_EXTENSIONS[s.codec]}" for i, s in enumerate(styles)]
    specs = [
        SongSpec(
            i,
            s.name,
            float(durations[i]),
            dict(zip(DIMENSIONS, severity[i].tolist(), strict=True)),
            tuple(clarity_mix[i].tolist()),
            tuple(natural_mix[i].tolist()),
            seed,
        )
        for i, s in enumerate(styles)
    ]
    return {
        "ids": ids,
        "paths": paths,
        "specs": specs,
        "styles": styles,
        "z": z,
        "severity": severity,
        "ratings": ratings,
        "raters": raters,
        "creators": creators,
        "plays": plays,
        "likes": likes,
        "pop_latent": pop_latent,
        "created": created,
        "preference": preference,
        "battles": battles,
        "battle_ids": battle_ids,
        "durations": durations,
    }


def _creators(styles, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Creators per platform (about 1.4 songs each, a few prolific) and their audience reach."""
    names: list[str] = [""] * len(styles)
    reach = np.zeros(len(styles))
    for platform in sorted({s.platform for s in styles}):
        members = [i for i, s in enumerate(styles) if s.platform == platform]
        k = max(1, int(np.ceil(len(members) / 1.4)))
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        who = rng.choice(k, len(members), p=weights / weights.sum())
        creator_reach = rng.standard_normal(k)
        for i, c in zip(members, who, strict=True):
            names[i] = f"{platform}_creator_{c:03d}"
            reach[i] = creator_reach[c]
    return names, reach


# --- audio ---------------------------------------------------------------------------------


def _render_all(root: Path, specs: list[SongSpec], paths: list[str], on_progress, workers) -> None:
    jobs = [(spec, str(root / path)) for spec, path in zip(specs, paths, strict=True)]
    workers = workers or min(2, os.cpu_count() or 1)
    done = 0
    if workers <= 1:
        for job in jobs:
            _render_and_write(job)
            done += 1
            if on_progress:
                on_progress(done, len(jobs))
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # safe even when torch threads already run
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for _ in pool.map(_render_and_write, jobs, chunksize=8):
            done += 1
            if on_progress:
                on_progress(done, len(jobs))


def _render_and_write(job: tuple[SongSpec, str]) -> None:
    spec, path = job
    audio, sr = render_song(spec)
    write_audio(path, audio, sr, STYLE_BY_NAME[spec.style].codec)


def write_audio(path: str | Path, audio: np.ndarray, sr: int, codec: str) -> None:
    """Encode float audio ([T] or [T, C]) with PyAV: wav (16-bit), flac, mp3 or opus in ogg."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    planar = np.ascontiguousarray(np.atleast_2d(audio.T if audio.ndim == 2 else audio), np.float32)
    layout = "stereo" if planar.shape[0] == 2 else "mono"
    container_format, codec_name, options = {
        "wav": ("wav", "pcm_s16le", {}),
        "flac": ("flac", "flac", {}),
        "mp3": ("mp3", "libmp3lame", {"compression_level": "9"}),  # LAME's fastest search
        "opus": ("ogg", "libopus", {"compression_level": "3"}),
    }[codec]
    tmp = path.with_name(path.name + ".part")
    # bitexact: no random Ogg serial numbers or encoder tags, so equal settings give equal bytes
    with av.open(str(tmp), "w", format=container_format, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec_name, rate=sr, layout=layout, options=options)
        if codec in ("mp3", "opus"):
            stream.bit_rate = 96000 * planar.shape[0]
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)


# --- tables --------------------------------------------------------------------------------


def _write_tables(root: Path, plan: dict) -> dict:
    ids, paths, styles = plan["ids"], plan["paths"], plan["styles"]
    means = plan["ratings"].mean(axis=1)
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "id",
                "path",
                "plays",
                "likes",
                "platform",
                "creator",
                "created_at",
                "style",
                "duration_s",
                *DIMENSIONS,
            ]
        )
        for i, song_id in enumerate(ids):
            w.writerow(
                [
                    song_id,
                    paths[i],
                    int(plan["plays"][i]),
                    int(plan["likes"][i]),
                    styles[i].platform,
                    plan["creators"][i],
                    _iso(plan["created"][i]),
                    styles[i].name,
                    plan["durations"][i],
                    *[round(float(v), 4) for v in means[i]],
                ]
            )
    with (root / "ratings.jsonl").open("w") as f:
        for i, song_id in enumerate(ids):
            annotation = [
                {
                    "annotator": f"sim{int(r) + 1:02d}",
                    **dict(zip(labels.SONGEVAL_KEYS, plan["ratings"][i, k].tolist(), strict=True)),
                }
                for k, r in enumerate(plan["raters"][i])
            ]
            f.write(
                json.dumps(
                    {"file_name": paths[i], "id": song_id, "gender": "instrumental", "annotation": annotation}
                )
                + "\n"
            )
    _write_battles(root, plan)
    _write_truth(root, plan)
    return {
        "ratings": labels.rating_stats(plan["ratings"]),
        "popularity": labels.popularity_stats(plan["plays"], plan["likes"]),
        "n_battles": len(plan["battles"]),
    }


def _write_battles(root: Path, plan: dict) -> None:
    ids, paths, styles, durations = plan["ids"], plan["paths"], plan["styles"], plan["durations"]
    with (root / "battles.jsonl").open("w") as f:
        for (a, b, outcome), battle_id in zip(plan["battles"], plan["battle_ids"], strict=True):
            when = max(plan["created"][a], plan["created"][b]) + timedelta(days=1)
            f.write(
                json.dumps(
                    {
                        "battle_uuid": battle_id,
                        "date": _iso(when),
                        "prompt": f"an instrumental {styles[a].name.split('-')[1]} / "
                        f"{styles[b].name.split('-')[1]} track",
                        "is_instrumental": True,
                        "system_a": styles[a].name,
                        "system_b": styles[b].name,
                        "preference": outcome,
                        "audio_a": paths[a],
                        "audio_b": paths[b],
                        "id_a": ids[a],
                        "id_b": ids[b],
                        "duration_a": float(durations[a]),
                        "duration_b": float(durations[b]),
                        "sample_rate_a": styles[a].sample_rate,
                        "sample_rate_b": styles[b].sample_rate,
                        "total_listening_time_a": float(durations[a]),
                        "total_listening_time_b": float(durations[b]),
                        "feedback": "",
                        "lyrics": "",
                    }
                )
                + "\n"
            )


def _write_truth(root: Path, plan: dict) -> None:
    with (root / "truth.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "id",
                "style",
                *[f"z_{d}" for d in DIMENSIONS],
                *[f"severity_{d}" for d in DIMENSIONS],
                "popularity_latent",
                "listener_preference",
            ]
        )
        for i, song_id in enumerate(plan["ids"]):
            w.writerow(
                [
                    song_id,
                    plan["styles"][i].name,
                    *np.round(plan["z"][i], 5).tolist(),
                    *np.round(plan["severity"][i], 5).tolist(),
                    round(float(plan["pop_latent"][i]), 5),
                    round(float(plan["preference"][i]), 5),
                ]
            )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
