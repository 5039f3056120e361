"""Evaluation of a saved model on every labelled song of a dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from apexmusic import threads
from apexmusic.data import Dataset
from apexmusic.metrics import Evaluation, evaluate_predictions
from apexmusic.model import ScoringModel, score_store_data


def predict_dataset(model: ScoringModel, dataset: Dataset, batch_size: int = 8192) -> np.ndarray:
    """Song-level predictions ``[N, len(model.tasks)]`` under the model's pooling rule."""
    return score_store_data(model, dataset.store, batch_size=batch_size)


def evaluate_model(
    model: ScoringModel, dataset: Dataset, n_boot: int = 1000, seed: int = 0, n_threads: int | None = None
) -> Evaluation:
    """Metrics of ``model`` on every labelled song of ``dataset`` (its tasks only); single-threaded
    for small work unless ``n_threads`` says otherwise (:mod:`apexmusic.threads`)."""
    dataset = replace(dataset, tasks=model.tasks)
    n_params = sum(p.numel() for p in model.net.parameters())
    rows = sum(len(s) for s in dataset.store.segments) if model.pooling == "segment" else len(dataset)
    count = threads.inference_threads(
        threads.step_flops(n_params, rows or len(dataset), backward=False), n_threads
    )
    with threads.limit_threads(count):
        pred = predict_dataset(model, dataset)
        return evaluate_predictions(
            dataset.labels.ids,
            dataset.targets,
            pred,
            model.tasks,
            dataset.labels.platform,
            n_boot=n_boot,
            seed=seed,
        )
