"""Trust statistics on the demo: interval coverage, and which domain distance separates real songs.

Builds (or reuses) the demo's simulated corpus and handcrafted-encoder store, trains the demo's
multi-task model with the demo's recipe and split on the five training styles, and measures:

* the 90 % split-conformal intervals (absolute residuals, as :mod:`apexmusic.trust` fits them)
  against a normalised variant (residual / (MC-dropout std + its median)): coverage and mean
  width per task on the test split, and on the three styles never seen in training;
* three domain distances on the head's input vectors: Ledoit–Wolf Mahalanobis (what
  :mod:`apexmusic.trust` uses), the mean distance to the 5 nearest training songs, and the RMS
  z-score (the predictor's ``novelty``, whose page threshold is 3). Each gets a threshold at the
  same 2 % false-alarm rate from the validation split alone and from the validation split plus
  cross-fitted training distances (as :mod:`apexmusic.trust` does). For each: the share of test
  songs flagged, the share of held-out-style songs flagged, how many of the seven real songs in
  ``../shared/data/real-audio`` are flagged, and the AUROC of test songs against real songs.

Run: ``flock /tmp/apexmusic-bench.lock python benchmarks/bench_trust.py [--out DIR] [--songs N]``
(``--out`` may be an existing ``apexmusic demo`` folder: its corpus and store are reused).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from apexmusic import demo
from apexmusic.demo import pipeline
from apexmusic.embed import EmbedConfig, embed_inputs
from apexmusic.sources import resolve_inputs
from apexmusic.store import EmbeddingStore
from apexmusic.synth import generate_corpus
from apexmusic.tasks import ALL_TASKS, TASKS
from apexmusic.trust import conformal_quantile, head_inputs

REAL_AUDIO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-audio"
LEVEL, FALSE_ALARM, MC_SAMPLES = 0.9, 0.02, 30


def _quiet(*_args) -> None:
    return None


def prepare(out: Path, n_songs: int, seed: int, epochs: int):
    config = demo.DemoConfig(n_songs=n_songs, seed=seed, epochs=epochs, n_boot=0)
    corpus = generate_corpus(out / "corpus", n_songs, seed, workers=config.workers)
    store_dir = pipeline._embed(out, corpus, config.encoder, None, config, _quiet, "")
    dataset, styles = pipeline._load_dataset(corpus, store_dir)
    ds_in = dataset.subset(np.flatnonzero(np.isin(styles, corpus.train_styles)))
    ds_held = dataset.subset(np.flatnonzero(np.isin(styles, corpus.heldout_styles)))
    result = pipeline._train(ds_in, config, "full", out / "logs" / "bench_trust.jsonl", _quiet, "train")
    return ds_in, ds_held, result


def real_layers(out: Path) -> tuple[list[str], np.ndarray]:
    store_dir = out / "embeddings" / "real-audio-handcrafted"
    songs = resolve_inputs([str(REAL_AUDIO)])
    embed_inputs(songs, store_dir, EmbedConfig(encoder="handcrafted", resume=True))
    data = EmbeddingStore.open(store_dir).load()
    return list(data.ids), data.layers


# ---- intervals -------------------------------------------------------------------------------


def interval_table(model, parts: dict) -> dict:
    """Per task: coverage and mean width of the absolute and the normalised variant."""
    pred = {k: _predict(model, layers, MC_SAMPLES) for k, (layers, _) in parts.items()}
    out = {}
    for i, task in enumerate(ALL_TASKS):
        spec = TASKS[task]
        y_val, (p_val, s_val) = parts["val"][1][:, i], (pred["val"][0][:, i], pred["val"][1][:, i])
        ok = np.isfinite(y_val)
        beta = float(np.median(s_val[ok]))
        q_abs = conformal_quantile(np.abs(y_val[ok] - p_val[ok]), LEVEL)
        q_norm = conformal_quantile(np.abs(y_val[ok] - p_val[ok]) / (s_val[ok] + beta), LEVEL)
        row = {"half_width_abs": q_abs}
        for part in ("test", "heldout_styles"):
            y, (p, s) = parts[part][1][:, i], (pred[part][0][:, i], pred[part][1][:, i])
            m = np.isfinite(y)
            for name, half in (("abs", q_abs), ("norm", q_norm * (s + beta))):
                lo = np.clip(p - half, spec.low, spec.high)
                hi = np.clip(p + half, spec.low, spec.high)
                row[f"{part}_{name}_coverage"] = float(((y[m] >= lo[m]) & (y[m] <= hi[m])).mean())
                row[f"{part}_{name}_width"] = float((hi[m] - lo[m]).mean())
        out[task] = row
    return out


def resplit_coverage(model, parts: dict, n_cal: int, draws: int = 500, seed: int = 0) -> dict:
    """The same model's validation and test songs pooled and re-split ``draws`` times into a
    calibration set of the validation split's size and an evaluation set of the rest: the
    spread of one demo run's per-task test coverage that comes from which songs were drawn."""
    layers = np.concatenate([parts["val"][0], parts["test"][0]])
    y = np.concatenate([parts["val"][1], parts["test"][1]])
    residual = np.abs(y - _predict(model, layers, 0)[0])
    rng = np.random.default_rng(seed)
    cov = np.empty((draws, len(ALL_TASKS)))
    for d in range(draws):
        order = rng.permutation(len(y))
        cal, ev = residual[order[:n_cal]], residual[order[n_cal:]]
        for i in range(len(ALL_TASKS)):
            q = conformal_quantile(cal[:, i], LEVEL)
            ok = np.isfinite(ev[:, i])
            cov[d, i] = (ev[ok, i] <= q).mean()
    in_band = (cov >= 0.85) & (cov <= 0.95)
    return {
        "draws": draws,
        "mean_coverage": dict(zip(ALL_TASKS, cov.mean(0).round(4).tolist(), strict=True)),
        "p05_p95": {
            t: np.quantile(cov[:, i], [0.05, 0.95]).round(3).tolist() for i, t in enumerate(ALL_TASKS)
        },
        "share_in_85_95_per_task": dict(zip(ALL_TASKS, in_band.mean(0).round(3).tolist(), strict=True)),
        "share_all_tasks_in_85_95": float(in_band.all(1).mean()),
    }


