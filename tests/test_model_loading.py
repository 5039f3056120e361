"""Loading a model directory trusts nothing: config.json is checked against the safetensors header
before anything is allocated, non-finite weights and a model_id that is not the weights' own are
refused in one line, and every file of the folder gets the same mode."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from apexmusic.cli import main
from apexmusic.errors import ModelLoadError
from apexmusic.model import HeadConfig, ModelDir, ScoringModel, build_net, expected_state_shapes, weights_id
from apexmusic.store import EmbeddingSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = EmbeddingSpec(encoder="sim", n_layers=2, dim=8, sample_rate=16000, weights="/models/sim")
SRC = Path(__file__).resolve().parents[1] / "src"


def _saved(tmp_path: Path, seed: int = 3, name: str = "m") -> ModelDir:
    net = build_net(
        HeadConfig(tasks=("score_streams", "coherence"), n_layers=2, dim=8, mixing="learned"), seed=seed
    )
    ScoringModel(net=net.eval(), encoder_spec=SPEC).save_pretrained(tmp_path / name)
    return ModelDir(tmp_path / name)


def _edit_config(folder: ModelDir, **head) -> None:
    config = json.loads(folder.config_path.read_text())
    config["head"].update(head)
    folder.config_path.write_text(json.dumps(config))


def _one_line_error(folder: ModelDir) -> str:
    with pytest.raises(ModelLoadError) as info:
        ScoringModel.from_pretrained(folder.root)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ({"dim": 2e9}, "dim must be an integer"),
        ({"dim": 9}, "'norm_mean' is [2, 8] in the weights, the config implies [2, 9]"),
        ({"n_layers": 3}, "is [2, 8] in the weights, the config implies [3, 8]"),
        (
            {"shared": 3},
            "missing shared.2.block.0.bias, shared.2.block.0.weight, shared.2.block.1.bias and 4 more",
        ),
        ({"tasks": ["score_streams"]}, "unexpected branch_coherence.branch.0.block.0.bias,"),
        ({"tasks": ["score_streams", "coherence", "musicality"]}, "missing branch_musicality.branch.0"),
        (
            {"mixing": "mean"},
            "(tasks=2, shared=2, n_layers=2, dim=8, mixing=mean): "
            "missing mixer.bias, mixer.weights, unexpected mixer.logits",
        ),
        ({"shared": "2"}, "shared must be an integer"),
        ({"n_layers": True}, "n_layers must be an integer"),
        ({"trunk_dropout": "0.3"}, "trunk_dropout must be a number in [0, 1)"),
        ({"branch_dropout": 1.5}, "branch_dropout must be a number in [0, 1)"),
        ({"tasks": "coherence"}, "tasks and reference_layers must be lists"),
        ({"reference_layers": [2.5]}, "reference_layers must be integers"),
    ],
)
def test_a_hostile_head_block_is_refused_in_one_line(tmp_path, head, expected):
    folder = _saved(tmp_path)
    _edit_config(folder, **head)
    assert expected in _one_line_error(folder)


def test_an_encoder_block_that_disagrees_with_the_head_is_refused(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads(folder.config_path.read_text())
    config["encoder"]["dim"] = 16
    folder.config_path.write_text(json.dumps(config))
    assert "describes 2x16 vectors but the head takes 2x8" in _one_line_error(folder)


def test_a_huge_dimension_fails_fast_without_allocating(tmp_path):
    """dim=2e9 as an integer names 8 GB buffers (and TB-sized layers): the header check refuses it
    before one is allocated, so the loading process stays at the size of torch itself."""
    folder = _saved(tmp_path)
    _edit_config(folder, dim=2_000_000_000)
    script = textwrap.dedent(
        f"""
        import resource, sys
        from apexmusic.errors import ModelLoadError
        from apexmusic.model import ScoringModel
        print("BEFORE_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        try:
            ScoringModel.from_pretrained({str(folder.root)!r})
        except ModelLoadError as exc:
            print("ERROR", exc)
        print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=True
    ).stdout
    assert "'norm_mean' is [2, 8] in the weights, the config implies [2, 2000000000]" in out
    before_mb = int(out.split("BEFORE_KB")[1].split()[0]) / 1024
    peak_mb = int(out.split("PEAK_KB")[1]) / 1024
    assert peak_mb - before_mb < 500, (
        f"loading a hostile config grew from {before_mb:.0f} to {peak_mb:.0f} MB"
    )


