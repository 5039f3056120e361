"""Label ingestion (real Suno and SongEval files, plain/Udio tables), joins and splits."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# ---- split hygiene: equal timestamps and identical audio never straddle a cut ---------------


def _side(split) -> dict[int, str]:
    return {int(i): name for name in ("train", "val", "test") for i in getattr(split, name)}


def test_time_split_keeps_a_timestamp_on_one_side():
    created = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7, 7], dtype=float)  # the newest three tie
    s = split_indices(10, SplitConfig("time", val_fraction=0.1, test_fraction=0.1), created_at=created)
    assert set(s.test) == {7, 8, 9}  # one test song wanted; its two twins in time come along
    assert set(s.val) == {6} and set(s.train) == set(range(6))


@pytest.mark.parametrize("method", ["random", "creator", "time"])
def test_identical_audio_shares_a_split_for_every_seed(method):
    n = 60
    creators = np.array([f"c{i % 13}" for i in range(n)], dtype=object)
    created = np.arange(n, dtype=float)
    sha = np.array([f"h{i}" for i in range(n)], dtype=object)
    sha[[3, 30, 59]] = "same"  # an old song re-uploaded in the middle and at the very end
    for seed in range(15):
        config = SplitConfig(method, 0.2, 0.2, seed=seed)
        side = _side(split_indices(n, config, creators, created, sha))
        assert side[3] == side[30] == side[59]
        if method == "time":
            assert side[3] == "train"  # the block sits where its oldest copy does


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["random", "creator", "time"]),
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 6)),  # creator
            st.one_of(st.none(), st.integers(0, 8)),  # timestamp (None: unknown)
            st.one_of(st.none(), st.integers(0, 12)),  # audio hash (None: not recorded)
        ),
        min_size=3,
        max_size=60,
    ),
    seed=st.integers(0, 2**16),
    fractions=st.sampled_from([(0.1, 0.1), (0.2, 0.3), (0.0, 0.25), (0.4, 0.4)]),
)
def test_split_properties(method, rows, seed, fractions):
    n = len(rows)
    creators = np.array([None if c is None else f"c{c}" for c, _, _ in rows], dtype=object)
    created = np.array([np.nan if t is None else float(t) for _, t, _ in rows])
    sha = np.array([None if h is None else f"{h:064x}" for _, _, h in rows], dtype=object)
    if method == "time" and not np.isfinite(created).any():
        created[0] = 0.0
    config = SplitConfig(method, *fractions, seed=seed)
    s = split_indices(n, config, creators, created, sha)
    side = _side(s)
    assert sorted(side) == list(range(n)) and len(side) == n  # a partition
    assert all(np.array_equal(np.sort(p), p) for p in (s.train, s.val, s.test))

    def one_side(keys) -> bool:
        seen: dict = {}
        return all(seen.setdefault(k, side[i]) == side[i] for i, k in enumerate(keys) if k is not None)

    assert one_side(sha)
    if method == "creator":
        assert one_side(creators)
    if method == "time":
        assert one_side([None if np.isnan(t) else t for t in created])
    # Distinct hashes change nothing: the split equals the one without hashes.
    distinct = np.array([f"{i:064x}" for i in range(n)], dtype=object)
    plain, hashed = (
        split_indices(n, config, creators, created),
        split_indices(n, config, creators, created, distinct),
    )
    assert all(np.array_equal(a, b) for a, b in zip(_parts(plain), _parts(hashed), strict=True))
    if method == "time":  # without shared audio, time order holds across the cuts
        t = np.where(np.isfinite(created), created, -np.inf)
        train, val, test = (t[p] for p in _parts(plain))
        for older, newer in ((train, val), (train, test), (val, test)):
            if len(older) and len(newer):
                assert older.max() <= newer.min()


def _parts(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return split.train, split.val, split.test


def test_load_dataset_reads_audio_hashes_and_splits_copies_together(tmp_path):
    from apexmusic.data import load_dataset

    songs, _, _, _ = simulate(n=40, n_layers=2, dim=4)
    for k in (5, 17, 33):
        songs[k].sha256 = "f" * 64  # the same audio under three ids
    store = write_store(tmp_path / "store", songs, 2, 4)
    labels = _write_csv(tmp_path / "l.csv", [{"id": s.id, "coherence": 3.0} for s in songs])
    ds = load_dataset(store, labels, tasks=("coherence",), preset="plain")
    assert list(ds.sha256) == [s.sha256 for s in sorted(songs, key=lambda s: s.id)]
    for seed in range(10):
        side = _side(ds.split(SplitConfig("random", 0.2, 0.2, seed=seed)))
        assert side[5] == side[17] == side[33]
    sub = ds.subset(np.array([33, 5]))
    assert list(sub.sha256) == ["f" * 64] * 2 and sub.store.ids == ["song0033", "song0005"]


# ---- invalid label values, delimiters, BOM --------------------------------------------------

_BAD_PLAYS = ["1,234", "lots", "NaN", "inf", "-5", "1e400"]


def _bad_rows() -> list[dict]:
    rows = [{"id": f"s{i}", "plays": 10 * (i + 1), "likes": i + 1, "coherence": 3} for i in range(4)]
    for k, bad in enumerate(_BAD_PLAYS):
        rows.append({"id": f"bad{k}", "plays": bad, "likes": 2, "coherence": 3})
    rows[0]["coherence"] = "3,5"  # a decimal comma is ambiguous in a score column
    rows[1]["likes"] = "many"
    return rows


def test_invalid_label_values_are_counted_per_column_and_warned(tmp_path, caplog):
    path = _write_csv(tmp_path / "labels.csv", _bad_rows())
    with caplog.at_level(logging.WARNING, logger="apexmusic.data"):
        table = load_labels(path, preset="udio", column_map=None)
    plays = table.extra["plays"]
    assert plays[table.ids.index("bad0")] == 1234  # thousands separators in a count column
    assert all(np.isnan(plays[table.ids.index(f"bad{k}")]) for k in range(1, 6))
    assert table.invalid == {"plays": 5, "likes": 1}
    [record] = [r for r in caplog.records if "invalid label values" in r.getMessage()]
    message = record.getMessage()
    assert str(path) in message and "plays 5" in message and "likes 1" in message
    assert "'lots'" in message and "'NaN'" in message and "'inf'" in message and "'many'" in message
    # the plain preset also reads the scores: '3,5' is counted, not guessed
    plain = load_labels(path, preset="plain")
    assert plain.invalid == {"plays": 5, "likes": 1, "coherence": 1}
    assert np.isnan(plain.targets[0, ALL_TASKS.index("coherence")])


def test_strict_turns_invalid_values_into_one_error(tmp_path):
    path = _write_csv(tmp_path / "labels.csv", _bad_rows())
    with pytest.raises(DataError) as info:
        load_labels(path, preset="udio", strict=True)
    text = str(info.value)
    assert "\n" not in text and "plays 5" in text and str(path) in text
    clean = _write_csv(tmp_path / "clean.csv", [{"id": "a", "plays": "12,345", "likes": 0}])
    assert load_labels(clean, preset="udio", strict=True).invalid == {}


def test_json_numbers_nan_inf_negative_and_huge_ints(tmp_path):
    path = tmp_path / "l.jsonl"
    values = [5, 7.0, float("nan"), float("inf"), -1, 10**400, True, None, "12"]
    path.write_text(
        "\n".join(json.dumps({"id": f"s{i}", "plays": v, "likes": 1}) for i, v in enumerate(values))
    )
    table = load_labels(path, preset="udio")
    np.testing.assert_array_equal(np.isfinite(table.extra["plays"]), [1, 1, 0, 0, 0, 0, 0, 0, 1])
    assert table.invalid == {"plays": 5}  # None is missing, not invalid


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_sniffed_and_bom_stripped(tmp_path, delimiter):
    rows = [
        {"id": "a", "plays": "1,234", "likes": 3, "user_id": "u"},
        {"id": "b", "plays": 9, "likes": 4, "user_id": "v"},
    ]
    reference = load_labels(_write_csv(tmp_path / "comma.csv", rows))
    path = tmp_path / "other.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # with a byte-order mark
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfid")
    table = load_labels(path)
    assert "(udio)" in table.source and table.ids == ["a", "b"] == reference.ids
    np.testing.assert_array_equal(table.extra["plays"], [1234, 9])
    np.testing.assert_array_equal(table.targets, reference.targets)
    assert list(table.creator) == ["u", "v"]


def test_bom_in_json_labels(tmp_path):
    path = tmp_path / "l.json"
    path.write_text(json.dumps([{"id": "a", "plays": 3, "likes": 1}]), encoding="utf-8-sig")
    assert load_labels(path, preset="udio").ids == ["a"]


def test_cli_warns_and_strict_exits_2_with_one_line(tmp_path, capsys, caplog):
    from apexmusic.cli import main

    songs, _, _, _ = simulate(n=12, n_layers=2, dim=4)
    store = write_store(tmp_path / "store", songs, 2, 4)
    rows = [{"id": s.id, "plays": 10 * (i + 1), "likes": i + 1} for i, s in enumerate(songs)]
    rows[3]["plays"], rows[4]["likes"] = "lots", "-5"
    labels = _write_csv(tmp_path / "labels.csv", rows)
    argv = ["train", "--embeddings", str(store), "--labels", str(labels), "--task", "popularity"]
    argv += ["--out", str(tmp_path / "model"), "--epochs", "1", "--device", "cpu", "--allow-small"]

    assert main([*argv, "--strict"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("apexmusic: data error:") and "plays 1" in line and "likes 1" in line
    assert not (tmp_path / "model").exists()
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    [warning] = [r for r in caplog.records if r.name == "apexmusic.data" and r.levelno == logging.WARNING]
    assert (
        "invalid label values read as missing: plays 1 (e.g. 'lots'); likes 1 (e.g. '-5')"
        in warning.getMessage()
    )
