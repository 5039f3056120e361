"""``apexmusic arena eval`` and ``arena leaderboard``: human-preference battles."""

from __future__ import annotations

import sys

from apexmusic.cli.common import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, _progress_bar


def _add_arena(sub):
    from apexmusic.choices import ARENA_SUBSETS

    p = sub.add_parser(
        "arena",
        help="pairwise human-preference evaluation and Bradley–Terry leaderboards",
        description="Pairwise human-preference evaluation (Music Arena battles) and Bradley–Terry "
        "leaderboards.",
    )
    arena_sub = p.add_subparsers(dest="arena_command", metavar="ARENA_COMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])

    e = arena_sub.add_parser(
        "eval",
        help="how well predicted scores tell which song of a battle listeners preferred",
        description="Zero-shot rules ('higher score wins') with bootstrap intervals and learned "
        "models with k-fold CV; writes DIR/arena_metrics.json and DIR/arena_accuracy.png.",
    )
    e.add_argument("--battles", required=True, metavar="FILE", help="battles: csv/json/jsonl/parquet/folder")
    e.add_argument("--scores", metavar="FILE", help="scores file of `apexmusic predict`, joined on audio ids")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for the metrics and the plot")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    e.add_argument("--folds", type=int, default=10, help="cross-validation folds of the learned models")
    e.add_argument("--seed", type=int, default=0, help="seed of the resamples and folds")
    e.add_argument("--no-pairs", action="store_true", help="skip the per-system-pair breakdown")
    e.add_argument(
        "--no-paper", action="store_true", help="skip the paper's five classifiers (paper_protocol)"
    )
    e.set_defaults(handler=_cmd_arena_eval)

    lb = arena_sub.add_parser(
        "leaderboard",
        help="Music Arena's Bradley–Terry leaderboard (and a predicted one when there are scores)",
        description="Writes DIR/leaderboard.csv and DIR/leaderboard.png; when the battles carry scores "
        "(--scores or <name>_a/<name>_b columns) also DIR/predicted_leaderboard.csv and "
        "DIR/leaderboard.json (Spearman / Kendall of each score's system ranking vs the human board).",
    )
    lb.add_argument("--battles", required=True, metavar="FILE", help="battles: csv/json/jsonl/parquet/folder")
    lb.add_argument("--out", required=True, metavar="DIR", help="folder for the leaderboards and the plot")
    lb.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    lb.add_argument("--min-votes", type=int, default=30, help="list only systems with this many votes")
    lb.add_argument(
        "--subset",
        choices=ARENA_SUBSETS,
        default="all",
        help="an official board: battles by is_instrumental, then Music Arena's lyrics-capability rule",
    )
    lb.add_argument(
        "--no-lyrics-filter",
        action="store_true",
        help="with --subset: select by is_instrumental only, without the lyrics-capability rule",
    )
    lb.add_argument("--scores", metavar="FILE", help="scores file for the predicted leaderboard")
    lb.add_argument("--score-name", metavar="NAME", help="score that ranks the predicted leaderboard")
    lb.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    lb.set_defaults(handler=_cmd_arena_leaderboard)


def _load_arena_battles(args):
    from apexmusic import arena

    battles = arena.load_battles(args.battles)
    if not len(battles) and battles.invalid:
        from apexmusic.errors import DataError

        first = battles.invalid[0]
        raise DataError(
            f"{args.battles} holds no usable battle ({len(battles.invalid)} rows; "
            f"row {first['row']}: {first['reason']})"
        )
    join = None
    if args.scores:
        battles, join = arena.attach_scores(battles, arena.load_scores(args.scores))
    for bad in battles.invalid[:5]:
        print(f"skipped battle row {bad['row']} ({bad['id']}): {bad['reason']}", file=sys.stderr)
    if join is not None and join.n_unmatched:
        print(
            f"{join.n_unmatched} of {join.n_battles} battles have a side without scores "
            f"(e.g. {join.unmatched[0]['audio']!r})",
            file=sys.stderr,
        )
    return battles, join


def _cmd_arena_eval(args) -> int:
    from apexmusic import arena
    from apexmusic.paths import output_dir

    config = arena.EvalConfig(
        n_bootstrap=args.bootstrap,
        folds=args.folds,
        seed=args.seed,
        by_pair=not args.no_pairs,
        paper=None if args.no_paper else arena.PaperConfig(),
    )
    out = output_dir(args.out)
    battles, join = _load_arena_battles(args)
    metrics = arena.evaluate_arena(battles, config, join)
    arena.write_json(metrics, out / "arena_metrics.json")
    arena.plot_rule_accuracy(metrics["rules"], out / "arena_accuracy.png")
    counts = metrics["data"]
    print(
        f"{counts['n_battles']} battles ({counts['n_decisive']} decisive, {counts['n_tie']} ties, "
        f"{counts['n_both_bad']} both bad excluded)"
    )
    for name, r in metrics["rules"].items():
        if r["accuracy"] is None:
            print(f"  rule {name:24s} no battles with scores")
            continue
        lo, hi = r["accuracy_ci"] or (float("nan"), float("nan"))
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        print(f"  rule {name:24s} accuracy {r['accuracy']:.4f} [{lo:.3f}, {hi:.3f}]  auc {auc}  n {r['n']}")
    for set_name, res in metrics["learned"].items():
        for model in ("logistic_regression", "gradient_boosting"):
            if model in res:
                m = res[model]
                print(
                    f"  {model:20s} {set_name:22s} accuracy {m['accuracy_mean']:.3f}±{m['accuracy_sd']:.3f}"
                    f"  auc {m['auc_mean']:.3f}±{m['auc_sd']:.3f}"
                )
    paper = metrics.get("paper_protocol", {})
    for model, m in paper.get("models", {}).items():
        if "skipped" in m:
            print(f"  paper protocol {model:20s} skipped: {m['skipped']}")
            continue
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        print(
            f"  paper protocol {model:20s} auc {auc}  f1 {m['f1']:.3f}"
            f"  (paper: auc {paper['published'][model]['auc']:.3f}, f1 {paper['published'][model]['f1']:.3f})"
        )
    print(f"wrote {out / 'arena_metrics.json'}")
    bad = len(battles.invalid) + (join.n_unmatched if join else 0)
    return EXIT_PARTIAL if bad else EXIT_OK


def _cmd_arena_leaderboard(args) -> int:
    import numpy as np

    from apexmusic import arena
    from apexmusic.errors import ConfigError
    from apexmusic.paths import output_dir

    config = arena.LeaderboardConfig(
        n_bootstrap=args.bootstrap,
        min_votes=args.min_votes,
        seed=args.seed,
        subset=args.subset,
        lyrics_filter=not args.no_lyrics_filter,
    )
    out = output_dir(args.out)
    battles, join = _load_arena_battles(args)
    battles = arena.leaderboard_battles(battles, config)
    with _progress_bar(args.bootstrap, "bootstrap", unit="resample") as bar:
        rows = arena.arena_leaderboard(battles, config, on_progress=lambda done, total: bar.update(1))
    arena.write_leaderboard_csv(rows, out / "leaderboard.csv")
    if rows:
        arena.plot_leaderboard(rows, out / "leaderboard.png", title=f"Arena leaderboard ({args.subset})")
    for rank, r in enumerate(rows, start=1):
        ci = f"[{r.ci_low:7.1f}, {r.ci_high:7.1f}]"
        print(f"{rank:3d}  {r.system:28s} {r.score:7.1f}  {ci}  votes {r.votes}")
    listed = {r.system for r in rows}
    hidden = sorted(
        ((n, v) for n, v in arena.system_votes(battles).items() if n not in listed),
        key=lambda nv: (-nv[1], nv[0]),
    )
    if hidden:
        names = ", ".join(f"{n} ({v} votes)" for n, v in hidden)
        print(f"not listed (fewer than --min-votes {args.min_votes}): {names}")
    if battles.score_names:  # from --scores or <name>_a/<name>_b columns of the battles
        pred = arena.predicted_leaderboard(battles, rows)
        names = list(pred["correlations"])
        name = args.score_name or ("apex_all_z" if "apex_all_z" in names else names[0])
        if name not in names:
            raise ConfigError(f"--score-name {name!r} not among the scores {names}")
        arena.write_predicted_csv(pred, rows, name, out / "predicted_leaderboard.csv")
        arena.write_json({"score_name": name, **pred}, out / "leaderboard.json")
        for n, c in pred["correlations"].items():
            rho, tau = c.get("spearman"), c.get("kendall")
            fmt = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:+.3f}"  # noqa: E731
            print(f"  predicted by {n:24s} spearman {fmt(rho)}  kendall {fmt(tau)}  n={c['n_systems']}")
    print(f"wrote {out / 'leaderboard.csv'}")
    bad = len(battles.invalid) + (join.n_unmatched if join else 0)
    return EXIT_PARTIAL if bad else EXIT_OK


COMMANDS = (_add_arena,)
