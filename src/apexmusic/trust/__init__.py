"""Scores a user can trust: each score's basis, calibrated intervals and a domain-shift alarm.

Fitted once at train time from the split (:func:`fit_trust`), stored in a model directory as
plain JSON plus safetensors arrays (:func:`save_trust` / :func:`load_trust`, file names in
:data:`TRUST_JSON` and :data:`TRUST_ARRAYS`), and applied per song (:meth:`Trust.annotate`):

* :mod:`.basis` — per task the labelled training / held-out songs and held-out metrics; tasks
  under the documented minimum are not served (their score is ``None``).
* :mod:`.intervals` — split-conformal ``lo``/``hi`` at a stated level, with the coverage
  measured on the test split.
* :mod:`.domain` — a shrinkage Mahalanobis distance to the training inputs and an ``in_domain``
  flag whose threshold holds a stated false-alarm rate on held-out in-domain songs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.errors import ModelLoadError
from apexmusic.trust.basis import (
    MIN_HELDOUT_SONGS,
    MIN_TRAIN_SONGS,
    Basis,
    TaskBasis,
    build_basis,
    check_split,
)
from apexmusic.trust.domain import (
    DEFAULT_FALSE_ALARM,
    MAX_FIT_ROWS,
    DomainModel,
    fit_domain,
    head_inputs,
    measure_false_alarms,
)
from apexmusic.trust.intervals import (
    DEFAULT_LEVEL,
    Intervals,
    conformal_quantile,
    fit_cross_conformal,
    fit_intervals,
    measure,
)

log = logging.getLogger(__name__)

TRUST_JSON = "trust.json"  # basis, interval half-widths, domain threshold and measurements
TRUST_ARRAYS = "trust.safetensors"  # domain_mean [D], domain_precision [D, D]
TRUST_FORMAT = 1


@dataclass
class Trust:
    basis: Basis
    intervals: Intervals
    domain: DomainModel | None
    model_id: str = ""  # the weights these statistics were fitted with (the domain uses their mix)

    def served(self) -> tuple[str, ...]:
        return self.basis.served()

    def annotate(self, scores: dict[str, float], features: np.ndarray | None = None) -> dict[str, Any]:
        """One song's trust fields: ``scores`` with not-served tasks as ``None``, ``intervals``
        ``{task: {"lo", "hi"}}`` for the served ones, and with the song's head input
        ``features`` ``[D]`` also ``in_domain`` and ``domain_distance``."""
        served = set(self.served())
        shown = {t: (float(v) if t in served else None) for t, v in scores.items()}
        out: dict[str, Any] = {
            "scores": shown,
            "intervals": self.intervals.apply({t: v for t, v in shown.items() if v is not None}),
            "level": self.intervals.level,
        }
        if features is not None and self.domain is not None:
            distance = float(self.domain.distance(features)[0])
            flag = self.domain.in_domain(np.array([distance]))
            out["domain_distance"] = distance
            out["in_domain"] = None if flag is None else bool(flag[0])
        return out

    def row_fields(self, scores: dict[str, float], features: np.ndarray | None = None) -> dict[str, Any]:
        """:meth:`annotate` flattened for an output row: ``<task>`` (``None`` when not served),
        ``<task>_lo``, ``<task>_hi``, ``interval_level``, ``in_domain``, ``domain_distance``."""
        a = self.annotate(scores, features)
        row: dict[str, Any] = {}
        for task, value in a["scores"].items():
            bounds = a["intervals"].get(task, {})
            row[task] = value
            row[f"{task}_lo"], row[f"{task}_hi"] = bounds.get("lo"), bounds.get("hi")
        row["interval_level"] = a["level"]
        for key in ("in_domain", "domain_distance"):
            if key in a:
                row[key] = a[key]
        return row

    def summary(self) -> dict[str, Any]:
        """The plain-JSON part (what :func:`save_trust` writes to :data:`TRUST_JSON`)."""
        return {
            "format": TRUST_FORMAT,
            "model_id": self.model_id,
            "basis": self.basis.to_dict(),
            "intervals": self.intervals.to_dict(),
            "domain": None if self.domain is None else self.domain.metadata(),
        }


def save_trust(trust: Trust, directory: str | Path) -> Path:
    """Write :data:`TRUST_JSON` and (with domain statistics) :data:`TRUST_ARRAYS`, atomically and
    with the mode of the model's other files."""
    from safetensors.numpy import save

    from apexmusic.model.directory import write_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if trust.domain is not None:
        arrays = {
            "domain_mean": np.ascontiguousarray(trust.domain.mean, np.float64),
            "domain_precision": np.ascontiguousarray(trust.domain.precision, np.float64),
        }
        write_atomic(directory / TRUST_ARRAYS, save(arrays))
    write_atomic(directory / TRUST_JSON, json.dumps(trust.summary(), indent=2).encode("utf-8"))
    return directory


