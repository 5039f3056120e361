"""Bradley–Terry leaderboards: the official Music Arena method, and systems ranked by score.

``arena_leaderboard`` re-implements Music Arena's Arena Score (L2 logistic regression on ±1
system indicators, 400/ln 10 scale, mean 1000) with its bootstrap intervals, on the official
subsets (``leaderboard_battles``). ``predicted_leaderboard`` ranks the systems by their songs'
mean predicted score and correlates that ranking with the human board.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apexmusic.arena.battles import Battles
from apexmusic.arena.common import bootstrap_weights, jsonable
from apexmusic.arena.config import LeaderboardConfig
from apexmusic.arena.rules import rule_scores
from apexmusic.arena.subsets import leaderboard_battles
from apexmusic.errors import DataError

ARENA_SCALE, ARENA_BASE, ARENA_INIT = 400.0, 10.0, 1000.0


@dataclass
class LeaderboardRow:
    system: str
    score: float
    ci_low: float
    ci_high: float
    votes: int


def bradley_terry_scores(
    battles: Battles, C: float = 1.0, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Arena Scores: L2-penalised logistic regression without intercept on ±1 system indicators.

    Each non-BOTH_BAD battle is a sample with +1 for system A and -1 for system B, label
    "A won"; a tie is two half-weight samples (A won, B won). Scores are 400/ln 10 times the
    coefficients, mean-centred at 1000 over the systems in the data. ``weights`` multiplies
    each battle (bootstrap counts). Only systems with positive weight are fitted.
    """
    w = np.ones(len(battles)) if weights is None else np.asarray(weights, float)
    return _fit_pairs(_pair_design(battles), w, C)


@dataclass
class _PairDesign:
    """Battles reduced to distinct system pairs, each oriented with the alphabetically first
    system on the +1 side (the likelihood does not depend on the orientation)."""

    systems: list[str]
    pair_lo: np.ndarray  # per pair: index of the +1 system
    pair_hi: np.ndarray  # per pair: index of the -1 system
    pair_of: np.ndarray  # per battle: its pair
    lo_won: np.ndarray  # per battle: credit of the +1 system (1, 0, or 0.5 for a tie)
    valid: np.ndarray  # per battle: 1.0 unless BOTH_BAD


def _pair_design(battles: Battles) -> _PairDesign:
    valid = (battles.preference != "BOTH_BAD").astype(float)
    systems, codes = np.unique(np.concatenate([battles.system_a, battles.system_b]), return_inverse=True)
    ia, ib = codes[: len(battles)], codes[len(battles) :]
    flip = ia > ib
    lo, hi = np.where(flip, ib, ia), np.where(flip, ia, ib)
    a_won = np.where(battles.preference == "A", 1.0, np.where(battles.preference == "B", 0.0, 0.5))
    pairs, pair_of = np.unique(lo * len(systems) + hi, return_inverse=True)
    return _PairDesign(
        systems=[str(s) for s in systems],
        pair_lo=pairs // len(systems),
        pair_hi=pairs % len(systems),
        pair_of=pair_of.ravel(),
        lo_won=np.where(flip, 1 - a_won, a_won),
        valid=valid,
    )


def _fit_pairs(design: _PairDesign, weights: np.ndarray, C: float) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    w = weights * design.valid
    n_pairs = len(design.pair_lo)
    # Battles of one pair share their row x, so they are summed into a win weight and a loss
    # weight per pair (the likelihood is a weighted sum; this is exact, and fast).
    won = np.bincount(design.pair_of, weights=design.lo_won * w, minlength=n_pairs)
    lost = np.bincount(design.pair_of, weights=(1 - design.lo_won) * w, minlength=n_pairs)
    used = won + lost > 0
    present = np.unique(np.concatenate([design.pair_lo[used], design.pair_hi[used]]))
    if len(present) < 2:
        return {design.systems[i]: ARENA_INIT for i in present}
    column = np.full(len(design.systems), -1)
    column[present] = np.arange(len(present))
    rows = np.arange(used.sum())
    x = np.zeros((len(rows), len(present)))
    x[rows, column[design.pair_lo[used]]] = 1.0
    x[rows, column[design.pair_hi[used]]] = -1.0
    won, lost = won[used], lost[used]
    # Win part (label 1) and loss part (label 0); a tie adds half to each. Each part is also
    # mirrored (-x, 1-label) at half weight, which leaves the penalised likelihood unchanged
    # but guarantees both labels are present even when one system won everything.
    xs = np.concatenate([x, x, -x, -x])
    ys = np.concatenate([np.ones(len(x)), np.zeros(len(x)), np.zeros(len(x)), np.ones(len(x))])
    ws = np.concatenate([won, lost, won, lost]) * 0.5
    nz = ws > 0
    lr = LogisticRegression(C=C, fit_intercept=False, tol=1e-6, max_iter=10000)
    lr.fit(xs[nz], ys[nz], sample_weight=ws[nz])
    scores = ARENA_SCALE * lr.coef_[0] / math.log(ARENA_BASE)
    scores = scores - scores.mean() + ARENA_INIT
    return {design.systems[i]: float(v) for i, v in zip(present, scores, strict=True)}


