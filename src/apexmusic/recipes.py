"""Named training recipes: plain sets of :class:`apexmusic.train.TrainConfig` values.

``ours`` is TrainConfig's defaults. ``paper`` is what the official training script
(github.com/AMAAI-Lab/apex, ``train.py``) does, field by field; docs/training.md says how the
two differ and why ours is the default. The CLI reads its ``--recipe`` choices from here, and
flags given next to a recipe override its values.

This module holds data only, so that building the command line stays free of torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apexmusic.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "ours",
            "apexmusic's default: learned layer mix, standardised inputs, no weight decay on log σ, "
            "bf16 where native, masked losses, full-split validation loss",
        ),
        Recipe(
            "paper",
            "the official train.py: reference mix, no standardisation, weight decay on all parameters, "
            "fp16 autocast + GradScaler, the given split, batch-mean validation loss for early stopping",
            {
                "mixing": "reference",
                "standardize": False,
                "decay_sigmas": True,
                "precision": "fp16",
                "split": "given",
                "val_loss": "batches",
                "shuffle": "sampler",
                "epochs": 50,
                "batch_size": 512,
                "lr": 1e-4,
                "weight_decay": 1e-4,
                "grad_clip": 1.0,
                "patience": 20,
                "seed": 42,
                "popularity_weight": 5.0,
            },
        ),
    )
}


def recipe_values(name: str, **overrides: Any) -> dict[str, Any]:
    """TrainConfig keyword arguments: recipe ``name``'s values, then ``overrides`` (None skipped)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    return {**RECIPES[name].values, **given}


__all__ = ["RECIPES", "Recipe", "recipe_values"]
