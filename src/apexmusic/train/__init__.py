"""Training and evaluation: :func:`train` fits a multi-task head on an embedding store's labelled
songs (``loop``) under a :class:`TrainConfig` (``config``) and a :class:`MultiTaskLoss` (``loss``),
on inputs prepared once (``tensors``); :func:`evaluate_model` measures a saved one (``evaluate``)."""

from apexmusic.train.config import LOSSES, MODES, TrainConfig, training_precision
from apexmusic.train.evaluate import evaluate_model, predict_dataset
from apexmusic.train.loop import TrainResult, dataset_split, epoch_order, save_training_outputs, train
from apexmusic.train.loss import MultiTaskLoss
from apexmusic.train.tensors import fit_standardisation

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
