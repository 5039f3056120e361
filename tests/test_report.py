"""`apexmusic report` on an evaluation folder that is not a demo: metrics, logs, arena."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from apexmusic.cli import main
from apexmusic.errors import InputError
from apexmusic.report import write_report
from apexmusic.tasks import ALL_TASKS


@pytest.fixture
def eval_dir(tmp_path):
    from apexmusic.arena import EvalConfig, PaperConfig, battles_from_records, evaluate_arena, write_json
    from apexmusic.metrics import evaluate_predictions, write_evaluation

    rng = np.random.default_rng(0)
    n = 80
    y = np.column_stack([rng.uniform(0, 100, (n, 2)), rng.uniform(1, 5, (n, 5))])
    pred = y + rng.normal(0, 1, y.shape) * np.array([20, 20, 1, 1, 1, 1, 1])
    platforms = np.array(["suno", "udio"] * (n // 2), dtype=object)
    evaluation = evaluate_predictions([f"s{i}" for i in range(n)], y, pred, ALL_TASKS, platforms, n_boot=100)
    write_evaluation(evaluation, tmp_path)
    with (tmp_path / "train_log.jsonl").open("w") as f:
        for epoch in range(1, 6):
            f.write(
                json.dumps(
                    {
                        "epoch": epoch,
                        "epochs": 5,
                        "train_loss": 1 / epoch,
                        "val_loss": 1.2 / epoch,
                        "val_spearman": {t: 0.1 * epoch for t in ALL_TASKS},
                    }
                )
                + "\n"
            )
    records = []
    for i in range(120):
        a, b = rng.normal(size=7), rng.normal(size=7)
        pref = "A" if a.sum() + rng.normal() > b.sum() else "B"
        rec = {"battle_uuid": f"b{i}", "system_a": "x", "system_b": "y", "preference": pref}
        rec.update({f"{t}_a": float(a[k]) for k, t in enumerate(ALL_TASKS)})
        rec.update({f"{t}_b": float(b[k]) for k, t in enumerate(ALL_TASKS)})
        records.append(rec)
    arena = evaluate_arena(
        battles_from_records(records),
        EvalConfig(
            n_bootstrap=100,
            folds=5,
            gb_max_iter=20,
            paper=PaperConfig(n_estimators=10, svm_C=(1.0,), svm_kernels=("rbf",), svm_gammas=("scale",)),
        ),
    )
    write_json(arena, tmp_path / "arena_metrics.json")
    return tmp_path, evaluation


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_report_of_an_evaluation_folder(eval_dir):
    folder, evaluation = eval_dir
    out = write_report(folder, folder / "r.html")
    page = out.read_text()
    images = _images(page)
    assert len(images) == 3  # metric bars, training curves, arena
    assert all(img[:4] == b"\x89PNG" for img in images)
    for task in ALL_TASKS:  # the table shows the numbers of metrics.json
        assert f"{evaluation.metrics[task]['spearman']:.3f}" in page
    assert "<h2>Training curves</h2>" in page and "<h2>Arena: pairwise preferences</h2>" in page
    assert "<h2>Spearman per platform</h2>" in page and "udio (n=40)" in page
    assert "paper protocol · svm" in page and "(paper 0.614)" in page
    udio = evaluation.per_platform["score_streams"]["udio"]["spearman"]
    assert f"{udio:.3f}" in page


def test_report_cli_writes_next_to_the_folder(eval_dir, capsys):
    folder, _ = eval_dir
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError):
        write_report(tmp_path, tmp_path / "r.html")
    assert main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err


def test_every_figure_fits_its_labels_and_legends(eval_dir, tmp_path, monkeypatch):
    from _figures import layout_problems, report_figures

    figures = report_figures(eval_dir[0], tmp_path / "report.html", monkeypatch)
    assert len(figures) == 3  # metric bars, training curves, arena
    assert [p for fig in figures for p in layout_problems(fig)] == []


def test_report_of_a_trained_model_shows_its_trust_statistics(aesthetics_only_model, tmp_path):
    trust = json.loads((aesthetics_only_model / "trust.json").read_text())
    page = write_report(aesthetics_only_model.parent, tmp_path / "r.html").read_text()
    assert "<h2>Scores you can trust</h2>" in page
    iv = trust["intervals"]
    for task in ("coherence", "clarity"):  # the table shows trust.json's measured coverage
        assert f"{100 * iv['coverage_heldout'][task]:.1f}% (n={iv['n_heldout'][task]})" in page
    assert page.count("not served") == 2  # streams and likes: no labels, no score
    # split-conformal: the held-out songs are the test split
    assert iv["coverage_heldout"] == iv["coverage_test"]
    section = page.split("<h2>Scores you can trust</h2>")[1].split("<h2>")[0]
    assert [img[:4] for img in _images(section)] == [b"\x89PNG"]  # the coverage picture
