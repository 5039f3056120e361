"""The training recipe as a typed config that validates itself, and the precision it resolves to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from apexmusic import devices
from apexmusic.choices import LOSSES, MIXINGS, TRAIN_PRECISIONS
from apexmusic.errors import ConfigError
from apexmusic.model import POOLINGS
from apexmusic.splits import SplitConfig
from apexmusic.tasks import tasks_for

if TYPE_CHECKING:
    import torch


MODES = POOLINGS  # the training mode is the model's inference pooling rule


@dataclass
class TrainConfig:
    """apexmusic's training recipe (``--recipe ours``); every field is a CLI flag.

    :mod:`apexmusic.recipes` names other sets of values (``paper``: the official script's).
    """

    task: str = "full"  # full | popularity
    loss: str = "uncertainty"  # equal | weighted | uncertainty (the best published)
    shared: int = 2  # 2 | 3 shared trunk layers
    mode: str = "song"  # song | segment
    mixing: str = "learned"  # reference | mean | learned
    epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 20
    seed: int = 42
    split: str = "random"  # random | creator | time | given (the labels' split column)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    device: str = "auto"
    # auto | fp32 | bf16 | fp16. bf16 autocasts the matmuls: on CPUs with AVX512-BF16/AMX it is
    # what brings 50 epochs on 211k songs under 5 minutes, with held-out metrics equal to fp32
    # within 0.004 Spearman (benchmarks/bench_train.py); `auto` picks it where the hardware has
    # it. fp16 autocasts to float16 with GradScaler loss scaling, as the official script does on
    # CUDA (on CPU, torch's CPU autocast: its op lists differ from CUDA's).
    precision: str = "auto"
    standardize: bool = True
    popularity_weight: float = 5.0  # the `weighted` loss: popularity : aesthetics = 5 : 1
    n_boot: int = 1000  # bootstrap resamples for the held-out intervals
    allow_small: bool = False  # train on splits below the trust minimums (apexmusic.trust.basis)
    simulated: bool = False  # the training songs are simulated (the demo): recorded as provenance
    threads: int | None = None  # CPU threads; None: apexmusic.threads picks (and re-checks)
    recipe: str = "ours"  # the apexmusic.recipes name these values came from (recorded)
    decay_sigmas: bool = False  # weight decay on the uncertainty loss's log σ too (the official script)
    # set: the objective on the whole validation split | batches: the mean of per-batch losses in
    # order, rows as trained (the official script's early-stopping criterion)
    val_loss: str = "set"
    # generator: one stream seeded with `seed` | sampler: each epoch torch.randperm seeded with the
    # epoch number (the official DistributedSampler on one GPU)
    shuffle: str = "generator"

    def __post_init__(self) -> None:
        tasks_for(self.task)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"precision must be one of {TRAIN_PRECISIONS}, not {self.precision!r}")
        if self.mixing not in MIXINGS:
            raise ConfigError(f"mixing must be one of {MIXINGS}, not {self.mixing!r}")
        if self.shared not in (2, 3):
            raise ConfigError(f"shared must be 2 or 3, not {self.shared!r}")
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0 or self.patience < 1:
            raise ConfigError("epochs >= 1, batch size >= 2, lr > 0 and patience >= 1 are required")
        if not (
            self.weight_decay >= 0 and self.grad_clip > 0 and self.popularity_weight > 0 and self.n_boot >= 0
        ):
            raise ConfigError(
                "weight decay >= 0, grad clip > 0, popularity weight > 0 and n_boot >= 0 are required"
            )
        if self.val_loss not in ("set", "batches") or self.shuffle not in ("generator", "sampler"):
            raise ConfigError("val_loss must be set or batches, shuffle generator or sampler")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, not {self.threads}")
        SplitConfig(self.split, self.val_fraction, self.test_fraction, self.seed)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tasks_for(self.task)

    def split_config(self) -> SplitConfig:
        return SplitConfig(self.split, self.val_fraction, self.test_fraction, self.seed)


def training_precision(precision: str, device: torch.device) -> str:
    """Resolve ``auto``: bf16 where the hardware runs it natively, else fp32 (fp16, with loss
    scaling, only when asked for)."""
    if precision == "fp16":
        return "fp16"
    resolved = devices.resolve_precision(precision, str(device))
    return "bf16" if resolved == "bf16" else "fp32"
