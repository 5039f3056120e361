"""The paper's learned comparison, re-run on any battles so our numbers stand beside its own.

The APEX paper fits five scikit-learn classifiers of "A won" on the predicted popularity scores
of the two songs and reports out-of-fold AUC and F1 under stratified 10-fold CV (shuffled).
Features, per score k: the difference a_k - b_k and the ratio a_k / (b_k + 1e-9); then an
instrumental indicator and each difference times that indicator. The scores are
``score_streams``, ``score_likes`` and their mean (the paper's "combined popularity") when the
battles carry them, else every score they carry. Unlike our own models, these are not
symmetric in the two sides (ratios, class weights), as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from apexmusic.arena.battles import Battles
from apexmusic.arena.config import EvalConfig, PaperConfig
from apexmusic.errors import DataError
from apexmusic.tasks import POPULARITY_TASKS

POPULARITY_MEAN = "popularity_mean"
_RATIO_EPS = 1e-9
# Out-of-fold AUC and F1 ("A won") the paper reports on 1,259 decisive Music Arena battles, with
# APEX's predicted popularity scores; gradient boosting is XGBoost there.
PAPER_REPORTED: dict[str, dict[str, float]] = {
    "logistic_regression": {"auc": 0.600, "f1": 0.544, "auc_instrumental": 0.624, "auc_vocal": 0.562},
    "svm": {"auc": 0.614, "f1": 0.524, "auc_instrumental": 0.638, "auc_vocal": 0.572},
    "random_forest": {"auc": 0.558, "f1": 0.549, "auc_instrumental": 0.613, "auc_vocal": 0.391},
    "gradient_boosting": {"auc": 0.562, "f1": 0.513, "auc_instrumental": 0.606, "auc_vocal": 0.473},
    "adaboost": {"auc": 0.540, "f1": 0.255, "auc_instrumental": 0.584, "auc_vocal": 0.432},
}
PAPER_N_BATTLES = 1259


def paper_scores(battles: Battles) -> tuple[str, ...]:
    """The scores the comparison uses: the APEX popularity pair plus its mean, else every score."""
    if all(t in battles.scores_a for t in POPULARITY_TASKS):
        return (*POPULARITY_TASKS, POPULARITY_MEAN)
    return battles.score_names


def paper_features(battles: Battles, scores: tuple[str, ...]) -> dict:
    """Feature matrix ``x``, labels ``y`` (A won), ``instrumental`` per row, ``names``, and counts.

    Rows: decisive battles with every score finite; when some battle knows its prompt kind,
    only those that know it (the instrumental features need it).
    """
    sides = {name: _side_scores(battles, name) for name in scores}
    diffs = [a - b for a, b in sides.values()]
    ratios = [a / (b + _RATIO_EPS) for a, b in sides.values()]
    x = np.column_stack(diffs + ratios)
    names = [f"diff_{s}" for s in scores] + [f"ratio_{s}" for s in scores]
    keep = np.isin(battles.preference, ["A", "B"]) & np.isfinite(x).all(1)
    known = np.isfinite(battles.instrumental)
    interaction = bool((keep & known).any())
    n_unknown_type = int((keep & ~known).sum()) if interaction else 0
    if interaction:
        keep &= known
        instr = np.nan_to_num(battles.instrumental)
        x = np.column_stack([x, instr, np.column_stack(diffs) * instr[:, None]])
        names += ["is_instrumental"] + [f"diff_{s}_x_instrumental" for s in scores]
    return {
        "x": x[keep],
        "y": (battles.preference[keep] == "A").astype(int),
        "instrumental": battles.instrumental[keep],
        "names": names,
        "instrumental_interaction": interaction,
        "n_unknown_type": n_unknown_type,
    }


def _side_scores(battles: Battles, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == POPULARITY_MEAN:
        a = np.mean([battles.scores_a[t] for t in POPULARITY_TASKS], axis=0)
        b = np.mean([battles.scores_b[t] for t in POPULARITY_TASKS], axis=0)
        return a, b
    return battles.scores_a[name], battles.scores_b[name]


def evaluate_paper(battles: Battles, config: EvalConfig | None = None) -> dict:
    """``paper_protocol`` section: the five classifiers under shuffled stratified k-fold CV.

    Per model: ``auc`` and ``f1`` (out-of-fold, pooled over folds, as the paper), ``accuracy``,
    ``balanced_accuracy``, per-fold AUC (``auc_mean``, ``auc_sd``, ``auc_folds``) and, when
    prompt kinds are known, ``by_type`` AUC and F1. ``published`` holds the paper's figures.
    """
    from threadpoolctl import threadpool_limits

    config = config or EvalConfig()
    paper = config.paper or PaperConfig()
    scores = paper_scores(battles)
    out: dict = {"scores": list(scores), "published": PAPER_REPORTED, "published_n": PAPER_N_BATTLES}
    if not scores:
        return out | {"skipped": "the battles carry no scores"}
    data = paper_features(battles, scores)
    y = data["y"]
    folds = min(config.folds, int(min((y == 1).sum(), (y == 0).sum())))
    out |= {
        "features": data["names"],
        "instrumental_interaction": data["instrumental_interaction"],
        "n": len(y),
        "n_unknown_type": data["n_unknown_type"],
        "folds": folds,
        "seed": config.seed,
        "settings": asdict(paper),
    }
    if folds < 2:
        return out | {"skipped": "fewer than two decisive battles of each outcome"}
    with threadpool_limits(1):  # small problems; the machine's cores are shared
        out["models"] = {name: _model_entry(name, data, folds, paper, config.seed) for name in paper.models}
    return out


def _model_entry(name: str, data: dict, folds: int, paper: PaperConfig, seed: int) -> dict:
    try:
        return _cross_validate(name, data, folds, paper, seed)
    except DataError as exc:
        return {"skipped": str(exc)}


def _cross_validate(name: str, data: dict, folds: int, paper: PaperConfig, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold

    x, y = data["x"], data["y"]
    proba = np.empty(len(y))
    pred = np.empty(len(y), int)
    fold_auc = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        model = make_model(name, paper, seed).fit(x[train], y[train])
        proba[test] = model.predict_proba(x[test])[:, 1]
        pred[test] = model.predict(x[test])
        fold_auc.append(_auc(y[test], proba[test]))
    result = _scores(y, proba, pred) | {
        "auc_mean": float(np.mean(fold_auc)),
        "auc_sd": float(np.std(fold_auc, ddof=1)),
        "auc_folds": fold_auc,
    }
    kinds = {"instrumental": data["instrumental"] == 1.0, "vocal": data["instrumental"] == 0.0}
    by_type = {k: _scores(y[m], proba[m], pred[m]) for k, m in kinds.items() if m.any()}
    return result | ({"by_type": by_type} if by_type else {})


def _scores(y: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {
        "n": len(y),
        "auc": _auc(y, proba),
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y.tolist())) > 1 else None,
    }


def _auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, proba)) if len(set(y.tolist())) > 1 else None


def make_model(name: str, paper: PaperConfig, seed: int):
    """An unfitted classifier of the paper's protocol (``fit``, ``predict``, ``predict_proba``)."""
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic_regression":
        return LogisticRegression(C=paper.logistic_C, max_iter=1000, class_weight="balanced")
    if name == "svm":
        return TunedSVM(paper, seed)
    if name == "random_forest":
        return RandomForestClassifier(
            n_estimators=paper.n_estimators,
            max_depth=paper.max_depth,
            class_weight="balanced",
            random_state=seed,
        )
    if name == "gradient_boosting":
        return BalancedBoosting(paper, seed)
    if name == "adaboost":
        return AdaBoostClassifier(
            n_estimators=paper.n_estimators, learning_rate=paper.learning_rate, random_state=seed
        )
    raise KeyError(name)


