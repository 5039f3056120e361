"""The offline end-to-end demo: simulated corpus → embeddings → models → evaluation → arena → report.

Every stage is the real code path (``synth``, ``embed``, ``data``, ``train``, ``metrics``,
``arena``, ``report``); only the songs are simulated. ``run_demo`` returns the summary that it
also writes to ``OUT/summary.json``; the CLI prints it. Layout of ``OUT``::

    corpus/                       the simulated corpus (cached by its settings)
    embeddings/<encoder>-n<N>-s<seed>/   embedding store (resumed, not recomputed)
    model/                        the multi-task model (+ comparator.json, eval/)
    model-popularity/             the popularity-only ablation
    logs/train_<name>.jsonl       per-epoch training logs
    predictions.csv               held-out predictions (test songs and held-out styles)
    arena/arena_metrics.json      arena evaluation with and without aesthetic scores
    compare/<encoder>/            the same pipeline per extra encoder (``compare_encoders``)
    summary.json, report.html

Training recipe: the published best condition (song mode, full task, uncertainty loss, two
shared layers) with the published head; only batch size, learning rate and epochs are scaled
to a corpus of hundreds of songs instead of 211,000 (batch 512 would be one step per epoch).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from apexmusic.arena import write_json
from apexmusic.demo.config import DemoConfig, ProgressFn
from apexmusic.demo.pipeline import _run_pipeline
from apexmusic.demo.summary import _compare
from apexmusic.paths import output_dir


def run_demo(
    out_dir: str | Path, config: DemoConfig | None = None, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir``; return (and write) the summary."""
    config = config or DemoConfig()
    out = Path(out_dir)
    output_dir(out)
    progress = on_progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    from apexmusic.synth import generate_corpus

    t0 = time.perf_counter()
    corpus = generate_corpus(
        out / "corpus",
        config.n_songs,
        config.seed,
        on_progress=lambda d, t: progress("generate", d, t),
        workers=config.workers,
    )
    timings["generate"] = time.perf_counter() - t0

    main = _run_pipeline(out, out, corpus, config, config.encoder, config.weights, progress, timings)
    comparison = {}
    for name in config.compare_encoders:
        if name == config.encoder:
            continue
        sub_timings: dict[str, float] = {}
        other = _run_pipeline(out / "compare" / name, out, corpus, config, name, None, progress, sub_timings)
        comparison[name] = {"headline": other.headline, "timings_s": sub_timings}
    timings["total"] = time.perf_counter() - started

    summary = {
        "what": "apexmusic offline demo on a SIMULATED corpus; numbers describe the simulator, "
        "not real songs",
        "config": asdict(config),
        "corpus": {
            "dir": str(corpus.root),
            "n_songs": corpus.n_songs,
            "seed": corpus.seed,
            "train_styles": list(corpus.train_styles),
            "heldout_styles": list(corpus.heldout_styles),
            "cached": corpus.cached,
            "label_stats": corpus.stats,
        },
        "encoder": config.encoder,
        "headline": main.headline,
        **main.details,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    if comparison:
        summary["encoder_comparison"] = _compare(
            config.encoder, main.headline, comparison, out, config.n_boot
        )
    write_json(summary, out / "summary.json")
    t0 = time.perf_counter()
    progress("report", 0, 1)
    from apexmusic.report import write_report

    write_report(out, out / "report.html")
    progress("report", 1, 1)
    summary["timings_s"]["report"] = round(time.perf_counter() - t0, 2)
    write_json(summary, out / "summary.json")
    return summary


__all__ = ["DemoConfig", "run_demo"]
