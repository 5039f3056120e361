"""Interval coverage of the demo model over several seeds and two split shares.

On the demo's cached corpus and handcrafted-encoder store, trains the demo's multi-task model on
the five training styles once per seed (the seed draws the split and initialises the network)
for each split share, and records what ``apexmusic.trust`` stores: the per-task 90 % coverage on
the test split, and how many of the seven tasks land in 85–95 %. Also, per run, the mean
coverage over 300 re-draws of which held-out songs calibrate and which measure (what one run's
figure scatters around).

Run: ``flock /tmp/apexmusic-bench.lock python benchmarks/bench_coverage.py --out DIR``
(``DIR`` an ``apexmusic demo`` folder, or empty: the corpus is generated and embedded first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from bench_trust import _quiet, resplit_coverage

from apexmusic import demo
from apexmusic.synth import generate_corpus
from apexmusic.tasks import ALL_TASKS

SHARES = {"old 0.15/0.20": (0.15, 0.2), "demo 0.25/0.30": (0.25, 0.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/apexmusic-bench-coverage")
    parser.add_argument("--songs", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    args = parser.parse_args()
    out = Path(args.out)
    config = demo.DemoConfig(n_songs=args.songs, n_boot=0)
    corpus = generate_corpus(out / "corpus", args.songs, config.seed, workers=config.workers)
    store_dir = demo._embed(out, corpus, config.encoder, None, config, _quiet, "")
    dataset, styles = demo._load_dataset(corpus, store_dir)
    ds_in = dataset.subset(np.flatnonzero(np.isin(styles, corpus.train_styles)))
    runs = []
    for name, (val, test) in SHARES.items():
        for seed in args.seeds:
            cfg = dataclasses.replace(config, val_fraction=val, test_fraction=test, train_seed=seed)
            result = demo._train(ds_in, cfg, "full", out / "logs" / "bench_coverage.jsonl", _quiet, "train")
            iv = result.trust.intervals
            parts = {
                k: (ds_in.store.layers[idx], ds_in.targets[idx])
                for k, idx in (("val", result.split.val), ("test", result.split.test))
            }
            redraw = resplit_coverage(result.model, parts, len(result.split.val), draws=300, seed=seed)
            cov = [iv.coverage[t] for t in ALL_TASKS]
            runs.append(
                {
                    "shares": name,
                    "seed": seed,
                    "split": result.split.sizes(),
                    "coverage_test": dict(zip(ALL_TASKS, np.round(cov, 3).tolist(), strict=True)),
                    "tasks_in_85_95": int(sum(0.85 <= c <= 0.95 for c in cov)),
                    "min_max": [round(min(cov), 3), round(max(cov), 3)],
                    "redraw_mean": redraw["mean_coverage"],
                }
            )
            print(
                json.dumps({k: runs[-1][k] for k in ("shares", "seed", "split", "tasks_in_85_95", "min_max")})
            )
    (out / "bench_coverage.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
