"""The Ray engine against the local engine, on one shared local Ray instance (2 CPUs).

Every test compares the Ray engine with an independent run of the local engine on the same
real songs: same store rows, vectors, manifest hash and failure lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from apexmusic.embed import EmbedConfig, embed_inputs
from apexmusic.encoders import EncoderBase
from apexmusic.errors import RunInterrupted
from apexmusic.sources import Song
from apexmusic.store import EmbeddingStore

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # every test starts a Ray instance (10-30 s on 2 busy cores)

SHORT = ("acestep_hiphop_rap_shirt_song.opus", "acestep_saxphone_jazz.opus", "yue_01_en.mp3")
# The encoder factories below are defined in this module, which Ray workers cannot import:
# ship them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_session():
    """ONE local Ray instance for the whole module (start-up costs seconds on 2 cores)."""
    from apexmusic.distributed import _quiet_ray_data

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    _quiet_ray_data()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def real_songs(real_audio_files) -> list[Song]:
    return [Song(p.stem, str(p)) for p in real_audio_files]


@pytest.fixture(scope="module")
def short_songs(shared_data: Path) -> list[Song]:
    return [Song(Path(n).stem, str(shared_data / "real-audio" / n)) for n in SHORT]


@pytest.fixture(scope="module")
def local_store(real_songs, tmp_path_factory) -> EmbeddingStore:
    out = tmp_path_factory.mktemp("local-store")
    report = embed_inputs(real_songs, out, EmbedConfig(encoder="handcrafted", workers=1))
    assert report.n_failed == 0, report.failures
    return EmbeddingStore.open(out)


def _rows(store: EmbeddingStore) -> dict[str, dict]:
    rows = list(store.iter_rows())
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate songs in {store.root}"
    return {r["id"]: r for r in rows}


def assert_same_songs(ray_store: EmbeddingStore, local: EmbeddingStore, ids=None, atol=1e-5) -> None:
    got, want = _rows(ray_store), _rows(local)
    ids = sorted(want) if ids is None else sorted(ids)
    assert sorted(got) == ids
    for song_id in ids:
        a, b = got[song_id], want[song_id]
        for key in ("path", "sha256", "n_segments"):
            assert a[key] == b[key], (song_id, key)
        assert a["duration_s"] == pytest.approx(b["duration_s"], abs=1e-6)
        for key in ("layers", "segments", "segment_weights"):
            np.testing.assert_allclose(
                np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=atol, err_msg=f"{song_id} {key}"
            )
    assert ray_store.manifest()["config_hash"] == local.manifest()["config_hash"]


# ---- equality with the local engine ---------------------------------------------------------


def test_ray_store_equals_local_store_on_the_real_songs(ray_session, real_songs, local_store, tmp_path):
    from apexmusic.distributed import embed_inputs_ray

    seen = []
    report = embed_inputs_ray(
        real_songs,
        tmp_path / "ray",
        EmbedConfig(encoder="handcrafted"),
        on_progress=lambda p: seen.append(p.done),
        concurrency=2,
    )
    assert (report.n_done, report.n_failed, report.n_skipped) == (len(real_songs), 0, 0)
    assert report.audio_seconds == pytest.approx(
        sum(_rows(local_store)[s.id]["duration_s"] for s in real_songs)
    )
    assert seen[-1] == len(real_songs)
    store = EmbeddingStore.open(tmp_path / "ray")
    assert_same_songs(store, local_store)
    manifest, local_manifest = store.manifest(), local_store.manifest()
    for key in ("encoder", "weights", "n_layers", "dim", "segment_seconds", "encoder_settings", "pad_last"):
        assert manifest[key] == local_manifest[key]
    assert manifest["last_run"]["engine"] == "ray" and manifest["last_run"]["actors"] == 2


def _tiny_mert():
    from apexmusic.encoders.mert import MERT_V1_95M, MertEncoder, load_weights

    arch = dataclasses.replace(
        MERT_V1_95M,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model, arch, weights_id = load_weights("random", arch, seed=0)
    return MertEncoder(model, arch, weights_id, device="cpu", precision="fp32")


@pytest.mark.slow  # ~30 s on 2 shared cores: a MERT forward per segment, twice
def test_tiny_random_mert_gives_the_local_vectors(ray_session, short_songs, tmp_path, monkeypatch):
    from apexmusic import embed
    from apexmusic.distributed import embed_inputs_ray

    config = EmbedConfig(
        encoder="mert-v1-95m", weights="random", segment_seconds=20.0, workers=1, batch_size=4
    )
    monkeypatch.setattr(
        embed.local, "build_encoder", lambda config: _tiny_mert()
    )  # the local engine's encoder
    songs = short_songs[:2]
    local = embed_inputs(songs, tmp_path / "local", config)
    assert local.n_failed == 0
    report = embed_inputs_ray(songs, tmp_path / "ray", config, encoder_factory=_tiny_mert, concurrency=1)
    assert report.n_done == len(songs)
    store = EmbeddingStore.open(tmp_path / "ray")
    assert store.manifest()["n_layers"] == 3 and store.manifest()["dim"] == 16
    assert_same_songs(store, EmbeddingStore.open(tmp_path / "local"), atol=1e-4)


def test_object_store_uris_are_fetched_by_the_workers(ray_session, short_songs, local_store, tmp_path):
    from apexmusic.distributed import embed_inputs_ray

    song = short_songs[0]
    uris = [Song(song.id, Path(song.path).as_uri()), Song("gone", (tmp_path / "gone.mp3").as_uri())]
    report = embed_inputs_ray(uris, tmp_path / "ray", EmbedConfig(encoder="handcrafted"), concurrency=1)
    assert (report.n_done, report.n_failed) == (1, 1)
    assert report.failures[0].kind == "input" and "gone.mp3" in report.failures[0].message
    got = _rows(EmbeddingStore.open(tmp_path / "ray"))[song.id]
    want = _rows(local_store)[song.id]
    assert got["path"] == uris[0].path and got["sha256"] == want["sha256"]
    np.testing.assert_allclose(got["layers"], want["layers"], rtol=1e-5, atol=1e-5)


# ---- fault tolerance ------------------------------------------------------------------------


class _DiesOnce(EncoderBase):
    """The handcrafted encoder, except that the first encode call anywhere kills its process,
    and (with ``poison``) so does every batch holding a segment of exactly ``poison`` samples."""

    def __init__(self, marker: str, poison: int | None = None):
        from apexmusic.embed import build_encoder

        self.inner = build_encoder(EmbedConfig(encoder="handcrafted"))
        self.marker = marker
        self.poison = poison
        for key in ("name", "sample_rate", "n_layers", "dim", "weights_id", "default_batch_size"):
            setattr(self, key, getattr(self.inner, key))

    def describe(self):
        return self.inner.describe()

    def encode(self, segments, lengths):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # no cleanup, no exception: what an OOM kill or a lost node looks like
        if self.poison is not None and self.poison in {int(n) for n in lengths}:
            with open(self.marker, "a") as f:
                f.write(" poison")
            os._exit(1)
        return self.inner.encode(segments, lengths)


class _DiesOnceFactory:
    def __init__(self, marker: str, poison: int | None = None):
        self.marker = marker
        self.poison = poison

    def __call__(self):
        return _DiesOnce(self.marker, self.poison)


def test_a_killed_encoder_actor_is_replaced_and_every_song_lands_once(
    ray_session, short_songs, local_store, tmp_path
):
    from apexmusic.distributed import embed_inputs_ray

    marker = tmp_path / "killed"
    config = EmbedConfig(encoder="handcrafted", batch_size=2, shard_songs=2)
    report = embed_inputs_ray(
        short_songs, tmp_path / "ray", config, encoder_factory=_DiesOnceFactory(str(marker)), concurrency=1
    )
    assert marker.exists(), "the encoder process was never killed: the test tested nothing"
    assert (report.n_done, report.n_failed) == (len(short_songs), 0)
    assert_same_songs(EmbeddingStore.open(tmp_path / "ray"), local_store, ids=[s.id for s in short_songs])


def test_a_song_that_kills_every_worker_fails_alone_and_the_run_goes_on(
    ray_session, short_songs, local_store, tmp_path
):
    from apexmusic.distributed import embed_inputs_ray

    victim = short_songs[0]
    row = _rows(local_store)[victim.id]
    sample_rate = local_store.manifest()["sample_rate"]
    poison = round(float(row["segment_weights"][-1]) * sample_rate)  # its last segment's valid samples
    marker = tmp_path / "killed"
    marker.write_text("the first kill is not what this test is about")
    config = EmbedConfig(encoder="handcrafted", batch_size=1)
    factory = _DiesOnceFactory(str(marker), poison=poison)
    report = embed_inputs_ray(
        short_songs, tmp_path / "ray", config, encoder_factory=factory, concurrency=1, max_retries=1
    )
    assert marker.read_text().count("poison") == 2  # the first try and its one retry
    assert (report.n_done, report.n_failed) == (len(short_songs) - 1, 1)
    failure = report.failures[0]
    assert (failure.id, failure.kind) == (victim.id, "worker") and "died 2 times" in failure.message
    logged = [json.loads(x) for x in (tmp_path / "ray" / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["kind"]) for f in logged] == [(victim.id, "worker")]
    others = [s.id for s in short_songs[1:]]
    assert_same_songs(EmbeddingStore.open(tmp_path / "ray"), local_store, ids=others)


@pytest.mark.slow  # three engine runs, each starting its actor pool (~10 s each on 2 busy cores)
def test_resume_after_an_interrupted_job_skips_finished_songs(
    ray_session, short_songs, local_store, tmp_path
):
    from apexmusic.distributed import embed_inputs_ray

    out = tmp_path / "ray"
    config = EmbedConfig(encoder="handcrafted", shard_songs=1)

    def interrupt_after_two(progress):
        if progress.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="2 songs finished in this run are kept"):
        embed_inputs_ray(short_songs, out, config, on_progress=interrupt_after_two, concurrency=1)
    first = _rows(EmbeddingStore.open(out))
    assert len(first) == 2
    shards_before = {p: p.stat().st_mtime_ns for p in EmbeddingStore.open(out).shards()}

    with pytest.raises(Exception, match="--resume"):  # never silently mixes two runs
        embed_inputs_ray(short_songs, out, config, concurrency=1)
    report = embed_inputs_ray(short_songs, out, dataclasses.replace(config, resume=True), concurrency=1)
    assert (report.n_skipped, report.n_done, report.n_failed) == (2, len(short_songs) - 2, 0)
    store = EmbeddingStore.open(out)
    assert all(p.stat().st_mtime_ns == t for p, t in shards_before.items())  # finished shards untouched
    assert_same_songs(store, local_store, ids=[s.id for s in short_songs])


# ---- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs_land_in_failures_jsonl_exactly_as_with_the_local_engine(
    ray_session, short_songs, tmp_path
):
    from apexmusic.distributed import embed_inputs_ray

    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "empty.mp3").write_bytes(b"")
    (bad / "notes.mp3").write_text("this is a text file, not audio\n" * 50)
    (bad / "noise.wav").write_bytes(np.random.default_rng(0).bytes(4096))
    songs = [short_songs[0], Song("missing", str(bad / "missing.flac")), Song("folder", str(bad))]
    songs += [Song(p.stem, str(p)) for p in sorted(bad.glob("*.*"))]
    config = EmbedConfig(encoder="handcrafted", workers=1)
    local = embed_inputs(songs, tmp_path / "local", config)
    report = embed_inputs_ray(songs, tmp_path / "ray", config, concurrency=1)

    def lines(store_dir):
        rows = [json.loads(line) for line in (store_dir / "failures.jsonl").read_text().splitlines()]
        return sorted((r["id"], r["path"], r["kind"], r["message"]) for r in rows)

    assert (report.n_done, report.n_failed) == (local.n_done, local.n_failed) == (1, 5)
    assert lines(tmp_path / "ray") == lines(tmp_path / "local")
    assert {r[2] for r in lines(tmp_path / "ray")} >= {"input", "decode"}
    assert sorted(_rows(EmbeddingStore.open(tmp_path / "ray"))) == [short_songs[0].id]


# ---- predict --engine ray -------------------------------------------------------------------


@pytest.mark.parametrize("model", ["predict_model_dir", "aesthetics_only_model"])
def test_predict_with_ray_writes_the_local_rows(ray_session, model, request, short_songs, tmp_path):
    """The same rows as the local engine, trust fields included (the aesthetics-only model
    leaves popularity null and carries intervals and the domain alarm)."""
    from apexmusic.distributed import predict_inputs_ray
    from apexmusic.predict import PredictConfig, predict_inputs

    predict_model_dir = request.getfixturevalue(model)
    songs = [*short_songs, Song("missing", str(tmp_path / "missing.mp3"))]
    config = PredictConfig(batch_size=2, mc_samples=4)
    local = predict_inputs(songs, predict_model_dir, tmp_path / "local.jsonl", config)
    report = predict_inputs_ray(songs, predict_model_dir, tmp_path / "ray.jsonl", config, concurrency=1)
    assert (report.n_done, report.n_failed) == (local.n_done, local.n_failed) == (3, 1)

    def rows(path):
        return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}

    got, want = rows(tmp_path / "ray.jsonl"), rows(tmp_path / "local.jsonl")
    assert sorted(got) == sorted(want)
    if model == "aesthetics_only_model":
        assert all(r["score_streams"] is None and isinstance(r["in_domain"], bool) for r in got.values())
        assert all(r["coherence_lo"] <= r["coherence"] <= r["coherence_hi"] for r in got.values())
    for song_id, row in want.items():
        assert set(got[song_id]) == set(row)
        for key, value in row.items():
            if isinstance(value, float):
                assert got[song_id][key] == pytest.approx(value, rel=1e-4, abs=1e-4), (song_id, key)
            else:
                assert got[song_id][key] == value, (song_id, key)
    failures = [json.loads(x) for x in (tmp_path / "ray.jsonl.failures.jsonl").read_text().splitlines()]
    local_failures = [
        json.loads(x) for x in (tmp_path / "local.jsonl.failures.jsonl").read_text().splitlines()
    ]
    assert [(f["id"], f["kind"], f["message"]) for f in failures] == [
        (f["id"], f["kind"], f["message"]) for f in local_failures
    ]

    resumed = predict_inputs_ray(
        songs,
        predict_model_dir,
        tmp_path / "ray.jsonl",
        dataclasses.replace(config, resume=True),
        concurrency=1,
    )
    assert (resumed.n_skipped, resumed.n_done) == (3, 0)
    assert len((tmp_path / "ray.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow  # a Ray pipeline run (~10 s on 2 busy cores)
def test_a_segment_mode_model_pools_segments_on_ray(ray_session, segment_model_setup, tmp_path):
    from predict_fixtures import pooled_segment_scores

    from apexmusic.distributed import predict_inputs_ray
    from apexmusic.model import ScoringModel
    from apexmusic.predict import PredictConfig
    from apexmusic.tasks import TASKS

    paths, store, model_dir = segment_model_setup
    model = ScoringModel.from_pretrained(model_dir)
    songs = [Song(Path(p).stem, p) for p in paths]
    report = predict_inputs_ray(
        songs, model_dir, tmp_path / "ray.jsonl", PredictConfig(mc_samples=0), concurrency=1
    )
    assert (report.n_done, report.n_failed) == (3, 0)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "ray.jsonl").read_text().splitlines())}
    for song_id, want in pooled_segment_scores(model, store).items():
        for k, task in enumerate(model.tasks):
            assert abs(rows[song_id][task] - want[k]) <= 1e-4 * TASKS[task].span, (song_id, task)


# ---- sizing ---------------------------------------------------------------------------------


def test_the_actor_pool_never_takes_the_cpus_the_decoders_need(ray_session):
    from apexmusic.distributed import RaySettings, plan_resources
    from apexmusic.errors import ConfigError

    for concurrency in (1, 2):
        plan = plan_resources(RaySettings(concurrency=concurrency))
        assert plan.gpus_per_actor == 0
        assert plan.actors * plan.cpus_per_actor + plan.decode_cpus <= 2 + 1e-9
    with pytest.raises(ConfigError, match="GPU"):
        plan_resources(RaySettings(num_gpus_per_actor=1))


def test_cli_embed_with_the_ray_engine(ray_session, short_songs, local_store, tmp_path):
    from apexmusic.cli import main

    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio at all")
    out = tmp_path / "store"
    argv = [
        "embed",
        short_songs[0].path,
        str(bad),
        "--out",
        str(out),
        "--engine",
        "ray",
        "--ray-concurrency",
        "1",
    ]
    assert main(argv) == 1  # some inputs failed, the rest done
    store = EmbeddingStore.open(out)
    assert_same_songs(store, local_store, ids=[short_songs[0].id])
    assert [(f["id"], f["kind"]) for f in store.failures()] == [("bad", "decode")]
    assert main([*argv, "--resume"]) == 1  # the bad file is retried and fails again; the song is kept
    assert sorted(_rows(store)) == [short_songs[0].id]
