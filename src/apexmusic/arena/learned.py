"""Our learned preference models: side-symmetric classifiers of "A won" on score differences.

Logistic regression and gradient boosting, cross-validated with stratified k folds on the
decisive battles. Both see every training battle also side-swapped, so that
P(A wins | a, b) = 1 - P(A wins | b, a).
"""

from __future__ import annotations

import numpy as np

from apexmusic.arena.battles import Battles
from apexmusic.arena.config import EvalConfig
from apexmusic.tasks import ALL_TASKS, POPULARITY_TASKS

# Feature sets of the learned models (the paper's ablation), plus every score present.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "popularity": POPULARITY_TASKS,
    "popularity+aesthetics": ALL_TASKS,
}


def evaluate_learned(battles: Battles, config: EvalConfig | None = None) -> dict:
    """``learned`` section: LR and gradient boosting per feature set, k-fold CV on decisive battles.

    Feature sets: ``popularity`` (score_streams, score_likes), ``popularity+aesthetics`` (all
    seven APEX scores) when present, and ``all_scores`` (every score name) when it differs.
    """
    from threadpoolctl import threadpool_limits

    config = config or EvalConfig()
    out = {}
    with threadpool_limits(1):  # tiny problems: threads only add overhead (and contend)
        for set_name, features in _feature_sets(battles.score_names).items():
            out[set_name] = _cross_validate(battles, features, config)
    return out


def _feature_sets(names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    sets = {k: v for k, v in FEATURE_SETS.items() if all(f in names for f in v)}
    if names and tuple(names) not in sets.values():
        sets["all_scores"] = tuple(names)
    return sets


def decisive_differences(battles: Battles, features: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Score differences a - b [n, features] and labels (1: A won) of the decisive battles with
    every feature scored."""
    x = np.stack([battles.scores_a[f] - battles.scores_b[f] for f in features], axis=1)
    keep = np.isin(battles.preference, ["A", "B"]) & np.isfinite(x).all(1)
    return x[keep], (battles.preference[keep] == "A").astype(int)


def _cross_validate(battles: Battles, features: tuple[str, ...], config: EvalConfig) -> dict:
    from sklearn.metrics import roc_auc_score

    x, y = decisive_differences(battles, features)
    folds = min(config.folds, int(min((y == 1).sum(), (y == 0).sum())))
    out: dict = {"features": list(features), "n": len(y), "folds": folds}
    if folds < 2:
        return out | {"skipped": "fewer than two decisive battles of each outcome"}
    fold_of = stratified_folds(y, folds, config.seed)
    models = {
        "logistic_regression": lambda xt, yt: SymmetricLogistic().fit(xt, yt),
        "gradient_boosting": lambda xt, yt: SymmetricBoosting(config.gb_max_iter, config.seed).fit(xt, yt),
    }
    for model_name, make in models.items():
        acc, auc = [], []
        for k in range(folds):
            test = fold_of == k
            margin = make(x[~test], y[~test]).margin(x[test])
            acc.append(float(np.mean(np.where(margin == 0, 0.5, (margin > 0) == y[test]))))
            auc.append(float(roc_auc_score(y[test], margin)))
        out[model_name] = {
            "accuracy_mean": float(np.mean(acc)),
            "accuracy_sd": float(np.std(acc, ddof=1)),
            "auc_mean": float(np.mean(auc)),
            "auc_sd": float(np.std(auc, ddof=1)),
            "accuracy_folds": acc,
            "auc_folds": auc,
        }
    return out


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index per item: each class spread evenly over ``k`` folds, in a random order.

    Unlike sklearn's StratifiedKFold the assignment does not depend on which class is called
    0 or 1, so exchanging the sides of every battle gives the same folds.
    """
    order = np.random.default_rng(seed).permutation(len(y))
    rank = np.empty(len(y), int)
    rank[order] = np.arange(len(y))
    classes = sorted(np.unique(y), key=lambda c: rank[y == c].min())  # label-free class order
    fold = np.empty(len(y), int)
    start = 0
    for c in classes:
        members = np.flatnonzero(y == c)
        members = members[np.argsort(rank[members])]
        fold[members] = (start + np.arange(len(members))) % k
        start += len(members)
    return fold


def _mirrored(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each battle and its side-swapped copy, in a canonical row order (so that a battle set and
    its swapped version give bit-identical training data)."""
    xx = np.concatenate([x, -x])
    yy = np.concatenate([y, 1 - y])
    order = np.lexsort(np.column_stack([xx, yy]).T[::-1])
    return xx[order], yy[order]


class SymmetricLogistic:
    """L2 logistic regression without intercept on differences scaled by their RMS."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> SymmetricLogistic:
        from sklearn.linear_model import LogisticRegression

        xx, yy = _mirrored(x, y)
        self.scale = np.sqrt(np.mean(xx**2, axis=0))
        self.scale[self.scale == 0] = 1.0
        lr = LogisticRegression(C=self.C, fit_intercept=False, tol=1e-8, max_iter=10000)
        # Mirrored copies at half weight: the same penalised likelihood as the original rows.
        lr.fit(xx / self.scale, yy, sample_weight=np.full(len(yy), 0.5))
        self.coef = lr.coef_[0]
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        return (x / self.scale) @ self.coef


class SymmetricBoosting:
    """Gradient-boosted trees trained on mirrored battles; margin f(x) - f(-x) is antisymmetric."""

    def __init__(self, max_iter: int = 100, seed: int = 0):
        self.max_iter, self.seed = max_iter, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> SymmetricBoosting:
        from sklearn.ensemble import HistGradientBoostingClassifier

        xx, yy = _mirrored(x, y)
        self.model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, early_stopping=False, random_state=self.seed
        ).fit(xx, yy)
        return self

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.model.decision_function(x) - self.model.decision_function(-x)
