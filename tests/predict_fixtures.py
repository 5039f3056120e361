"""A tiny trained model directory for the predict / serve / web tests (built once per session).

Three short real songs are embedded with the handcrafted encoder into a real store; a small
APEX head is trained for a few hundred steps on synthetic labels that are known functions of
the song descriptors, then saved with ``save_pretrained``. Takes a few seconds on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apexmusic.tasks import ALL_TASKS, TASKS

SHORT_SONGS = ("acestep_hiphop_rap_shirt_song.opus", "acestep_saxphone_jazz.opus", "yue_01_en.mp3")


def build_store(
    real_audio_dir: Path,
    out_dir: Path,
    encoder: str = "handcrafted",
    weights: str | None = None,
    songs: tuple[str, ...] = SHORT_SONGS,
) -> Path:
    from apexmusic.embed import EmbedConfig, embed_inputs
    from apexmusic.sources import Song

    inputs = [Song(Path(n).stem, str(real_audio_dir / n)) for n in songs]
    report = embed_inputs(inputs, out_dir, EmbedConfig(encoder=encoder, weights=weights, workers=0))
    assert report.n_failed == 0, report.failures
    return out_dir


def synthetic_targets(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each task is a fixed random projection of the standardised input, squashed into range."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(x.shape[1], len(ALL_TASKS))) / np.sqrt(x.shape[1])
    z = 1.0 / (1.0 + np.exp(-2.0 * (x @ w)))
    return np.stack([TASKS[t].low + TASKS[t].span * z[:, i] for i, t in enumerate(ALL_TASKS)], axis=1)


def train_tiny_model(
    store_dir: Path, model_dir: Path, steps: int = 120, seed: int = 0, mode: str = "song"
) -> Path:
    """Train a small head on noisy copies of the store's song and segment vectors; ``mode`` is
    the training mode recorded (``segment``: the model pools segment scores)."""
    import torch

    from apexmusic.model import HeadConfig, ScoringModel, build_net
    from apexmusic.store import EmbeddingStore

    store = EmbeddingStore.open(store_dir)
    data = store.load(with_segments=True)
    rows = np.concatenate([data.layers, *data.segments])  # songs + segments, [N, L, D]
    std = rows.std(0) + 1e-6
    rng = np.random.default_rng(seed)
    train = np.concatenate([rows + 0.3 * std * rng.normal(size=rows.shape) for _ in range(24)])
    mixed = train.mean(1)  # what the `mean` layer mix feeds the head
    mean, mixed_std = mixed.mean(0), mixed.std(0) + 1e-6
    targets = synthetic_targets((mixed - mean) / mixed_std, seed)

    torch.manual_seed(seed)
    n_layers, dim = data.spec.shape
    net = build_net(HeadConfig(n_layers=n_layers, dim=dim, mixing="mean"), seed=seed)
    net.norm_mean.copy_(torch.from_numpy(mean))
    net.norm_std.copy_(torch.from_numpy(mixed_std))
    x = torch.from_numpy(train.astype(np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    scale = torch.tensor([TASKS[t].span for t in ALL_TASKS])
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: extra threads only spin on a shared 2-core box
    try:
        net.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,))
            loss = (((net(x[idx]) - y[idx]) / scale) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
    finally:
        torch.set_num_threads(threads)
    spec = data.spec  # the spec `apexmusic train` records
    model = ScoringModel(
        net=net,
        encoder_spec=spec,
        training={"mode": mode},
        card={"title": "tiny test model", "data": {"songs": "3 real songs, synthetic labels"}},
    )
    model.save_pretrained(model_dir)
    np.save(model_dir.parent / "train_rows.npy", train[:, 0].astype(np.float32) if n_layers == 1 else train)
    return model_dir


def pooled_segment_scores(model, store: Path) -> dict[str, np.ndarray]:
    """Segment scores pooled song by song with a plain loop: sum(w_j * s_j) / sum(w_j)."""
    from apexmusic.store import EmbeddingStore

    data = EmbeddingStore.open(store).load(with_segments=True)
    out = {}
    for song_id, segments, weights in zip(data.ids, data.segments, data.segment_weights, strict=True):
        rows = model.predict_layers(segments)
        per_segment = np.stack([rows[t] for t in model.tasks], 1).astype(np.float64)
        assert len(weights) > 1 and len(set(np.round(weights, 3))) > 1  # a short last segment
        out[song_id] = (per_segment * weights[:, None]).sum(0) / weights.sum()
    return out


def train_aesthetics_only_model(store_dir: Path, root: Path, n_songs: int = 240, seed: int = 0) -> Path:
    """A model trained by ``apexmusic.train`` (so with trust statistics) on jittered copies of the
    store's song vectors, from a labels file without plays/likes: popularity is not served.
    Returns the model directory ``root / "model"``; the labels file is ``root / "labels.csv"``."""
    import csv

    from apexmusic.data import join_labels, load_labels
    from apexmusic.store import EmbeddingStore, SongEmbedding
    from apexmusic.train import TrainConfig, save_training_outputs, train

    real = EmbeddingStore.open(store_dir).load()
    rng = np.random.default_rng(seed)
    std = real.layers.std(0) + 1e-6
    pick = np.arange(n_songs) % len(real.layers)
    layers = (real.layers[pick] + 0.3 * std * rng.normal(size=(n_songs, *real.layers.shape[1:]))).astype(
        np.float32
    )
    songs = [
        SongEmbedding(
            f"jit{i:04d}",
            f"jit{i:04d}.wav",
            "0" * 64,
            60.0,
            layers[i],
            layers[i][None],
            np.ones(1, np.float32),
        )
        for i in range(n_songs)
    ]
    store = EmbeddingStore.create(root / "store", real.spec)
    store.write(songs)
    mixed = layers.mean(1)
    targets = synthetic_targets((mixed - mixed.mean(0)) / (mixed.std(0) + 1e-6), seed)
    labels = root / "labels.csv"
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *ALL_TASKS[2:]])
        for i, song in enumerate(songs):
            writer.writerow([song.id, *(round(float(v), 4) for v in targets[i, 2:])])
    dataset = join_labels(EmbeddingStore(root / "store").load(), load_labels(labels))
    config = TrainConfig(
        epochs=12, batch_size=64, lr=1e-2, n_boot=0, device="cpu", val_fraction=0.2, test_fraction=0.2
    )
    return save_training_outputs(train(dataset, config), root / "model")
