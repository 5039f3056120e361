"""Pairwise human-preference evaluation (Music Arena battles) and Bradley–Terry leaderboards.

Pipeline stage: battles (+ predicted scores) in, metrics and leaderboards out. One module a job:

- ``battles``: read, normalise and de-duplicate battles (``load_battles``);
- ``scores``: join a scores file of ``apexmusic predict`` onto the battle sides;
- ``rules``: zero-shot rules ("higher score wins") with bootstrap intervals;
- ``learned``: our side-symmetric models on score differences, k-fold CV;
- ``paper``: the paper's five classifiers, its protocol, beside its published figures;
- ``evaluate``: the whole ``arena eval`` report;
- ``subsets`` and ``leaderboard``: the official Music Arena boards (Bradley–Terry) and a
  predicted board;
- ``comparator``: ``PreferenceComparator``, shipped with a model as ``comparator.json``;
- ``config``: the settings, which validate themselves; ``common``: shared helpers.

Our own models are symmetric in the two sides of a battle: relabelling A as B (and the
preference with it) leaves every rule metric, every learned metric and every leaderboard
unchanged. The A/B position effect of the arena interface is deliberately not modelled.
"""

from apexmusic.arena.battles import PREFERENCES, Battles, battles_from_records, load_battles
from apexmusic.arena.common import pair_key, write_json
from apexmusic.arena.comparator import PreferenceComparator
from apexmusic.arena.config import SUBSETS, EvalConfig, LeaderboardConfig, PaperConfig
from apexmusic.arena.evaluate import evaluate_arena
from apexmusic.arena.leaderboard import (
    ARENA_BASE,
    ARENA_INIT,
    ARENA_SCALE,
    LeaderboardRow,
    arena_leaderboard,
    bradley_terry_scores,
    plot_leaderboard,
    predicted_leaderboard,
    system_votes,
    write_leaderboard_csv,
    write_predicted_csv,
)
from apexmusic.arena.learned import FEATURE_SETS, evaluate_learned, stratified_folds
from apexmusic.arena.paper import PAPER_REPORTED, evaluate_paper, paper_features
from apexmusic.arena.rules import COMPOSITES, evaluate_rules, plot_rule_accuracy, rule_metrics, rule_scores
from apexmusic.arena.scores import JOIN_RULE, JoinReport, ScoreTable, attach_scores, load_scores
from apexmusic.arena.subsets import LYRICS_CAPABLE, leaderboard_battles

__all__ = [
    "ARENA_BASE",
    "ARENA_INIT",
    "ARENA_SCALE",
    "COMPOSITES",
    "FEATURE_SETS",
    "JOIN_RULE",
    "LYRICS_CAPABLE",
    "PAPER_REPORTED",
    "PREFERENCES",
    "SUBSETS",
    "Battles",
    "EvalConfig",
    "JoinReport",
    "LeaderboardConfig",
    "LeaderboardRow",
    "PaperConfig",
    "PreferenceComparator",
    "ScoreTable",
    "arena_leaderboard",
    "attach_scores",
    "battles_from_records",
    "bradley_terry_scores",
    "evaluate_arena",
    "evaluate_learned",
    "evaluate_paper",
    "evaluate_rules",
    "leaderboard_battles",
    "load_battles",
    "load_scores",
    "pair_key",
    "paper_features",
    "plot_leaderboard",
    "plot_rule_accuracy",
    "predicted_leaderboard",
    "rule_metrics",
    "rule_scores",
    "stratified_folds",
    "system_votes",
    "write_json",
    "write_leaderboard_csv",
    "write_predicted_csv",
]
