"""Zero-shot rules: "the side with the higher score wins", with bootstrap intervals.

Every score name is a rule, plus the z-scored sums of the APEX score groups (``COMPOSITES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apexmusic.arena.battles import Battles
from apexmusic.arena.common import bootstrap_weights, finite_or_none, pair_key
from apexmusic.arena.config import EvalConfig
from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS

# Composite rules: the sum of z-scored APEX scores of one group.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "apex_popularity_z": POPULARITY_TASKS,
    "apex_aesthetics_z": AESTHETIC_TASKS,
    "apex_all_z": ALL_TASKS,
}


def rule_scores(battles: Battles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every rule's per-side score: each score name, plus the z-scored APEX composites."""
    rules = {n: (battles.scores_a[n], battles.scores_b[n]) for n in battles.score_names}
    for composite, members in COMPOSITES.items():
        if all(m in battles.scores_a for m in members):
            za, zb = _zscore_sum(battles, members)
            rules[composite] = (za, zb)
    return rules


def _zscore_sum(battles: Battles, members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of scores z-scored over all songs (both sides pooled); nan if a member is missing."""
    za = np.zeros(len(battles))
    zb = np.zeros(len(battles))
    for name in members:
        a, b = battles.scores_a[name], battles.scores_b[name]
        pooled = np.concatenate([a, b])
        mean, sd = np.nanmean(pooled), np.nanstd(pooled)
        sd = sd if sd > 0 else 1.0
        za = za + (a - mean) / sd
        zb = zb + (b - mean) / sd
    return za, zb


def rule_metrics(
    preference: np.ndarray, diff: np.ndarray, n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0
) -> dict:
    """Metrics of the rule "A wins if diff = score_a - score_b > 0" on non-BOTH_BAD battles.

    ``accuracy`` counts a tied label or a tied prediction as 0.5; ``accuracy_decisive``,
    ``auc`` and ``f1`` (macro over the classes "A wins" / "B wins", a tied prediction split
    half-half) use the decisive battles only. Intervals: percentile bootstrap over battles.
    ``tie_closeness`` compares |diff| on decisive and tied battles (None without ties).
    """
    keep = np.isin(preference, ["A", "B", "TIE"]) & np.isfinite(diff)
    pref, diff = preference[keep], diff[keep]
    n, n_tie = len(pref), int((pref == "TIE").sum())
    out = {"n": n, "n_decisive": n - n_tie, "n_ties": n_tie}
    if n == 0:
        return out | {k: None for k in ("accuracy", "accuracy_decisive", "auc", "f1", "tie_closeness")}
    parts = _metric_parts(pref, diff)
    point = _metrics_from_weights(parts, np.ones((1, n)))
    boot = {k: [] for k in point}
    rng = np.random.default_rng(seed)
    for weights in bootstrap_weights(n, n_bootstrap, rng):
        for k, v in _metrics_from_weights(parts, weights).items():
            boot[k].append(v)
    alpha = (1 - ci) / 2
    for k, v in point.items():
        out[k] = finite_or_none(v[0])
        samples = np.concatenate(boot[k]) if boot[k] else np.array([])
        samples = samples[np.isfinite(samples)]
        if samples.size and out[k] is not None:
            lo, hi = np.quantile(samples, [alpha, 1 - alpha])
            out[f"{k}_ci"] = [float(lo), float(hi)]
        else:
            out[f"{k}_ci"] = None
    out["tie_closeness"] = _tie_closeness(pref, diff)
    return out


def _tie_closeness(pref: np.ndarray, diff: np.ndarray) -> float | None:
    """P(|diff| of a decisive battle > |diff| of a tied one), ties 0.5: above 0.5 when the
    scores see the battles listeners called a tie as closer contests."""
    from scipy.stats import mannwhitneyu

    tie = pref == "TIE"
    if not tie.any() or tie.all():
        return None
    u = mannwhitneyu(np.abs(diff[~tie]), np.abs(diff[tie])).statistic
    return float(u / ((~tie).sum() * tie.sum()))


@dataclass
class _MetricParts:
    decisive: np.ndarray  # 1.0 for A/B battles
    y: np.ndarray  # 1.0 where A won (decisive battles)
    pred_a: np.ndarray  # 1, 0 or 0.5 (tied scores)
    correct: np.ndarray  # 1, 0 or 0.5; label ties count 0.5
    group_onehot: object  # sparse [n, G]: distinct diff values in increasing order


def _metric_parts(pref: np.ndarray, diff: np.ndarray) -> _MetricParts:
    from scipy import sparse

    decisive = (pref != "TIE").astype(float)
    y = (pref == "A").astype(float)
    pred_a = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
    correct = np.where(decisive > 0, y * pred_a + (1 - y) * (1 - pred_a), 0.5)
    _, group = np.unique(diff, return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(diff)), (np.arange(len(diff)), group.ravel())))
    return _MetricParts(decisive, y, pred_a, correct, onehot)


def _metrics_from_weights(p: _MetricParts, w: np.ndarray) -> dict[str, np.ndarray]:
    """All rule metrics for each row of battle weights ``w`` [R, n] (bootstrap counts)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (w @ p.correct) / w.sum(1)
        wd = w * p.decisive
        accuracy_decisive = (wd @ p.correct) / wd.sum(1)
        f1_a = _f1(wd @ (p.y * p.pred_a), wd @ ((1 - p.y) * p.pred_a), wd @ (p.y * (1 - p.pred_a)))
        f1_b = _f1(
            wd @ ((1 - p.y) * (1 - p.pred_a)), wd @ (p.y * (1 - p.pred_a)), wd @ ((1 - p.y) * p.pred_a)
        )
        auc = _weighted_auc(wd * p.y, wd * (1 - p.y), p.group_onehot)
    return {"accuracy": accuracy, "accuracy_decisive": accuracy_decisive, "auc": auc, "f1": (f1_a + f1_b) / 2}


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def _weighted_auc(w_pos: np.ndarray, w_neg: np.ndarray, onehot) -> np.ndarray:
    """P(diff of a random A-win > diff of a random B-win), ties 0.5, with battle weights."""
    pos = np.asarray((onehot.T @ w_pos.T).T)  # [R, G] weight of A-wins per distinct diff
    neg = np.asarray((onehot.T @ w_neg.T).T)
    total_pos = pos.sum(1, keepdims=True)
    above = total_pos - np.cumsum(pos, axis=1)  # A-win weight at strictly larger diffs
    num = (neg * (above + 0.5 * pos)).sum(1)
    denom = total_pos[:, 0] * neg.sum(1)
    return np.where(denom > 0, num / np.where(denom > 0, denom, 1), np.nan)


def evaluate_rules(battles: Battles, config: EvalConfig | None = None) -> dict:
    """``rules`` section: per rule the overall metrics, ``by_type`` and ``by_pair`` splits."""
    config = config or EvalConfig()
    out = {}
    for name, (a, b) in rule_scores(battles).items():
        diff = a - b
        usable = np.isfinite(diff) & (battles.preference != "BOTH_BAD")
        entry = _rule_entry(battles.preference, diff, config)
        entry["n_missing_scores"] = int(((battles.preference != "BOTH_BAD") & ~usable).sum())
        entry["by_type"] = {
            kind: _rule_entry(battles.preference[mask], diff[mask], config)
            for kind, mask in battles.type_masks().items()
        }
        if config.by_pair:
            entry["by_pair"] = {
                pair: _rule_entry(battles.preference[mask], diff[mask], config)
                for pair, mask in _pair_masks(battles).items()
            }
        out[name] = entry
    return out


def _rule_entry(pref: np.ndarray, diff: np.ndarray, config: EvalConfig) -> dict:
    return rule_metrics(pref, diff, config.n_bootstrap, config.ci, config.seed)


def _pair_masks(battles: Battles) -> dict[str, np.ndarray]:
    keys = np.array([pair_key(a, b) for a, b in zip(battles.system_a, battles.system_b, strict=True)])
    return {k: keys == k for k in sorted(set(keys.tolist()))}


def plot_rule_accuracy(rules: dict, path: str | Path) -> None:
    """Accuracy with its bootstrap interval per rule, chance at 0.5."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    names = [n for n in rules if rules[n].get("accuracy") is not None]
    acc = np.array([rules[n]["accuracy"] for n in names])
    lo = np.array([(rules[n]["accuracy_ci"] or [rules[n]["accuracy"]] * 2)[0] for n in names])
    hi = np.array([(rules[n]["accuracy_ci"] or [rules[n]["accuracy"]] * 2)[1] for n in names])
    fig = Figure(figsize=(7, 0.45 * len(names) + 1.5))
    ax = fig.subplots()
    ypos = np.arange(len(names))
    ax.errorbar(acc, ypos, xerr=[acc - lo, hi - acc], fmt="o", capsize=3)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_yticks(ypos, [f"{n} (n={rules[n]['n']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy of 'higher score wins' (95% bootstrap interval)")
    ax.set_title("Arena: zero-shot rule accuracy")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
