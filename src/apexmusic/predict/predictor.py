"""The Predictor: a loaded model plus the encoder that made its training data, scoring songs
in memory (paths, ``Song``s or ``(audio, sample_rate)`` arrays in, typed results out).

Song scores follow the model's pooling rule (:func:`apexmusic.model.score_songs`): a
segment-mode model scores every segment and takes the weighted mean, a song-mode model scores
the song vector. Every prediction also carries each segment's own scores (the timeline).

Uncertainty is the standard deviation over ``mc_samples`` stochastic forward passes with the
model's dropout layers active (MC dropout, Gal & Ghahramani 2016), pooled like the scores, in
one seeded call per song, so a song always gets the same numbers whatever else is in its
batch. The reported scores themselves are the deterministic (dropout off) outputs, so they do
not change with ``mc_samples``. Because the outputs are bounded (sigmoid), inputs extremely
far from the training data can saturate every pass and shrink the spread again; ``novelty``
(the RMS z-score of the input embedding under the model's own training standardisation, about
1 in range) flags those independently.

With trust statistics in the model folder (:mod:`apexmusic.trust`, loaded once) every
prediction also carries: ``None`` for tasks the model is not trained for, a calibrated
``lo``/``hi`` per served score at ``interval_level``, the domain alarm (``in_domain``,
``domain_distance``), and the model's provenance (``simulated_training_data``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from apexmusic.errors import ApexError, ConfigError
from apexmusic.jsonio import jsonable
from apexmusic.model.provenance import is_simulated
from apexmusic.predict.results import Comparison, Prediction, SegmentScore, compare_scores
from apexmusic.sources import Song
from apexmusic.store import EmbeddingSpec, Failure, SongEmbedding
from apexmusic.tasks import TASKS
from apexmusic.threads import torch_threads

if TYPE_CHECKING:
    from apexmusic.trust import Trust

log = logging.getLogger(__name__)

DEFAULT_MC_SAMPLES = 16
N_TOP_TAGS = 3
_SMALL_BATCH = 512  # rows; below this the head runs single-threaded (see _head_threads)

ArrayInput = tuple[np.ndarray, int]
PredictInput = str | os.PathLike | Song | ArrayInput


class Predictor:
    """A loaded model plus the encoder that made its training data; scores songs in memory."""

    def __init__(
        self,
        model: Any,
        embedder: Any,
        mc_samples: int = DEFAULT_MC_SAMPLES,
        comparator: Any | None = None,
        max_seconds: float | None = None,
    ):
        import threading

        self.model = model
        self.embedder = embedder
        self.mc_samples = int(mc_samples)
        self.comparator = comparator
        self.max_seconds = max_seconds
        self.card_markdown = ""  # the model folder's README.md (from_pretrained reads it)
        self.trust: Trust | None = None  # basis, intervals, domain alarm (from_pretrained reads it)
        self.tasks: tuple[str, ...] = tuple(model.tasks)
        self.model_id: str = str(model.model_id)
        # MC dropout switches the model's train/eval mode; one forward pass at a time.
        self._model_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        weights: str | None = None,
        device: str = "auto",
        mc_samples: int = DEFAULT_MC_SAMPLES,
        max_seconds: float | None = None,
        precision: str = "auto",
    ) -> Predictor:
        """Load ``model_dir`` (a folder, or a hub id such as ``amaai-lab/apex``) and the encoder
        named by its ``encoder_spec``.

        ``weights`` overrides the encoder weights recorded in the spec (for example a local
        MERT folder when the spec names a hub id). ``max_seconds`` rejects longer songs.
        ``precision`` is the encoder's (``auto``: the fastest the device runs natively, never
        int8 for a reference-compat model; ``fp32``: the published pipeline's arithmetic).
        """
        from apexmusic.model import ModelDir

        folder = ModelDir.resolve(model_dir)
        model = folder.load(device=device)
        embedder = build_embedder(
            model, weights=weights, device=device, max_seconds=max_seconds, precision=precision
        )
        predictor = cls(
            model, embedder, mc_samples=mc_samples, comparator=folder.comparator(), max_seconds=max_seconds
        )
        predictor.card_markdown = folder.card_markdown()
        predictor.trust = folder.trust(model_id=model.model_id)
        return predictor

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the model's training data came from (see :mod:`apexmusic.model.provenance`)."""
        return dict(getattr(self.model, "provenance", {}) or {})

    def with_max_seconds(self, max_seconds: float | None) -> Predictor:
        """A view of this predictor (same model, encoder and lock) with another length limit."""
        import copy
        import dataclasses

        view = copy.copy(self)
        view.max_seconds = max_seconds
        view.embedder = copy.copy(self.embedder)
        view.embedder.segment_config = dataclasses.replace(
            self.embedder.segment_config, max_seconds=max_seconds
        )
        return view

    # ---- public API ------------------------------------------------------------------------
    def predict(self, items: PredictInput | Sequence[PredictInput], batch_size: int = 8) -> list[Prediction]:
        """Score paths, ``Song``s or ``(audio, sample_rate)`` arrays; raises on the first failure."""
        if _is_single(items):
            items = [items]  # type: ignore[list-item]
        results = []
        for result in self.iter_predict(items, batch_size=batch_size):  # type: ignore[arg-type]
            if isinstance(result, Failure):
                raise _error_from_failure(result)
            results.append(result)
        return results

    def iter_predict(
        self,
        items: Iterable[PredictInput],
        batch_size: int = 8,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Prediction | Failure]:
        """Yield a Prediction or a Failure per input; errors never stop the run.

        Embeddings are collected ``batch_size`` songs at a time so the model runs once per
        batch (song vectors and all their segments together).
        """
        pending: list[SongEmbedding] = []
        for index, item in enumerate(items):
            song = _as_song(item, index)
            try:
                pending.append(self.embed(item, song))
            except Exception as exc:  # noqa: BLE001 - one bad song never stops a batch
                # the Failure is the report (the caller prints or logs it); the log keeps detail
                if isinstance(exc, ApexError):
                    log.info("%s: %s", song.path or song.id, exc)
                    kind, message = exc.kind, str(exc)
                else:  # an unexpected decoder/encoder crash: the traceback at debug level
                    log.debug("%s: unexpected error", song.path or song.id, exc_info=True)
                    kind, message = "error", f"{type(exc).__name__}: {exc}"
                yield Failure(song.id, song.path, kind, message)
                if on_progress:
                    on_progress(1)
                continue
            if len(pending) >= batch_size:
                yield from self.score_embeddings(pending)
                if on_progress:
                    on_progress(len(pending))
                pending = []
        if pending:
            yield from self.score_embeddings(pending)
            if on_progress:
                on_progress(len(pending))

    def compare(self, a: PredictInput, b: PredictInput) -> Comparison:
        pa, pb = self.predict([a, b])
        prob, method = compare_scores(pa.scores, pb.scores, self.comparator)
        return Comparison(prob, method, pa, pb)

    def served(self) -> tuple[str, ...]:
        """Tasks whose scores are shown (all of them for a model without trust statistics)."""
        return self.trust.served() if self.trust is not None else self.tasks

    def card(self) -> dict[str, Any]:
        """The model card, its provenance and trust statistics, and what this predictor runs
        (served at ``GET /v1/model``); no server paths."""
        from apexmusic.model.provenance import describe, strip_paths

        spec = self.model.encoder_spec.to_dict() if self.model.encoder_spec else {}
        if spec.get("weights"):
            spec["weights"] = strip_paths(spec["weights"])
        card = jsonable(getattr(self.model, "card", {}))
        if isinstance(card.get("data"), dict) and "labels" in card["data"]:
            card["data"]["labels"] = strip_paths(card["data"]["labels"])
        return {
            "model_id": self.model_id,
            "provenance": {**self.provenance, "notice": describe(self.provenance)},
            "tasks": list(self.tasks),
            "served_tasks": list(self.served()),
            "trust": jsonable(self.trust.summary()) if self.trust is not None else None,
            "ranges": {t: [TASKS[t].low, TASKS[t].high] for t in self.tasks},
            "encoder_spec": jsonable(spec),
            "pooling": self.model.pooling,
            "mc_samples": self.mc_samples,
            "comparator": "arena" if self.comparator is not None else "fallback",
            "card": card,
            "card_markdown": strip_paths(self.card_markdown),
        }

    # ---- steps -----------------------------------------------------------------------------
    def embed(self, item: PredictInput, song: Song) -> SongEmbedding:
        if isinstance(item, tuple):
            audio, sr = item
            emb = self.embedder.embed_array(np.asarray(audio), int(sr), id=song.id, path=song.path)
        else:
            emb = self.embedder.embed_path(song)
        check_duration(emb.duration_s, self.max_seconds)
        return emb

    def score_embeddings(self, songs: Sequence[SongEmbedding]) -> list[Prediction]:
        """Song scores (under the model's pooling rule), MC-dropout uncertainty and per-segment
        timelines for embedded songs."""
        from apexmusic.model import mc_song_spread, score_songs

        song_layers = np.stack([s.layers for s in songs]).astype(np.float32, copy=False)
        segments = [s.segments for s in songs]
        weights = [s.segment_weights for s in songs]
        n_rows = len(songs) + sum(len(x) for x in segments)
        with self._model_lock, _head_threads(n_rows):
            novelty = self._novelty(song_layers)
            scored = score_songs(self.model, song_layers, segments, weights, with_segments=True)
            spread = mc_song_spread(self.model, song_layers, segments, weights, self.mc_samples)
            features = self._domain_features(song_layers)
        served = set(self.served())
        simulated = is_simulated(self.provenance)
        results = []
        for i, song in enumerate(songs):
            raw = {t: float(scored.songs[i, k]) for k, t in enumerate(self.tasks)}
            std = {t: float(spread[i, k]) for k, t in enumerate(self.tasks)}
            pred = Prediction(
                id=song.id,
                path=song.path,
                scores={t: (v if t in served else None) for t, v in raw.items()},
                uncertainty={t: (v if t in served else None) for t, v in std.items()},
                timeline=self._timeline(song, scored.segments[i], served),  # type: ignore[index]
                duration_s=float(song.duration_s),
                model_id=self.model_id,
                tags=self._top_tags(song),
                novelty=None if novelty is None else round(float(novelty[i]), 4),
                simulated_training_data=simulated,
            )
            if self.trust is not None:
                trust = self.trust.annotate(raw, None if features is None else features[i])
                pred.intervals = trust["intervals"]
                pred.interval_level = trust["level"]
                pred.in_domain = trust.get("in_domain")
                pred.domain_distance = trust.get("domain_distance")
            results.append(pred)
        return results

    def _domain_features(self, layers: np.ndarray) -> np.ndarray | None:
        """The songs' head inputs, for the domain alarm (None without domain statistics)."""
        if self.trust is None or self.trust.domain is None:
            return None
        from apexmusic.trust import head_inputs

        return head_inputs(self.model, layers)

    def _novelty(self, layers: np.ndarray) -> np.ndarray | None:
        """RMS of the standardised model input: ~1 for songs like the training data."""
        import torch

        net = getattr(self.model, "net", None)
        if net is None or not getattr(self.model.config, "standardize", False):
            return None
        with torch.no_grad():
            x = net.prepare(torch.from_numpy(layers).to(self.model.device))
        return x.reshape(len(layers), -1).pow(2).mean(1).sqrt().cpu().numpy()

    def _timeline(self, song: SongEmbedding, seg_scores: np.ndarray, served: set[str]) -> list[SegmentScore]:
        seconds = float(self.embedder.segment_config.segment_seconds)
        hop = float(self.embedder.segment_config.hop_seconds or seconds)
        timeline = []
        for j in range(song.n_segments):
            start = j * hop
            end = min(start + seconds, float(song.duration_s))
            timeline.append(
                SegmentScore(
                    round(start, 3),
                    round(max(end, start), 3),
                    {t: (float(seg_scores[j, k]) if t in served else None) for k, t in enumerate(self.tasks)},
                )
            )
        return timeline

    def _top_tags(self, song: SongEmbedding) -> list[tuple[str, float]] | None:
        probs = song.extras.get("tags") if song.extras else None
        labels = _tag_labels(self.embedder.encoder)
        if probs is None or labels is None:
            return None
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim == 2:  # per segment: pooled with the segment weights, like the song vector
            from apexmusic.model import weighted_song_mean

            probs = weighted_song_mean(probs, np.zeros(len(probs), int), song.segment_weights, 1)[0]
        top = np.argsort(-probs)[:N_TOP_TAGS]
        return [(str(labels[i]), round(float(probs[i]), 4)) for i in top if i < len(labels)]


