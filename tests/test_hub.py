"""Models by hub name, offline: a Hugging Face cache filled by the test itself (HF_HUB_OFFLINE=1).

The cache follows huggingface_hub's layout (``models--owner--name/blobs/<sha256>``,
``snapshots/<commit>/<file>`` linking to the blob, ``refs/<branch or tag>`` holding the commit).
The published model is a reference-format ``best_model.pt`` plus a published-layout tiny MERT
folder (registered as a test encoder, since the real-size one costs 378 MB).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_compat_official import PREPROCESSOR, _official_head
from test_mert import tiny, write_published_folder

from apexmusic import encoders, hub
from apexmusic.cli import main
from apexmusic.compat import reference_vector
from apexmusic.encoders.mert import MertEncoder, build_model, load_weights
from apexmusic.errors import ModelLoadError
from apexmusic.model import ModelDir
from apexmusic.predict import Predictor

SR = 24000
C1, C2 = "1" * 40, "2" * 40


def _load_tiny_mert(weights=None, device="auto", precision="auto", **opts):
    model, arch, weights_id = load_weights(weights, tiny(layers=12))
    return MertEncoder(model, arch, weights_id, device=device, precision=precision, **opts)


def fill_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str, refs: tuple[str, ...] = ()):
    """Put ``files`` (name in repo -> local file) into the cache as huggingface_hub would."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("APEXMUSIC_CACHE", str(tmp_path / "apexmusic"))
    monkeypatch.setitem(encoders._REGISTRY, "mert-tiny-test", "test_hub:_load_tiny_mert")
    monkeypatch.setitem(hub.PUBLISHED, "amaai-lab/apex", hub.PublishedModel(encoder="mert-tiny-test"))
    return tmp_path / "hf" / "hub"


@pytest.fixture
def published(offline_hub, tmp_path):
    """amaai-lab/apex at two commits (main -> C2, tag v1.0 -> C1) and a tiny published MERT."""
    arch = tiny(layers=12)
    hubert = build_model(arch, None, seed=11)
    mert = tmp_path / "mert-src"
    write_published_folder(hubert, arch, mert, "bin")
    (mert / "preprocessor_config.json").write_text(json.dumps({**PREPROCESSOR, "do_normalize": False}))
    fill_cache(offline_hub, "m-a-p/MERT-v1-95M", {f.name: f for f in mert.iterdir()}, "m" * 40, ("main",))
    heads = {}
    for commit, seed in ((C1, 3), (C2, 5)):
        torch.manual_seed(seed)
        path = tmp_path / f"ckpt-{commit[0]}.pt"
        heads[commit] = _official_head(path, arch.hidden_size, seed=seed)
        fill_cache(offline_hub, "amaai-lab/apex", {"best_model.pt": path}, commit, ())
    (offline_hub / "models--amaai-lab--apex" / "refs").mkdir(parents=True)
    (offline_hub / "models--amaai-lab--apex" / "refs" / "main").write_text(C2)
    (offline_hub / "models--amaai-lab--apex" / "refs" / "v1.0").write_text(C1)
    clip = tmp_path / "clip.wav"
    t = np.arange(int(4.5 * 44100)) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sign(np.sin(2 * np.pi * 3 * t)) * 0.2], 1) * 0.4
    sf.write(str(clip), stereo.astype(np.float32), 44100)
    return {"hubert": hubert, "heads": heads, "clip": clip, "tmp": tmp_path}


def test_hub_ids_parse_and_local_paths_win(tmp_path):
    assert hub.HubRef.parse("amaai-lab/apex") == hub.HubRef("amaai-lab/apex", None)
    assert hub.HubRef.parse("amaai-lab/apex@v1.0") == hub.HubRef("amaai-lab/apex", "v1.0")
    assert hub.HubRef.parse("./models/x") is None and hub.HubRef.parse("/abs/dir") is None
    assert hub.HubRef.parse("no-slash") is None
    local = tmp_path / "owner" / "name"
    local.mkdir(parents=True)
    assert hub.resolve_model(local) == local and not hub.is_hub_id(local)


