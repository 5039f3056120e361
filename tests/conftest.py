"""Shared test fixtures. Real data is read in place from ../shared/data (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REAL_AUDIO = SHARED_DATA / "real-audio"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_audio_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "real-audio").glob("*.*"))
    assert len(files) >= 7, "expected the seven real songs in ../shared/data/real-audio"
    return files


@pytest.fixture(scope="session")
def musicnn_wheel() -> Path:
    """The published musicnn==0.1.0 wheel, downloaded once with pip into the apexmusic cache."""
    from apexmusic.encoders.musicnn import cache_root, download_wheel
    from apexmusic.errors import ModelLoadError

    try:
        return download_wheel(cache_root() / "musicnn")
    except ModelLoadError as exc:
        pytest.fail(f"musicnn wheel unavailable (PyPI needed once): {exc}")


@pytest.fixture
def one_torch_thread():
    """One torch thread: the small heads run faster without OpenMP contention on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _limit_torch_threads():
    """Two cores in CI: keep torch from oversubscribing when tests run beside each other."""
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def predict_model_dir(tmp_path_factory, shared_data: Path) -> Path:
    """A tiny trained model on the handcrafted encoder (predict / serve / web tests)."""
    from predict_fixtures import build_store, train_tiny_model

    root = tmp_path_factory.mktemp("predict-model")
    store = build_store(shared_data / "real-audio", root / "store")
    return train_tiny_model(store, root / "model")


@pytest.fixture(scope="session")
def aesthetics_only_model(tmp_path_factory, shared_data: Path) -> Path:
    """A model trained (with trust statistics) from labels without plays/likes, on the
    handcrafted encoder: popularity is not served."""
    from predict_fixtures import build_store, train_aesthetics_only_model

    root = tmp_path_factory.mktemp("aesthetics-only")
    store = build_store(shared_data / "real-audio", root / "real-store")
    return train_aesthetics_only_model(store, root)


@pytest.fixture(scope="module")
def predictor(predict_model_dir: Path):
    """A Predictor over the session's test model, one per test module."""
    from apexmusic.predict import Predictor

    return Predictor.from_pretrained(predict_model_dir)


@pytest.fixture(scope="session")
def segment_model_setup(tmp_path_factory, shared_data: Path):
    """Three short real songs embedded (handcrafted) in 20 s segments, and a tiny model trained
    in segment mode on them: ``(song paths, store dir, model dir)``."""
    from predict_fixtures import SHORT_SONGS, train_tiny_model

    from apexmusic.cli import main

    root = tmp_path_factory.mktemp("segment-model")
    paths = [str(shared_data / "real-audio" / n) for n in SHORT_SONGS]
    store = root / "store"
    args = ["embed", *paths, "--out", str(store), "--segment-seconds", "20", "--workers", "0"]
    assert main(args) == 0
    return paths, store, train_tiny_model(store, root / "model", mode="segment")
