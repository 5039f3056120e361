"""Label ingestion (real Suno and SongEval files, plain/Udio tables), joins and splits."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from train_sim import simulate, write_store

from apexmusic.data import (
    PRESETS,
    SplitConfig,
    detect_preset,
    join_labels,
    load_labels,
    merge_labels,
    split_indices,
)
from apexmusic.errors import ConfigError, DataError
from apexmusic.store import EmbeddingStore
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS


def test_real_suno_export_is_detected_and_mapped(shared_data):
    path = shared_data / "suno" / "songs.json"
    raw = json.loads(path.read_text())
    table = load_labels(path)
    assert "(suno)" in table.source and len(table) == len(raw) == 234
    assert table.ids == [r["song_id"] for r in raw]
    assert list(table.creator) == [r["user_id"] for r in raw]
    assert set(table.platform) == {"suno"}
    np.testing.assert_allclose(table.created_at, [r["created_at"] / 1000 for r in raw])
    assert 2025 <= np.datetime64(int(table.created_at[0]), "s").astype(object).year <= 2026
    np.testing.assert_array_equal(table.extra["plays"], [r["play_count"] for r in raw])
    assert table.extra["model_version"][0] == raw[0]["model_version"]
    assert table.extra["tags"][0] == ", ".join(raw[0]["tags"])
    counts = table.counts()
    assert counts["score_streams"] == counts["score_likes"] == 234
    assert all(counts[t] == 0 for t in AESTHETIC_TASKS)
    # The score follows the play count.
    order = np.argsort(table.extra["plays"], kind="stable")
    assert np.all(np.diff(table.targets[order, 0]) >= 0)


def test_real_songeval_ratings_aggregate_to_the_rater_mean(shared_data):
    path = shared_data / "songeval" / "ratings.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    table = load_labels(path)
    assert len(table) == len(records) == 2399 and table.ids[0] == "mp3/0"
    for task in AESTHETIC_TASKS:
        col = ALL_TASKS.index(task)
        key = task.capitalize()
        expected = [np.mean([a[key] for a in r["annotation"]]) for r in records]
        np.testing.assert_allclose(table.targets[:, col], expected)
        spread = [np.std([a[key] for a in r["annotation"]], ddof=1) for r in records]
        np.testing.assert_allclose(table.extra[f"{task}_sd"], spread)
        assert set(table.extra[f"{task}_n_raters"]) == {4}
    assert np.isnan(table.targets[:, :2]).all()
    # Means stay on the SongEval scale.
    assert 1 <= np.nanmin(table.targets[:, 2:]) and np.nanmax(table.targets[:, 2:]) <= 5


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_plain_table_with_missing_cells_and_udio_export(tmp_path):
    plain = _write_csv(
        tmp_path / "plain.csv",
        [
            {
                "id": "a",
                "plays": 10,
                "likes": 1,
                "platform": "suno",
                "creator": "x",
                "created_at": "2025-10-01T12:00:00Z",
                "coherence": 3.5,
                "musicality": "",
                "memorability": 2,
                "clarity": 4,
                "naturalness": 5,
            },
            {
                "id": "b",
                "plays": "",
                "likes": 3,
                "platform": "udio",
                "creator": "",
                "created_at": "",
                "coherence": 1,
                "musicality": 2.5,
                "memorability": "",
                "clarity": 1,
                "naturalness": 1,
            },
        ],
    )
    t = load_labels(plain)
    assert "(plain)" in t.source and t.ids == ["a", "b"]
    assert np.isnan(t.targets[1, 0]) and np.isnan(t.targets[0, 3]) and t.targets[0, 2] == 3.5
    assert t.creator[1] is None and np.isnan(t.created_at[1])
    assert t.created_at[0] == pytest.approx(1759320000.0)
    assert list(t.platform) == ["suno", "udio"]

    udio = tmp_path / "udio.jsonl"
    udio.write_text(
        "\n".join(
            json.dumps({"id": f"u{i}", "plays": p, "likes": p // 3, "user_id": "q"})
            for i, p in enumerate([5, 50, 500])
        )
    )
    u = load_labels(udio)
    assert "(udio)" in u.source and set(u.platform) == {"udio"}
    np.testing.assert_allclose(u.targets[:, 0], [0, 50, 100])

    with pytest.raises(DataError):
        load_labels(_write_csv(tmp_path / "bad.csv", [{"id": "a", "coherence": 7}]), preset="plain")
    with pytest.raises(ConfigError):
        detect_preset({"foo", "bar"})
    with pytest.raises(DataError):
        load_labels(
            _write_csv(tmp_path / "dup.csv", [{"id": "a", "plays": 1}, {"id": "a", "plays": 2}]),
            preset="udio",
        )
    assert set(PRESETS) == {"suno", "udio", "plain"}


def test_join_counts_unlabelled_songs_and_orphan_labels(tmp_path, caplog):
    songs, y, creators, created = simulate(n=12, n_layers=2, dim=4)
    store = EmbeddingStore(write_store(tmp_path / "store", songs, 2, 4)).load()
    rows = [{"id": s.id, "coherence": 3.0} for s in songs[:8]]  # 4 songs without labels
    rows += [{"id": "not-in-store", "coherence": 2.0}]
    rows += [{"id": "folder/" + songs[8].id + ".wav", "coherence": 4.0}]  # matched by stem
    labels = load_labels(_write_csv(tmp_path / "l.csv", rows), preset="plain")
    with caplog.at_level(logging.WARNING):
        ds = join_labels(store, labels)
    assert len(ds) == 9 and ds.n_unlabelled == 3 and ds.n_missing_songs == 1
    assert ds.store.ids == [s.id for s in songs[:9]]
    assert ds.targets.shape == (9, 7) and ds.targets[8, 2] == 4.0
    assert "3 songs in the store have no" in caplog.text
    with pytest.raises(DataError):
        join_labels(store, labels, tasks=("score_streams",))


def test_merge_fills_cells_from_later_files(shared_data, tmp_path):
    a = _write_csv(
        tmp_path / "a.csv",
        [
            {"id": "mp3/0", "plays": 3, "likes": 1, "platform": "p"},
            {"id": "x", "plays": 1, "likes": 2, "platform": "p"},
        ],
    )
    merged = merge_labels(
        [load_labels(a, preset="plain"), load_labels(shared_data / "songeval" / "ratings.jsonl")]
    )
    row = merged.ids.index("mp3/0")
    assert np.isfinite(merged.targets[row]).all() and merged.platform[row] == "p"
    assert np.isnan(merged.targets[merged.ids.index("x"), 2:]).all()


@pytest.mark.parametrize("method", ["random", "creator", "time"])
def test_splits_are_disjoint_seeded_and_respect_groups(method):
    rng = np.random.default_rng(1)
    n = 500
    creators = np.array([f"c{i}" for i in rng.integers(0, 60, n)], dtype=object)
    creators[:20] = None
    created = rng.uniform(0, 1e6, n)
    config = SplitConfig(method=method, val_fraction=0.15, test_fraction=0.2, seed=3)
    s = split_indices(n, config, creators, created)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert sum(map(len, parts)) == n and set().union(*parts) == set(range(n))
    assert abs(len(s.test) - 100) <= (20 if method == "creator" else 1)
    again = split_indices(n, config, creators, created)
    assert all(
        np.array_equal(a, b)
        for a, b in zip((s.train, s.val, s.test), (again.train, again.val, again.test), strict=True)
    )
    other = split_indices(n, SplitConfig(method, 0.15, 0.2, seed=4), creators, created)
    if method != "time":
        assert not np.array_equal(s.test, other.test)
    if method == "creator":
        named = [{c for c in creators[list(p)] if c is not None} for p in parts]
        assert not (named[0] & named[1]) and not (named[0] & named[2]) and not (named[1] & named[2])
    if method == "time":
        assert created[s.train].max() <= created[s.val].min() <= created[s.val].max() <= created[s.test].min()


def test_split_needs_its_column():
    with pytest.raises(ConfigError):
        split_indices(10, SplitConfig("creator"))
    with pytest.raises(ConfigError):
        split_indices(10, SplitConfig("time"), created_at=np.full(10, np.nan))
    with pytest.raises(ConfigError):
        SplitConfig("random", 0.6, 0.5)