class TunedSVM:
    """Standardised features → SVC with balanced class weights, C / kernel / gamma chosen by an
    inner stratified k-fold grid search on AUC (fewer folds when a class is smaller). Classes
    come from the SVC's decision function; probabilities from Platt scaling fitted on inner
    cross-validated decisions (what ``SVC(probability=True)`` did, the paper's setting, before
    scikit-learn deprecated it).
    """

    def __init__(self, paper: PaperConfig, seed: int):
        self.paper, self.seed = paper, seed

    def _pipeline(self):
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        svc = SVC(class_weight="balanced", random_state=self.seed)
        return Pipeline([("scaler", StandardScaler()), ("svc", svc)])

    def fit(self, x: np.ndarray, y: np.ndarray) -> TunedSVM:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import GridSearchCV

        grid = {
            "svc__C": list(self.paper.svm_C),
            "svc__kernel": list(self.paper.svm_kernels),
            "svc__gamma": list(self.paper.svm_gammas),
        }
        inner = min(self.paper.inner_folds, int(np.bincount(y, minlength=2).min()))
        if inner < 2:
            raise DataError("too few battles of one outcome for the SVM's inner cross-validation")
        search = GridSearchCV(self._pipeline(), grid, cv=inner, scoring="roc_auc")
        self.model = search.fit(x, y).best_estimator_
        self.best_params_ = search.best_params_
        best = self._pipeline().set_params(**search.best_params_)
        self.platt = CalibratedClassifierCV(best, method="sigmoid", cv=inner, ensemble=False)
        self.platt.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.platt.predict_proba(x)


class BalancedBoosting:
    """scikit-learn gradient boosting with the paper's XGBoost settings (trees, depth, learning
    rate), the positive class weighted by n_negative / n_positive like its ``scale_pos_weight``."""

    def __init__(self, paper: PaperConfig, seed: int):
        from sklearn.ensemble import GradientBoostingClassifier

        self.model = GradientBoostingClassifier(
            n_estimators=paper.n_estimators,
            learning_rate=paper.learning_rate,
            max_depth=paper.max_depth,
            random_state=seed,
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> BalancedBoosting:
        n_pos = max(int((y == 1).sum()), 1)
        weight = np.where(y == 1, (y == 0).sum() / n_pos, 1.0)
        self.model.fit(x, y, sample_weight=weight)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)
