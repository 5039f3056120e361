"""Settings of the arena evaluation and leaderboard; each checks itself when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from apexmusic.choices import ARENA_SUBSETS
from apexmusic.errors import ConfigError

SUBSETS = ARENA_SUBSETS
PAPER_MODELS = ("logistic_regression", "svm", "random_forest", "gradient_boosting", "adaboost")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class PaperConfig:
    """The paper's learned comparison (scikit-learn models on score differences and ratios).

    Defaults are the settings of the published experiment; smaller values make it cheaper.
    Gradient boosting is scikit-learn's ``GradientBoostingClassifier`` with the settings the
    paper gave XGBoost.
    """

    n_estimators: int = 300  # random forest, gradient boosting, AdaBoost
    max_depth: int = 4  # random forest, gradient boosting
    learning_rate: float = 0.05  # gradient boosting, AdaBoost
    logistic_C: float = 0.1
    svm_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    svm_kernels: tuple[str, ...] = ("linear", "rbf")
    svm_gammas: tuple[str, ...] = ("scale", "auto")
    inner_folds: int = 5  # the SVM's grid search
    models: tuple[str, ...] = PAPER_MODELS

    def __post_init__(self) -> None:
        unknown = set(self.models) - set(PAPER_MODELS)
        _require(bool(self.models) and not unknown, f"models must be among {', '.join(PAPER_MODELS)}")
        _require(self.n_estimators >= 1, f"n_estimators must be >= 1 (got {self.n_estimators})")
        _require(self.max_depth >= 1, f"max_depth must be >= 1 (got {self.max_depth})")
        _require(self.learning_rate > 0, f"learning_rate must be > 0 (got {self.learning_rate})")
        _require(self.logistic_C > 0, f"logistic_C must be > 0 (got {self.logistic_C})")
        _require(bool(self.svm_C) and all(c > 0 for c in self.svm_C), "svm_C must be positive values")
        _require(
            bool(self.svm_kernels) and set(self.svm_kernels) <= {"linear", "rbf", "poly", "sigmoid"},
            f"svm_kernels must be among linear, rbf, poly, sigmoid (got {self.svm_kernels})",
        )
        _require(
            bool(self.svm_gammas) and set(self.svm_gammas) <= {"scale", "auto"},
            f"svm_gammas must be among scale, auto (got {self.svm_gammas})",
        )
        _require(self.inner_folds >= 2, f"inner_folds must be >= 2 (got {self.inner_folds})")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of ``evaluate_arena``. ``paper=None`` skips the paper's learned comparison."""

    n_bootstrap: int = 1000
    ci: float = 0.95
    folds: int = 10
    seed: int = 0
    gb_max_iter: int = 100  # boosting rounds of our gradient-boosted model
    by_pair: bool = True
    paper: PaperConfig | None = field(default_factory=PaperConfig)

    def __post_init__(self) -> None:
        _require(self.n_bootstrap >= 0, f"n_bootstrap must be >= 0 (got {self.n_bootstrap})")
        _require(0 < self.ci < 1, f"ci must be between 0 and 1 (got {self.ci})")
        _require(self.folds >= 2, f"folds must be >= 2 (got {self.folds})")
        _require(self.gb_max_iter >= 1, f"gb_max_iter must be >= 1 (got {self.gb_max_iter})")


@dataclass(frozen=True)
class LeaderboardConfig:
    """Music Arena's settings: C = 1, 1000 bootstrap resamples, 30 votes to be listed.

    ``subset`` picks the battles as the official boards do: ``instrumental`` / ``vocal`` keep
    the battles with that ``is_instrumental`` value (all battles when no battle knows it) and,
    with ``lyrics_filter``, apply the lyrics-capability rule of Music Arena's
    ``generate_leaderboard``. ``lyrics_systems`` replaces the registry's list of systems that
    can sing lyrics.
    """

    n_bootstrap: int = 1000
    min_votes: int = 30
    C: float = 1.0
    seed: int = 0
    subset: str = "all"
    lyrics_filter: bool = True
    lyrics_systems: frozenset[str] | None = None

    def __post_init__(self) -> None:
        _require(self.n_bootstrap >= 0, f"n_bootstrap must be >= 0 (got {self.n_bootstrap})")
        _require(self.min_votes >= 0, f"min_votes must be >= 0 (got {self.min_votes})")
        _require(self.C > 0, f"C must be > 0 (got {self.C})")
        _require(self.subset in SUBSETS, f"subset must be one of {', '.join(SUBSETS)} (got {self.subset!r})")