def _predict(model, layers: np.ndarray, mc: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[N, T]`` and their MC-dropout std (zeros without ``mc``)."""
    scores = model.predict_layers(layers, mc_samples=mc)
    point = np.stack([scores[t] for t in ALL_TASKS], 1).astype(np.float64)
    if not mc:
        return point, np.zeros_like(point)
    return point, np.stack([scores[f"{t}_std"] for t in ALL_TASKS], 1).astype(np.float64)


# ---- domain distances --------------------------------------------------------------------------


def _lw(train: np.ndarray):
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(train)
    return lambda x: np.sqrt(lw.mahalanobis(x) / x.shape[1])


def _knn(train: np.ndarray):
    from sklearn.neighbors import NearestNeighbors

    knn = NearestNeighbors(n_neighbors=5).fit(train)
    return lambda x: knn.kneighbors(x)[0].mean(1)


def _rms(train: np.ndarray):
    return lambda x: np.sqrt((x**2).mean(1))


METHODS = {"ledoit_wolf_mahalanobis": _lw, "knn5_mean_distance": _knn, "rms_z (novelty)": _rms}


def domain_table(feats: dict, folds: int = 5) -> dict:
    """Per method: thresholds from the validation split alone and from validation plus
    cross-fitted training distances, each at the same false-alarm rate, and what they flag."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for name, fit in METHODS.items():
        dist = fit(feats["train"])
        d = {k: dist(v) for k, v in feats.items() if k != "train"}
        parts = np.array_split(np.random.default_rng(0).permutation(len(feats["train"])), folds)
        oof = [fit(np.delete(feats["train"], f, axis=0))(feats["train"][f]) for f in parts]
        labels = np.r_[np.zeros(len(d["test"])), np.ones(len(d["real"]))]
        row = {
            "auroc_test_vs_real": float(roc_auc_score(labels, np.r_[d["test"], d["real"]])),
            "real_distances": [round(float(x), 3) for x in d["real"]],
        }
        for cal_name, cal in (("val", d["val"]), ("val+crossfit", np.r_[d["val"], *oof])):
            cal = np.sort(cal)
            threshold = float(cal[min(math.ceil((len(cal) + 1) * (1 - FALSE_ALARM)), len(cal)) - 1])
            row[cal_name] = {
                "threshold": round(threshold, 4),
                "test_flagged": round(float((d["test"] > threshold).mean()), 4),
                "heldout_styles_flagged": round(float((d["heldout_styles"] > threshold).mean()), 4),
                "real_flagged": f"{int((d['real'] > threshold).sum())}/{len(d['real'])}",
            }
        out[name] = row
    out["rms_z (novelty)"]["real_flagged_at_page_threshold_3"] = int((_rms(None)(feats["real"]) > 3).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/apexmusic-bench-trust")
    parser.add_argument("--songs", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=80)
    args = parser.parse_args()
    out = Path(args.out)
    ds_in, ds_held, result = prepare(out, args.songs, args.seed, args.epochs)
    model, trust, split = result.model, result.trust, result.split
    layers = {
        "train": ds_in.store.layers[split.train],
        "val": ds_in.store.layers[split.val],
        "test": ds_in.store.layers[split.test],
        "heldout_styles": ds_held.store.layers,
    }
    targets = {
        "val": ds_in.targets[split.val],
        "test": ds_in.targets[split.test],
        "heldout_styles": ds_held.targets,
    }
    real_ids, real = real_layers(out)
    real_flags = trust.domain.in_domain(trust.domain.distance(head_inputs(model, real)))
    feats = {k: head_inputs(model, v) for k, v in {**layers, "real": real}.items()}
    report = {
        "songs": args.songs,
        "split": split.sizes(),
        "heldout_style_songs": len(ds_held),
        "trust_as_fitted": trust.summary(),
        "intervals": interval_table(model, {k: (layers[k], targets[k]) for k in targets}),
        "intervals_resplit": resplit_coverage(
            model, {k: (layers[k], targets[k]) for k in ("val", "test")}, len(split.val)
        ),
        "domain": domain_table(feats),
        "real_ids": real_ids,
        "real_in_domain": {i: bool(f) for i, f in zip(real_ids, real_flags, strict=True)},
    }
    (out / "bench_trust.json").write_text(json.dumps(report, indent=2))
    print(
        json.dumps(
            {k: report[k] for k in ("split", "intervals", "intervals_resplit", "domain", "real_in_domain")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