def test_the_published_model_by_name_offline(published, offline_hub):
    from apexmusic.embed import REFERENCE, SongEmbedder
    from apexmusic.sources import Song

    predictor = Predictor.from_pretrained("amaai-lab/apex", device="cpu", mc_samples=0)
    model_dir = Path(hub.converted_root()) / "amaai-lab--apex" / C2
    provenance = ModelDir(model_dir).hub_source()
    blob = (offline_hub / "models--amaai-lab--apex" / "snapshots" / C2 / "best_model.pt").resolve()
    assert provenance["repo"] == "amaai-lab/apex" and provenance["commit"] == C2
    assert provenance["sha256"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    assert provenance["encoder_repo"] == "m-a-p/MERT-v1-95M" and provenance["encoder_commit"] == "m" * 40
    assert (model_dir / "model.safetensors").is_file() and not list(model_dir.rglob("*.pt"))
    assert predictor.model.encoder_spec["compat"] == REFERENCE
    assert predictor.embedder.segment_config.decoder == "soundfile|pyav-fallback"

    # The scores are the official head's on the official pipeline's vector.
    embedding = SongEmbedder(predictor.embedder.encoder, compat=REFERENCE).embed_path(
        Song("clip", str(published["clip"]))
    )
    with torch.no_grad():
        expected = published["heads"][C2](torch.from_numpy(reference_vector(embedding.layers))[None])
    got = predictor.predict(str(published["clip"]))[0].scores
    for task, value in expected.items():
        assert abs(got[task] - float(value[0])) < 1e-3, task

    # Converted once: a second load reuses the folder.
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    Predictor.from_pretrained("amaai-lab/apex", device="cpu", mc_samples=0)
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_revision_pins_a_version(published):
    clip = str(published["clip"])
    main_scores = Predictor.from_pretrained("amaai-lab/apex", device="cpu").predict(clip)[0].scores
    tagged = Predictor.from_pretrained("amaai-lab/apex@v1.0", device="cpu").predict(clip)[0].scores
    by_commit = Predictor.from_pretrained(f"amaai-lab/apex@{C1}", device="cpu").predict(clip)[0].scores
    assert tagged == by_commit and tagged != main_scores
    assert (hub.converted_root() / "amaai-lab--apex" / C1 / "config.json").is_file()


def test_cli_predict_with_a_hub_model(published, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert main(["predict", str(published["clip"]), "--model", "amaai-lab/apex", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 and 0 <= rows[0]["score_streams"] <= 100 and 1 <= rows[0]["coherence"] <= 5


def test_serve_a_hub_model(published):
    from fastapi.testclient import TestClient

    from apexmusic.serve import ServeConfig, create_app

    with TestClient(create_app("amaai-lab/apex", ServeConfig(device="cpu", mc_samples=0))) as client:
        card = client.get("/v1/model").json()
        assert card["encoder_spec"]["compat"] == "reference" and len(card["tasks"]) == 7
        with open(published["clip"], "rb") as f:
            response = client.post("/v1/predict", files={"file": ("clip.wav", f, "audio/wav")})
        assert response.status_code == 200, response.text


def test_offline_without_the_files_fails_with_one_line(offline_hub, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    sf.write(str(clip), np.zeros(24000, np.float32), 24000)
    code = main(["predict", str(clip), "--model", "amaai-lab/apex", "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("apexmusic:")]  # not the progress bar
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "amaai-lab/apex" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    # The checkpoint is cached but the MERT weights it needs are not.
    ckpt = tmp_path / "best_model.pt"
    _official_head(ckpt, 16)
    fill_cache(offline_hub, "amaai-lab/apex", {"best_model.pt": ckpt}, C1, ("main",))
    with pytest.raises(ModelLoadError, match="m-a-p/MERT-v1-95M.*HF_HUB_OFFLINE"):
        hub.resolve_model("amaai-lab/apex")


def test_our_model_directory_pulls_from_the_hub_cache(offline_hub, predict_model_dir, real_audio_files):
    files = {p.name: p for p in predict_model_dir.iterdir() if p.is_file()}
    fill_cache(offline_hub, "someone/apex-tiny", files, C1, ("main",))
    pulled = hub.resolve_model("someone/apex-tiny")
    assert pulled.parent.name == "snapshots" and pulled.name == C1
    song = str(min(real_audio_files, key=lambda p: p.stat().st_size))
    local = Predictor.from_pretrained(predict_model_dir, device="cpu").predict(song)[0].scores
    remote = Predictor.from_pretrained("someone/apex-tiny", device="cpu").predict(song)[0].scores
    assert local == remote


def test_push_uploads_only_the_model_data_files(predict_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))
            return type("Info", (), {"commit_url": f"https://hf.co/{kwargs['repo_id']}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = hub.push_model(predict_model_dir, "me/apex-tiny", private=True)
    assert url.endswith("/commit/abc")
    assert calls[1] == ("create", "me/apex-tiny", True, True)
    upload = calls[2][1]
    assert upload["repo_id"] == "me/apex-tiny" and Path(upload["folder_path"]) == predict_model_dir
    assert set(upload["allow_patterns"]) == set(hub.MODEL_PATTERNS)
    assert main(["push", str(predict_model_dir), "me/other"]) == 0 and calls[-1][1]["repo_id"] == "me/other"
    not_a_model = tmp_path / "x"
    shutil.copytree(predict_model_dir, not_a_model)
    (not_a_model / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        hub.push_model(not_a_model, "me/apex-tiny")
