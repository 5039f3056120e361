"""Interval coverage of the demo model over several seeds: split- against cross-conformal.

On the demo's cached corpus and handcrafted-encoder store, trains the demo's multi-task model on
the five training styles once per seed (the seed draws the split, the folds and initialises the
networks) and records, per task at 90 %: the split-conformal intervals' coverage on the test
split (what training fits), and the demo's cross-conformal intervals' coverage on the same test
songs, out of fold, and on all held-out songs pooled (test + out of fold: what the demo
reports); and how many of the seven tasks land in 85–95 % for each.

Run: ``flock /tmp/apexmusic-bench.lock python benchmarks/bench_coverage.py --out DIR``
(``DIR`` an ``apexmusic demo`` folder, or empty: the corpus is generated and embedded first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from bench_trust import _quiet

from apexmusic import demo
from apexmusic.demo import pipeline
from apexmusic.synth import generate_corpus
from apexmusic.tasks import ALL_TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/apexmusic-bench-coverage")
    parser.add_argument("--songs", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    args = parser.parse_args()
    out = Path(args.out)
    config = demo.DemoConfig(n_songs=args.songs, n_boot=0)
    corpus = generate_corpus(out / "corpus", args.songs, config.seed, workers=config.workers)
    store_dir = pipeline._embed(out, corpus, config.encoder, None, config, _quiet, "")
    dataset, styles = pipeline._load_dataset(corpus, store_dir)
    ds_in = dataset.subset(np.flatnonzero(np.isin(styles, corpus.train_styles)))
    runs = []
    for seed in args.seeds:
        cfg = dataclasses.replace(config, train_seed=seed)
        result = pipeline._train(ds_in, cfg, "full", out / "logs" / "bench_coverage.jsonl", _quiet, "train")
        check = result.model.predict_layers(ds_in.store.layers[result.split.test])
        assert np.allclose(np.stack([check[t] for t in ALL_TASKS], 1), result.test_predictions, atol=1e-3)
        split_iv = result.trust.intervals
        pipeline._cross_conformal(ds_in, cfg, result, out / "logs" / "bench_coverage.jsonl", _quiet, "")
        cross_iv = result.trust.intervals
        run = {"seed": seed, "split": result.split.sizes()}
        for name, values in (
            ("split_test", split_iv.coverage),
            ("cross_test", cross_iv.coverage),
            ("cross_cv", cross_iv.cv_coverage),
            ("cross_heldout", {t: c for t, (c, _) in cross_iv.heldout_coverage().items()}),
        ):
            cov = [values[t] for t in ALL_TASKS]
            run[name] = dict(zip(ALL_TASKS, np.round(cov, 3).tolist(), strict=True))
            run[f"{name}_in_85_95"] = int(sum(0.85 <= c <= 0.95 for c in cov))
            run[f"{name}_min_max"] = [round(min(cov), 3), round(max(cov), 3)]
        run["n_cv"] = cross_iv.n_cv["coherence"]
        run["n_heldout"] = cross_iv.heldout_coverage()["coherence"][1]
        run["half_width_split_vs_cross"] = {
            t: [round(split_iv.half_width[t], 3), round(cross_iv.half_width[t], 3)] for t in ALL_TASKS
        }
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if "in_85" in k or "min_max" in k or k == "seed"}))
    (out / "bench_coverage.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
