"""The demo's settings: corpus size, encoders, the training recipe scaled to hundreds of songs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apexmusic.errors import ConfigError

ProgressFn = Callable[[str, int, int | None], None]  # stage, done, total


@dataclass
class DemoConfig:
    n_songs: int = 600
    seed: int = 0
    encoder: str = "handcrafted"
    weights: str | None = None
    compare_encoders: tuple[str, ...] = ()
    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 20
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    n_boot: int = 1000
    arena_folds: int = 10
    workers: int | None = None
    device: str = "cpu"
    train_seed: int = 42
    # Intervals from the out-of-fold residuals of this many fold models over the training and
    # validation songs (0: split-conformal on the validation split alone); see docs/trust.md.
    conformal_folds: int = 5

    def __post_init__(self) -> None:
        # 15 per style: enough for the trust minimums (apexmusic.trust.basis) on the split below.
        if self.n_songs < 120:
            raise ConfigError(f"the demo needs at least 120 songs (15 per style), got {self.n_songs}")
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0 or self.patience < 1:
            raise ConfigError("epochs >= 1, batch size >= 2, lr > 0 and patience >= 1 are required")
        if self.n_boot < 0 or self.arena_folds < 2 or (self.workers is not None and self.workers < 0):
            raise ConfigError("n_boot >= 0, arena_folds >= 2 and workers >= 0 are required")
        fractions = (self.val_fraction, self.test_fraction)
        if not (min(fractions) > 0 and sum(fractions) < 1):
            raise ConfigError("val_fraction and test_fraction must be positive and sum to less than 1")
        from apexmusic.encoders import available_encoders

        known = available_encoders()
        unknown = [e for e in (self.encoder, *self.compare_encoders) if e not in known]
        if unknown:
            raise ConfigError(f"unknown encoder {unknown[0]!r}; choose from {', '.join(known)}")
        if self.conformal_folds == 1 or self.conformal_folds < 0:
            raise ConfigError(f"conformal_folds must be 0 or at least 2, got {self.conformal_folds}")
