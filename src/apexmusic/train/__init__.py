"""Training and evaluation: :func:`train` fits a multi-task head on an embedding store's labelled
songs; :func:`evaluate_model` measures a saved one."""

from apexmusic.train.loop import (
    LOSSES,
    MODES,
    MultiTaskLoss,
    TrainConfig,
    TrainResult,
    dataset_split,
    epoch_order,
    evaluate_model,
    fit_standardisation,
    predict_dataset,
    save_training_outputs,
    train,
    training_precision,
)

__all__ = [
    "LOSSES",
    "MODES",
    "MultiTaskLoss",
    "TrainConfig",
    "TrainResult",
    "dataset_split",
    "epoch_order",
    "evaluate_model",
    "fit_standardisation",
    "predict_dataset",
    "save_training_outputs",
    "train",
    "training_precision",
]
