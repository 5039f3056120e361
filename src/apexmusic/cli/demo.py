"""``apexmusic demo``: the offline end-to-end run on a simulated corpus, and its summary table."""

from __future__ import annotations

from apexmusic.cli.common import EXIT_OK, _default_from, _progress_bar


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="offline end-to-end run on a simulated corpus (generate, embed, train, evaluate, arena, report)",
        description="Generate a simulated AI-music corpus (cached), embed it, train the published best "
        "configuration and the popularity-only ablation, evaluate on held-out songs and held-out "
        "styles, run the arena evaluation and write DIR/model, DIR/summary.json and DIR/report.html. "
        "The data are simulated: the numbers are not predictions for real songs.",
    )
    from apexmusic.encoders import available_encoders

    p.add_argument("--out", default="apexmusic-demo", help="output folder")
    p.add_argument("--songs", type=int, default=600, help="corpus size (240 runs in minutes)")
    p.add_argument("--encoder", default="handcrafted", choices=available_encoders(), help="encoder")
    p.add_argument(
        "--weights", default=None, help="encoder weights: a folder, file or hub id (default: the encoder's)"
    )
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    _default_from(p.add_argument("--epochs", type=int, help="training epochs"), "apexmusic.demo:DemoConfig")
    p.add_argument(
        "--compare-encoders",
        nargs="?",
        const="musicnn-msd",
        default=None,
        metavar="ENC[,ENC]",
        help="also run the pipeline with these encoders (default musicnn-msd) and compare held-out metrics",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    p.add_argument(
        "--workers", type=int, default=None, help="processes rendering the corpus (default: by cores)"
    )
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    from pathlib import Path

    from apexmusic.demo import DemoConfig, run_demo

    compare = tuple(e for e in (args.compare_encoders or "").split(",") if e)
    extra = {"epochs": args.epochs} if args.epochs else {}
    config = DemoConfig(
        n_songs=args.songs,
        seed=args.seed,
        encoder=args.encoder,
        weights=args.weights,
        compare_encoders=compare,
        n_boot=args.bootstrap,
        workers=args.workers,
        **extra,
    )
    bars: dict = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            unit = "epoch" if stage.startswith("train") else "song"
            unit = unit if stage[:5] in ("train", "gener", "embed") else "step"
            bar = bars[stage] = _progress_bar(total, stage, unit=unit)
        bar.update(done - bar.n)

    try:
        summary = run_demo(args.out, config, on_progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(_demo_table(summary))
    out = Path(args.out)
    print(f"model: {out / 'model'}   summary: {out / 'summary.json'}   report: {out / 'report.html'}")
    print("(simulated data: these numbers describe the simulator, not real songs)")
    return EXIT_OK


def _demo_table(summary: dict) -> str:
    from apexmusic.tasks import ALL_TASKS, TASKS

    h = summary["headline"]
    fmt = lambda v: "  n/a" if v is None else f"{v:5.2f}"  # noqa: E731
    pop_only = h["test_popularity_spearman_popularity_only"]
    lines = [
        f"{summary['corpus']['n_songs']} simulated songs, encoder {summary['encoder']}, "
        f"{summary['timings_s']['total']:.0f} s",
        f"{'task':14s} {'test ρ':>7s} {'skill':>6s} {'held-out styles ρ':>18s} {'pop-only ρ':>11s}",
    ]
    for t in ALL_TASKS:
        lines.append(
            f"{TASKS[t].label:14s} {fmt(h['test_spearman'][t]):>7s} "
            f"{fmt(h['test_skill_vs_mean_predictor'][t]):>6s} "
            f"{fmt(h['heldout_style_spearman'][t]):>18s} {fmt(pop_only.get(t)) if t in pop_only else '':>11s}"
        )
    acc, ci = h["arena_rule_accuracy"], h["arena_rule_accuracy_ci"]
    for name in acc:
        lo, hi = ci.get(name) or (None, None)
        lines.append(f"arena rule {name:18s} accuracy {fmt(acc[name])} [{fmt(lo)}, {fmt(hi)}]")
    for name, models in h["arena_learned_auc"].items():
        lines.append(f"arena learned ({name}) AUC " + ", ".join(f"{m} {fmt(v)}" for m, v in models.items()))
    ceiling = h["arena_hidden_preference_accuracy"]
    lines.append(f"arena ceiling (hidden listener preference) accuracy {fmt(ceiling)}")
    lines += _demo_trust_lines(summary.get("trust"))
    comp = summary.get("encoder_comparison")
    if comp:
        for name, metrics in comp["metrics"].items():
            lines.append(f"encoder {name:14s} " + "  ".join(f"{k} {fmt(v)}" for k, v in metrics.items()))
    return "\n".join(lines)


def _demo_trust_lines(trust: dict | None) -> list[str]:
    if not trust:
        return []
    iv = trust["intervals"]
    lines = [_coverage_line(iv)]
    domain = trust.get("domain") or {}
    if domain.get("measured_test"):
        held = domain.get("heldout_styles_flagged")
        lines.append(
            f"domain alarm flags {100 * domain['measured_test']['rate']:.1f}% of test songs"
            + ("" if held is None else f", {100 * held:.0f}% of held-out-style songs")
        )
    return lines


def _coverage_line(iv: dict) -> str:
    """The intervals' measured coverage per task on every held-out song (test split, plus the
    out-of-fold training and validation songs of cross-conformal calibration)."""
    from apexmusic.trust import Intervals

    pooled = Intervals.from_dict(iv).heldout_coverage().values()
    held = [c for c, _ in pooled if c is not None]
    if not held:
        return "intervals: no labelled held-out songs to measure them on"
    line = (
        f"{100 * iv['level']:.0f}% intervals cover {100 * min(held):.1f}-{100 * max(held):.1f}% "
        f"of {max(n for _, n in pooled)} held-out songs per task"
    )
    test = [c for c in iv["coverage_test"].values() if c is not None]
    if iv.get("coverage_cv") and test:
        n_cv, n_test = max(iv["n_cv"].values()), max(iv["n_test"].values())
        line += (
            f" ({n_cv} out of fold; the {n_test} test songs alone "
            f"{100 * min(test):.0f}-{100 * max(test):.0f}%)"
        )
    return line


COMMANDS = (_add_demo,)
