"""The demo's arena stage: simulated battles on held-out styles, rules and learned models, the
comparator the model ships, and the hidden-preference ceiling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apexmusic.arena import write_json
from apexmusic.demo.config import DemoConfig
from apexmusic.demo.evaluation import _truth_table
from apexmusic.tasks import ALL_TASKS


def _arena(out: Path, corpus, config: DemoConfig, ds_held, model) -> dict[str, Any]:
    from apexmusic.arena import (
        EvalConfig,
        PreferenceComparator,
        ScoreTable,
        attach_scores,
        evaluate_arena,
        load_battles,
    )
    from apexmusic.train import predict_dataset

    pred = predict_dataset(model, ds_held)
    scores = ScoreTable(
        ids=list(ds_held.labels.ids),
        paths=list(ds_held.store.paths),
        values={t: pred[:, i] for i, t in enumerate(ALL_TASKS)},
    )
    battles, join = attach_scores(load_battles(corpus.battles_path), scores)
    # The paper's five classifiers (a minute of grid searches) are left to `apexmusic arena eval`.
    arena_config = EvalConfig(
        n_bootstrap=config.n_boot, folds=config.arena_folds, seed=config.seed, paper=None
    )
    result = evaluate_arena(battles, arena_config, join)
    (out / "arena").mkdir(parents=True, exist_ok=True)
    write_json(result, out / "arena" / "arena_metrics.json")
    truth = _truth_table(corpus)
    ceiling = _oracle_accuracy(battles, truth)
    comparator = PreferenceComparator().fit(battles)
    rules = {
        name: {k: entry.get(k) for k in ("n", "accuracy", "accuracy_ci", "auc", "auc_ci")}
        for name, entry in result["rules"].items()
    }
    learned = {
        name: {
            m: {k: v for k, v in entry[m].items() if not k.endswith("_folds")}
            for m in ("logistic_regression", "gradient_boosting")
            if m in entry
        }
        for name, entry in result["learned"].items()
    }
    return {
        "n_battles": len(battles),
        "matched": join.n_matched,
        "rules": rules,
        "learned": learned,
        "hidden_preference_accuracy": ceiling,
        "comparator": comparator,
    }


def _oracle_accuracy(battles, truth) -> float | None:
    """Accuracy of the simulator's own hidden listener preference on decisive battles: the
    ceiling that per-vote noise leaves to any score."""
    right, n = 0, 0
    for a, b, pref in zip(battles.audio_a, battles.audio_b, battles.preference, strict=True):
        if pref not in ("A", "B"):
            continue
        ta, tb = truth.get(Path(str(a)).stem), truth.get(Path(str(b)).stem)
        if ta is None or tb is None:
            continue
        a_better = float(ta["listener_preference"]) > float(tb["listener_preference"])
        right += a_better == (pref == "A")
        n += 1
    return right / n if n else None