def system_votes(battles: Battles) -> dict[str, int]:
    """Battles each system took part in, BOTH_BAD excluded (Music Arena's ``# Votes``)."""
    keep = battles.preference != "BOTH_BAD"
    names, counts = np.unique(
        np.concatenate([battles.system_a[keep], battles.system_b[keep]]), return_counts=True
    )
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def arena_leaderboard(
    battles: Battles,
    config: LeaderboardConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[LeaderboardRow]:
    """The official Music Arena leaderboard of the battles of ``config.subset``, best first.

    Intervals as Music Arena computes them: score ± 1.96 · sd of the scores over bootstrap
    resamples of the battles (a system absent from a resample keeps its full-data score).
    Scores are fitted on all systems; ``min_votes`` only removes rows from the listing.
    """
    config = config or LeaderboardConfig()
    battles = leaderboard_battles(battles, config)
    battles = battles.subset(battles.preference != "BOTH_BAD")
    scores = bradley_terry_scores(battles, config.C)
    if not scores:
        raise DataError("no battles with a preference other than BOTH_BAD")
    systems = list(scores)
    from threadpoolctl import threadpool_limits

    samples = np.empty((config.n_bootstrap, len(systems)))
    rng = np.random.default_rng(config.seed)
    design = _pair_design(battles)
    done = 0
    with threadpool_limits(1):
        for weights in bootstrap_weights(len(battles), config.n_bootstrap, rng):
            for w in weights:
                boot = _fit_pairs(design, w, config.C)
                samples[done] = [boot.get(s, scores[s]) for s in systems]
                done += 1
                if on_progress is not None:
                    on_progress(done, config.n_bootstrap)
    margin = 1.96 * samples.std(axis=0) if config.n_bootstrap > 1 else np.zeros(len(systems))
    votes = system_votes(battles)
    rows = [
        LeaderboardRow(s, scores[s], scores[s] - m, scores[s] + m, votes.get(s, 0))
        for s, m in zip(systems, margin, strict=True)
        if votes.get(s, 0) >= config.min_votes
    ]
    return sorted(rows, key=lambda r: (-r.score, r.system))


def write_leaderboard_csv(rows: list[LeaderboardRow], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["system", "score", "ci_low", "ci_high", "votes"])
        for r in rows:
            writer.writerow([r.system, f"{r.score:.2f}", f"{r.ci_low:.2f}", f"{r.ci_high:.2f}", r.votes])


def plot_leaderboard(rows: list[LeaderboardRow], path: str | Path, title: str = "Arena leaderboard") -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(7, 0.4 * len(rows) + 1.5))
    ax = fig.subplots()
    ypos = np.arange(len(rows))
    score = np.array([r.score for r in rows])
    err = [score - [r.ci_low for r in rows], [r.ci_high for r in rows] - score]
    ax.errorbar(score, ypos, xerr=err, fmt="o", capsize=3)
    ax.axvline(ARENA_INIT, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ypos, [f"{r.system} ({r.votes})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("Arena Score (Bradley–Terry, 400/ln10 scale, mean 1000; 95% CI)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def predicted_leaderboard(battles: Battles, human: list[LeaderboardRow]) -> dict:
    """Systems ranked by their songs' mean predicted score, per rule, against the human board.

    A song is one battle side; a song that appears in several battles (same song id, else same
    non-empty audio path) counts once. Correlations use the systems on the human board that have scores.
    Returns ``{"systems": {system: {"n_songs", rule: mean...}}, "correlations": {rule: ...}}``.
    """
    from scipy.stats import kendalltau, spearmanr

    human_score = {r.system: r.score for r in human}
    per_system: dict[str, dict] = {}
    correlations = {}
    for name, (a, b) in rule_scores(battles).items():
        means = _system_means(battles, a, b)
        for system, (mean, n_songs) in means.items():
            per_system.setdefault(system, {})[name] = mean
            per_system[system][f"n_songs_{name}"] = n_songs
        shared = [s for s in human_score if s in means]
        corr: dict = {"n_systems": len(shared)}
        if len(shared) >= 3:
            h = [human_score[s] for s in shared]
            p = [means[s][0] for s in shared]
            rho, rho_p = spearmanr(h, p)
            tau, tau_p = kendalltau(h, p)
            corr |= {"spearman": rho, "spearman_p": rho_p, "kendall": tau, "kendall_p": tau_p}
        correlations[name] = corr
    return {"systems": per_system, "correlations": jsonable(correlations)}


def _system_means(battles: Battles, a: np.ndarray, b: np.ndarray) -> dict[str, tuple[float, int]]:
    songs: dict[tuple[str, str], float] = {}
    for i in range(len(battles)):
        for system, song, score, side in (
            (battles.system_a[i], battles.song_a[i] or battles.audio_a[i], a[i], "a"),
            (battles.system_b[i], battles.song_b[i] or battles.audio_b[i], b[i], "b"),
        ):
            if np.isfinite(score):
                songs[(system, song or f"{battles.ids[i]}:{side}:{i}")] = float(score)
    grouped: dict[str, list[float]] = {}
    for (system, _), score in songs.items():
        grouped.setdefault(system, []).append(score)
    return {s: (float(np.mean(v)), len(v)) for s, v in grouped.items()}


def write_predicted_csv(pred: dict, human: list[LeaderboardRow], score_name: str, path: str | Path) -> None:
    """One row per system on the human board: predicted mean (``score_name``) and both ranks."""
    systems = pred["systems"]
    rows = [r for r in human if systems.get(r.system, {}).get(score_name) is not None]
    by_pred = sorted(rows, key=lambda r: -systems[r.system][score_name])
    pred_rank = {r.system: i + 1 for i, r in enumerate(by_pred)}
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["system", "predicted", "n_songs", "predicted_rank", "human_score", "human_rank"])
        for human_rank, r in enumerate(rows, start=1):
            s = systems[r.system]
            writer.writerow(
                [
                    r.system,
                    f"{s[score_name]:.6g}",
                    s[f"n_songs_{score_name}"],
                    pred_rank[r.system],
                    f"{r.score:.2f}",
                    human_rank,
                ]
            )
