"""The multi-task objective: masked per-task MSE combined as ``equal``, ``weighted`` or ``uncertainty``."""

from __future__ import annotations

import torch
from torch import nn

from apexmusic.tasks import POPULARITY_TASKS


class MultiTaskLoss(nn.Module):
    """Masked per-task MSE combined as ``equal``, ``weighted`` or ``uncertainty``.

    A task with no label in the batch contributes nothing (not even its ``log σ`` term).
    """

    def __init__(self, kind: str, tasks: tuple[str, ...], popularity_weight: float = 5.0):
        super().__init__()
        self.kind = kind
        weights = [popularity_weight if t in POPULARITY_TASKS else 1.0 for t in tasks]
        self.register_buffer("weights", torch.tensor(weights if kind == "weighted" else [1.0] * len(tasks)))
        if kind == "uncertainty":
            self.log_sigma = nn.Parameter(torch.zeros(len(tasks)))

    def per_task(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple:
        sq = torch.where(mask, (pred - target) ** 2, torch.zeros((), device=pred.device))
        count = mask.sum(0)
        return sq.sum(0) / count.clamp(min=1), count > 0

    def combine(self, mse: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if self.kind == "uncertainty":
            terms = 0.5 * torch.exp(-2.0 * self.log_sigma) * mse + self.log_sigma
        else:
            terms = self.weights * mse
        return torch.where(present, terms, torch.zeros((), device=mse.device)).sum()

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.per_task(pred, target, mask))

    def sigmas(self) -> list[float] | None:
        return torch.exp(self.log_sigma).tolist() if self.kind == "uncertainty" else None
