"""ModelDir owns a model folder's files; the model's encoder block is an EmbeddingSpec; the
predict configs and writers check themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apexmusic.cli import main
from apexmusic.errors import ConfigError, ModelLoadError
from apexmusic.model import (
    REFERENCE_ENCODER_SPEC,
    HeadConfig,
    ModelDir,
    ScoringModel,
    build_net,
)
from apexmusic.predict import PredictConfig, open_writer
from apexmusic.store import EmbeddingSpec, SpecMismatchError, check_compatible

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = EmbeddingSpec(encoder="sim", n_layers=2, dim=8, sample_rate=16000, weights="/models/sim")


def _model(mode: str = "song") -> ScoringModel:
    net = build_net(
        HeadConfig(tasks=("score_streams", "coherence"), n_layers=2, dim=8, mixing="mean"), seed=3
    )
    return ScoringModel(net=net.eval(), encoder_spec=SPEC, training={"mode": mode})


def test_model_dir_reads_and_writes_every_file(tmp_path):
    from apexmusic.arena import PreferenceComparator

    folder = ModelDir(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no such model directory"):
        folder.load()
    assert folder.comparator() is None and folder.card_markdown() == ""
    _model().save_pretrained(folder.root)
    assert folder.is_model() and folder.card_path.is_file()
    assert "pooling `song`" in folder.card_markdown() and "encoder `sim`" in folder.card_markdown()
    comparator = PreferenceComparator(
        features=("score_streams",), coef=np.array([2.0]), scale=np.array([25.0]), n_train=10
    )
    folder.save_comparator(comparator)
    a, b = {"score_streams": 90.0}, {"score_streams": 10.0}
    assert folder.comparator().prob_a_wins(a, b) == pytest.approx(comparator.prob_a_wins(a, b))
    assert folder.eval_dir == folder.root / "eval"


def test_old_config_files_with_a_dict_encoder_block_still_load(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    config_path = ModelDir(tmp_path / "m").config_path
    config = json.loads(config_path.read_text())
    config["encoder"] = {  # the shape train.py wrote before EmbeddingSpec
        "name": "sim",
        "weights": "/models/sim",
        "segment_seconds": 30.0,
        "hop_seconds": 30.0,
        "compat": None,
        "n_layers": 2,
        "dim": 8,
        "sample_rate": 16000,
        "encoder_settings": {},
        "config_hash": "abc",
    }
    config_path.write_text(json.dumps(config))
    loaded = ScoringModel.from_pretrained(tmp_path / "m")
    assert isinstance(loaded.encoder_spec, EmbeddingSpec) and loaded.encoder_spec.encoder == "sim"
    check_compatible(loaded.encoder_spec, SPEC)  # the same vectors: no error
    x = np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_layers(x)["coherence"], model.predict_layers(x)["coherence"])
    config["training"] = {"mode": "sideways"}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="training mode"):
        ScoringModel.from_pretrained(tmp_path / "m")


def test_the_reference_spec_accepts_a_local_copy_and_refuses_other_segmenting():
    assert isinstance(REFERENCE_ENCODER_SPEC, EmbeddingSpec) and REFERENCE_ENCODER_SPEC.fingerprint is None
    local = REFERENCE_ENCODER_SPEC.with_(weights="/models/MERT-v1-95M", fingerprint="sha256:" + "0" * 64)
    (warning,) = check_compatible(REFERENCE_ENCODER_SPEC, local)
    assert "/models/MERT-v1-95M" in warning
    with pytest.raises(SpecMismatchError, match="segment_seconds"):
        check_compatible(REFERENCE_ENCODER_SPEC, local.with_(compat=None, segment_seconds=10.0))


def test_a_store_embedded_with_other_segments_is_refused_in_one_line(
    predict_model_dir, segment_model_setup, tmp_path, capsys
):
    _, store, _ = segment_model_setup  # 20 s segments; the predict model saw 30 s ones
    out = tmp_path / "s.jsonl"
    args = ["predict", "--embeddings", str(store), "--model", str(predict_model_dir), "--out", str(out)]
    assert main(args) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("apexmusic:")]
    assert "segment_seconds: model 30.0 vs the store's vectors 20.0" in error and not out.exists()


@pytest.mark.parametrize(
    "bad",
    [{"batch_size": 0}, {"mc_samples": -1}, {"max_seconds": 0}, {"device": "gpu"}, {"precision": "fp8"}],
)
def test_predict_config_validates_itself(bad):
    with pytest.raises(ConfigError):
        PredictConfig(**bad)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_one_writer_family_takes_rows_and_columns_and_resumes(tmp_path, suffix):
    from apexmusic.sources import read_rows

    out = tmp_path / f"scores{suffix}"
    writer = open_writer(out, resume=False)
    writer.write_columns({"id": ["a", "b"], "path": ["/a", "/b"], "x": np.array([0.5, 1.5])})
    writer.close()
    with pytest.raises(ConfigError, match="already exists"):
        open_writer(out, resume=False)
    writer = open_writer(out, resume=True)
    assert writer.done_ids() == {"a", "b"}
    writer.write_rows([{"id": "c", "path": "/c", "x": 2.5}])
    writer.close()
    rows = list(read_rows(out))
    assert [(r["id"], float(r["x"])) for r in rows] == [("a", 0.5), ("b", 1.5), ("c", 2.5)]
    assert open_writer(out, resume=True).done_ids() == {"a", "b", "c"}