@contextmanager
def _head_threads(n_rows: int) -> Iterator[None]:
    """Run the (tiny) scoring head single-threaded for small batches.

    A few rows through a few small matmuls gain nothing from intra-op threads, but on a busy
    CPU (a server scoring uploads, or a shared CI box) OpenMP threads waiting on each other
    made one MC-dropout call ~30x slower (1.2 s vs 35 ms measured). Large batches
    (store scoring) keep the configured thread count.
    """
    if n_rows > _SMALL_BATCH:
        yield
        return
    with torch_threads(1):
        yield


def build_embedder(
    model: Any,
    weights: str | None = None,
    device: str = "auto",
    max_seconds: float | None = None,
    precision: str = "auto",
) -> Any:
    """The ``SongEmbedder`` that reproduces ``model``'s training embeddings from its spec.

    ``model`` is a ScoringModel (or its :class:`EmbeddingSpec`). The embedder's own spec must
    pass :func:`~apexmusic.store.check_compatible` against the model's: different weights
    values are refused, a weights fingerprint unknown on one side is only a warning, and so is
    a precision other than the model's training vectors' (an fp32-trained head scores bf16
    vectors; the spec records the precision used).
    """
    from apexmusic.embed import EmbedConfig, SongEmbedder, spec_for
    from apexmusic.store import check_compatible

    spec = model if isinstance(model, EmbeddingSpec) or model is None else model.encoder_spec
    if spec is None:
        raise ConfigError("the model records no embedding spec naming its encoder")
    config = EmbedConfig(
        encoder=spec.encoder,
        weights=weights or _loadable_weights(spec.weights),
        segment_seconds=spec.segment_seconds,
        hop_seconds=spec.hop_seconds,
        device=device,
        precision=precision,
        compat=spec.compat,
        max_seconds=max_seconds,
        workers=0,
    )
    embedder = SongEmbedder.from_config(config)
    check_compatible(spec, spec_for(embedder.encoder, config), data_name="the predictor's encoder")
    return embedder


