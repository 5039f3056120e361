"""import-reference against an independently written reference-format model."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from apexmusic.cli import main
from apexmusic.compat import reference_vector
from apexmusic.errors import ModelLoadError
from apexmusic.model import ScoringModel, import_reference_checkpoint

TASKS = ["score_streams", "score_likes", "coherence", "musicality", "memorability", "clarity", "naturalness"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Written from the published description only, sharing no code with apexmusic.model.
class SharedLayer(nn.Module):
    def __init__(self, i, o, p):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(i, o), nn.BatchNorm1d(o), nn.GELU(), nn.Dropout(p))

    def forward(self, x):
        return self.block(x)


class TaskBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(SharedLayer(256, 128, 0.1), SharedLayer(128, 64, 0.1), nn.Linear(64, 1))

    def forward(self, x):
        return self.branch(x)


class PublishedAPEX(nn.Module):
    def __init__(self, tasks, n_shared, in_dim=768):
        super().__init__()
        dims = [in_dim, 512, 256] if n_shared == 2 else [in_dim, 512, 384, 256]
        self.shared = nn.Sequential(*[SharedLayer(dims[i], dims[i + 1], 0.3) for i in range(n_shared)])
        self.tasks = tasks
        for t in tasks:
            setattr(self, f"branch_{t}", TaskBranch())

    def forward(self, x):
        h = self.shared(x)
        out = {}
        for t in self.tasks:
            z = torch.sigmoid(getattr(self, f"branch_{t}")(h)).squeeze(1)
            out[t] = z * 100 if t.startswith("score_") else z * 4 + 1
        return out


def _reference_checkpoint(path, tasks, n_shared, seed=0, in_dim=768):
    torch.manual_seed(seed)
    model = PublishedAPEX(tasks, n_shared, in_dim)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)
    task = "full" if len(tasks) == 7 else "popularity"
    torch.save(
        {
            "model_state": model.state_dict(),
            "task": task,
            "shared": n_shared,
            "mode": "song",
            "epoch": 37,
            "val_loss": 123.4,
        },
        path,
    )
    return model.eval()


@pytest.mark.parametrize(("tasks", "n_shared"), [(TASKS, 2), (TASKS[:2], 3)])
def test_imported_model_equals_the_reference_on_768d_inputs(tmp_path, tasks, n_shared):
    reference = _reference_checkpoint(tmp_path / "best_model.pt", tasks, n_shared)
    assert (
        main(
            ["import-reference", str(tmp_path / "best_model.pt"), str(tmp_path / "model"), "--n-layers", "1"]
        )
        == 0
    )
    model = ScoringModel.from_pretrained(tmp_path / "model")
    assert model.tasks == tuple(tasks) and model.config.shared == n_shared
    assert model.config.mixing == "reference" and not model.config.standardize
    assert model.encoder_spec.compat == "reference" and model.training["epoch"] == 37
    x = np.random.default_rng(3).standard_normal((64, 768)).astype(np.float32)
    ours = model.predict_layers(x[:, None, :])
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x))
    for t in tasks:
        np.testing.assert_allclose(ours[t], theirs[t].numpy(), rtol=1e-5, atol=1e-4)
    assert not list((tmp_path / "model").glob("*.pt")) and not list((tmp_path / "model").glob("*.pkl"))


def test_imported_model_mixes_13_hidden_states_like_the_reference(tmp_path):
    reference = _reference_checkpoint(tmp_path / "best_model.pt", TASKS, 2, seed=4)
    model = import_reference_checkpoint(tmp_path / "best_model.pt")  # default: 13 hidden states
    assert model.config.n_layers == 13 and model.encoder_spec.n_layers == 13
    hidden = np.random.default_rng(5).standard_normal((16, 13, 768)).astype(np.float32)
    ours = model.predict_layers(hidden)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(reference_vector(hidden)))
    for t in TASKS:
        np.testing.assert_allclose(ours[t], theirs[t].numpy(), rtol=1e-5, atol=1e-4)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_or_wrong_checkpoints_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"model_state": {}, "payload": _Evil()}, f)
    with pytest.raises(ModelLoadError):
        import_reference_checkpoint(evil)
    torch.save({"model_state": {"foo.weight": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError):
        import_reference_checkpoint(tmp_path / "odd.pt")
    assert main(["import-reference", str(tmp_path / "missing.pt"), str(tmp_path / "m")]) == 2


def _published_pipeline_vector(mert, audio: np.ndarray, segment: int) -> np.ndarray:
    """The reference pipeline, literally: zero-padded 30 s segments, time-mean of hidden states
    2, 5, 8, 12, the untrained Conv1d(4->1) made right after manual_seed(42), mean over segments."""
    n_segments = -(-audio.size // segment)
    padded = np.zeros((n_segments, segment), np.float32)
    padded.reshape(-1)[: audio.size] = audio
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        conv = nn.Conv1d(4, 1, kernel_size=1)
    vectors = []
    with torch.no_grad():
        for row in padded:
            out = mert(torch.from_numpy(row)[None], output_hidden_states=True)
            stacked = torch.stack([out.hidden_states[i].mean(dim=1) for i in (2, 5, 8, 12)], dim=1)
            vectors.append(conv(stacked)[0, 0])
    return torch.stack(vectors).mean(0).numpy()


def test_an_imported_model_scores_a_store_embedded_with_local_mert_weights(
    tmp_path, monkeypatch, shared_data, caplog
):
    """import-reference + a --compat reference store made with a local copy of the weights:
    scored with a warning (the published weights' fingerprint is unknown), never refused, and
    equal to the published head on the published pipeline's vectors, from the store and audio
    (fp32); at the default precision (bf16 where the CPU runs it natively) within 0.1 / 0.005."""
    from test_mert import tiny, write_published_folder

    import apexmusic.encoders.mert as mert_module
    from apexmusic.audio import decode_mono
    from apexmusic.encoders.mert import build_model
    from apexmusic.tasks import TASKS as RANGES

    arch = tiny(mert_module.MERT_V1_95M, layers=12)  # the published layout at a tiny width
    monkeypatch.setattr(mert_module, "MERT_V1_95M", arch)
    mert = build_model(arch, seed=3).eval()
    weights = tmp_path / "models" / "MERT-v1-95M"
    write_published_folder(mert, arch, weights, "safetensors")
    song = shared_data / "real-audio" / "acestep_hiphop_rap_shirt_song.opus"
    store, model_dir = tmp_path / "store", tmp_path / "apex"
    embed = ["embed", str(song), "--encoder", "mert-v1-95m", "--weights", str(weights), "--precision", "fp32"]
    assert main([*embed, "--compat", "reference", "--out", str(store), "--workers", "0"]) == 0
    reference = _reference_checkpoint(tmp_path / "best_model.pt", TASKS, 2, seed=6, in_dim=arch.hidden_size)
    assert main(["import-reference", str(tmp_path / "best_model.pt"), str(model_dir)]) == 0

    scored = tmp_path / "s.jsonl"
    with caplog.at_level("WARNING"):
        assert (
            main(["predict", "--embeddings", str(store), "--model", str(model_dir), "--out", str(scored)])
            == 0
        )
    assert "cannot verify" in caplog.text and "m-a-p/MERT-v1-95M" in caplog.text
    out = tmp_path / "a.jsonl"
    args = ["predict", str(song), "--model", str(model_dir), "--weights", str(weights), "--out", str(out)]
    assert main([*args, "--mc-samples", "0", "--precision", "fp32"]) == 0
    fast = tmp_path / "b.jsonl"
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main([*args[:-1], str(fast), "--mc-samples", "0", "--precision", "bf16"]) == 0
    assert "precision: model 'fp32' vs the predictor's encoder 'bf16'" in caplog.text

    audio, _ = decode_mono(song, arch.extra.get("sample_rate", 24000))
    vector = _published_pipeline_vector(mert, audio, 30 * 24000)
    with torch.no_grad():
        expected = reference(torch.from_numpy(vector)[None])
    (from_store,) = [json.loads(x) for x in scored.read_text().splitlines()]
    (from_audio,) = [json.loads(x) for x in out.read_text().splitlines()]
    (from_bf16,) = [json.loads(x) for x in fast.read_text().splitlines()]
    # The comparison can tell pipelines apart: leaving out the zero-padded last segment moves scores.
    with torch.no_grad():
        unpadded = reference(
            torch.from_numpy(_published_pipeline_vector(mert, audio[: 60 * 24000], 30 * 24000))[None]
        )
    assert max(abs(float(unpadded[t][0] - expected[t][0])) / (1e-4 * RANGES[t].span) for t in TASKS) > 10
    for task in TASKS:
        tol = 1e-4 * RANGES[task].span
        assert from_store[task] == pytest.approx(float(expected[task][0]), abs=tol), task
        assert from_audio[task] == pytest.approx(float(expected[task][0]), abs=tol), task
        bf16_tol = 0.1 if RANGES[task].span > 50 else 0.005
        assert from_bf16[task] == pytest.approx(float(expected[task][0]), abs=bf16_tol), task