def load_trust(directory: str | Path, model_id: str | None = None) -> Trust | None:
    """Read what :func:`save_trust` wrote; ``None`` for a directory without it (older models).
    With ``model_id``, statistics recorded for other weights are refused."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    path = directory / TRUST_JSON
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format", 0) > TRUST_FORMAT:
            raise ModelLoadError(f"{path} has trust format {d.get('format')}, newer than this code")
        basis, intervals = Basis.from_dict(d["basis"]), Intervals.from_dict(d["intervals"])
        domain = None
        if d.get("domain") is not None:
            arrays = load_file(str(directory / TRUST_ARRAYS))
            domain = DomainModel.from_parts(d["domain"], arrays["domain_mean"], arrays["domain_precision"])
    except ModelLoadError:
        raise
    except (ValueError, KeyError, TypeError, OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read the trust statistics in {directory}: {exc}") from exc
    trust = Trust(basis, intervals, domain, str(d.get("model_id") or ""))
    if model_id and trust.model_id and trust.model_id != model_id:
        raise ModelLoadError(
            f"{path} was fitted for model {trust.model_id}, not the weights here ({model_id})"
        )
    for task, why in basis.reasons().items():
        log.warning("%s: %s is %s: %s", directory, task, basis.status(task).replace("_", " "), why)
    return trust


def fit_trust(
    model: Any,
    dataset: Any,
    split: Any,
    metrics: dict[str, dict[str, Any]] | None = None,
    allow_small: bool = False,
    level: float = DEFAULT_LEVEL,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM,
) -> Trust:
    """Basis, intervals (validation split) and domain statistics (train → validation) of a
    trained :class:`~apexmusic.model.ScoringModel` on ``dataset`` (its tasks, in model order)
    and ``split``; ``metrics`` are the held-out (test) metrics per task."""
    from apexmusic.train import predict_dataset

    parts = {"train": split.train, "val": split.val, "test": split.test}
    y = {k: dataset.targets[idx] for k, idx in parts.items()}
    tasks = tuple(model.tasks)
    counts = {k: {t: int(np.isfinite(v[:, i]).sum()) for i, t in enumerate(tasks)} for k, v in y.items()}
    basis = build_basis(tasks, counts, split.sizes(), metrics, allow_small)

    pred = {k: predict_dataset(model, dataset.subset(idx)) for k, idx in parts.items() if k != "train"}
    intervals = fit_intervals(tasks, y["val"], pred["val"], level)
    measure(intervals, tasks, y["test"], pred["test"])

    if len(parts["train"]) > MAX_FIT_ROWS:  # the covariance fit's sample, drawn before the inputs
        parts["train"] = np.sort(np.random.default_rng(0).choice(parts["train"], MAX_FIT_ROWS, replace=False))
    feats = {k: head_inputs(model, dataset.store.layers, idx) for k, idx in parts.items()}
    domain = None
    if len(feats["train"]) >= 2:
        domain = fit_domain(feats["train"], feats["val"], false_alarm_rate)
        measure_false_alarms(domain, feats["test"])
    return Trust(basis, intervals, domain)


__all__ = [
    "DEFAULT_FALSE_ALARM",
    "DEFAULT_LEVEL",
    "MIN_HELDOUT_SONGS",
    "MIN_TRAIN_SONGS",
    "TRUST_ARRAYS",
    "TRUST_JSON",
    "Basis",
    "DomainModel",
    "Intervals",
    "TaskBasis",
    "Trust",
    "check_split",
    "conformal_quantile",
    "fit_cross_conformal",
    "fit_domain",
    "fit_intervals",
    "fit_trust",
    "head_inputs",
    "load_trust",
    "measure",
    "measure_false_alarms",
    "save_trust",
]
