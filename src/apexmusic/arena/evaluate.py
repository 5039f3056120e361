"""The whole ``apexmusic arena eval`` report: data counts, rules, our models, the paper's models."""

from __future__ import annotations

from dataclasses import asdict

from apexmusic.arena.battles import Battles
from apexmusic.arena.config import EvalConfig
from apexmusic.arena.learned import evaluate_learned
from apexmusic.arena.paper import evaluate_paper
from apexmusic.arena.rules import evaluate_rules
from apexmusic.arena.scores import JoinReport
from apexmusic.errors import DataError


def evaluate_arena(
    battles: Battles, config: EvalConfig | None = None, join: JoinReport | None = None
) -> dict:
    """Everything ``apexmusic arena eval`` writes to ``arena_metrics.json``.

    ``paper_protocol`` (the paper's five classifiers) is there unless ``config.paper`` is None.
    """
    config = config or EvalConfig()
    if not battles.score_names:
        raise DataError(
            "the battles carry no scores: give per-side columns <name>_a/<name>_b or a --scores file"
        )
    data = battles.report()
    if join is not None:
        data["scores_join"] = join.to_dict()
    settings = asdict(config)
    settings.pop("paper")
    out = {
        "data": data,
        "config": settings,
        "rules": evaluate_rules(battles, config),
        "learned": evaluate_learned(battles, config),
    }
    if config.paper is not None:
        out["paper_protocol"] = evaluate_paper(battles, config)
    return out