def _loadable_weights(weights_id: str | None) -> str | None:
    """The ``weights`` argument that reloads the encoder a spec recorded (None: its default).

    Ids of packaged weights (``name==version:file@sha256:...``) are not locations: the
    encoder's default loads them again, and the mismatch check after loading catches drift.
    """
    if weights_id in (None, "", "none"):
        return None
    if ":" in weights_id and not Path(weights_id).exists():
        return None
    return weights_id


def _tag_labels(encoder: Any) -> Sequence[str] | None:
    labels = getattr(encoder, "labels", None)
    if isinstance(labels, dict):
        labels = labels.get("tags")
    return list(labels) if labels is not None else None


def _is_single(items: Any) -> bool:
    if isinstance(items, (str, os.PathLike, Song)):
        return True
    return (
        isinstance(items, tuple)
        and len(items) == 2
        and isinstance(items[0], np.ndarray)
        and np.isscalar(items[1])
    )


def _as_song(item: PredictInput, index: int) -> Song:
    if isinstance(item, Song):
        return item
    if isinstance(item, tuple):
        return Song(f"array-{index}", "")
    path = Path(item)
    return Song(path.stem, str(path))


def _error_from_failure(failure: Failure) -> ApexError:
    from apexmusic import errors

    for cls in (
        errors.AudioDecodeError,
        errors.AudioContentError,
        errors.InputError,
        errors.ModelLoadError,
        errors.ConfigError,
    ):
        if cls.kind == failure.kind:
            return cls(f"{failure.path or failure.id}: {failure.message}")
    return ApexError(f"{failure.path or failure.id}: {failure.message}")


def check_duration(duration_s: float, max_seconds: float | None) -> None:
    """Raise AudioContentError for a song longer than ``max_seconds`` (None: no limit)."""
    if max_seconds is not None and duration_s > max_seconds + 1e-6:
        from apexmusic.errors import AudioContentError

        raise AudioContentError(f"{duration_s:.1f} s of audio is longer than the {max_seconds:g} s limit")