def test_the_cli_reports_a_hostile_config_in_one_line_with_exit_2(tmp_path, capsys):
    folder = _saved(tmp_path)
    _edit_config(folder, dim=2_000_000_000)
    song = tmp_path / "song.wav"
    song.write_bytes(b"not read: the model is refused first")
    code = main(["predict", str(song), "--model", str(folder.root), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("apexmusic:")]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and "the config implies [2, 2000000000]" in errors[0]
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad):
    folder = _saved(tmp_path)
    state = load_file(str(folder.weights_path))
    state["shared.1.block.0.weight"][3, 2] = bad
    save_file(state, str(folder.weights_path))
    message = _one_line_error(folder)
    assert "'shared.1.block.0.weight' holds NaN or Inf values" in message


def test_model_id_is_the_weights_hash_and_survives_a_round_trip(tmp_path):
    folder = _saved(tmp_path)
    loaded = ScoringModel.from_pretrained(folder.root)
    assert loaded.model_id == weights_id(load_file(str(folder.weights_path)))
    assert json.loads(folder.config_path.read_text())["model_id"] == loaded.model_id
    # changed weights saved again get a new id, not the one the model was loaded with
    old_id = loaded.model_id
    with torch.no_grad():
        loaded.net.mixer.logits.add_(1.0)
    loaded.save_pretrained(tmp_path / "retrained")
    again = ScoringModel.from_pretrained(tmp_path / "retrained")
    assert again.model_id == loaded.model_id == weights_id(loaded.net.export_state_dict()) != old_id


def test_a_config_naming_another_model_id_is_refused(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads(folder.config_path.read_text())
    config["model_id"] = "apex-000000000000"
    folder.config_path.write_text(json.dumps(config))
    assert "config.json names model 'apex-000000000000' but the weights are" in _one_line_error(folder)


def test_weights_swapped_for_another_models_are_refused(tmp_path):
    """Same shapes, other values: only the id check can tell."""
    folder, other = _saved(tmp_path), _saved(tmp_path, seed=4, name="other")
    folder.weights_path.write_bytes(other.weights_path.read_bytes())
    message = _one_line_error(folder)
    assert "config.json names model" in message and "a file was changed after the model was saved" in message


def test_weights_metadata_naming_another_model_is_refused(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads(folder.config_path.read_text())
    del config["model_id"]  # an old config without an id: the weights' metadata still counts
    folder.config_path.write_text(json.dumps(config))
    state = load_file(str(folder.weights_path))
    save_file(state, str(folder.weights_path), metadata={"format": "pt", "model_id": "apex-ffffffffffff"})
    assert "the weights' metadata names model 'apex-ffffffffffff'" in _one_line_error(folder)


def test_a_model_without_any_recorded_id_gets_its_weights_id(tmp_path):
    folder = _saved(tmp_path)
    config = json.loads(folder.config_path.read_text())
    del config["model_id"]
    folder.config_path.write_text(json.dumps(config))
    state = load_file(str(folder.weights_path))
    save_file(state, str(folder.weights_path))
    assert ScoringModel.from_pretrained(folder.root).model_id == weights_id(state)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_every_model_file_gets_the_same_mode_from_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = _saved(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.root.iterdir()}
    assert set(modes) == {"config.json", "model.safetensors", "README.md"}  # no temporary left
    assert set(modes.values()) == {0o666 & ~umask}


def test_a_saved_model_still_scores_like_the_original(tmp_path):
    net = build_net(HeadConfig(tasks=("coherence",), n_layers=2, dim=8, mixing="learned"), seed=5)
    model = ScoringModel(net=net.eval(), encoder_spec=SPEC)
    model.save_pretrained(tmp_path / "m")
    x = np.random.default_rng(0).normal(size=(6, 2, 8)).astype(np.float32)
    loaded = ScoringModel.from_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_layers(x)["coherence"], model.predict_layers(x)["coherence"])


@pytest.mark.parametrize(
    "config",
    [
        HeadConfig(),
        HeadConfig(tasks=("coherence",), shared=3, n_layers=13, dim=16, mixing="reference"),
        HeadConfig(n_layers=4, dim=16, mixing="mean", standardize=False),
        HeadConfig(n_layers=3, dim=16, mixing="learned"),
    ],
)
def test_expected_shapes_are_what_a_real_network_exports(config):
    real = {k: (tuple(v.shape), v.dtype) for k, v in build_net(config).export_state_dict().items()}
    assert expected_state_shapes(config) == real
