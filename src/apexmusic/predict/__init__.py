"""Score songs with a trained model.

- :mod:`~apexmusic.predict.predictor`: :class:`Predictor` — ``Predictor.from_pretrained(model_dir)``
  loads the scoring model once and the encoder its embedding spec names;
  ``.predict(paths_or_arrays)`` returns one :class:`Prediction` per input (scores,
  uncertainty, per-segment :class:`SegmentScore` timeline, optional tags);
- :mod:`~apexmusic.predict.batch`: :func:`predict_inputs` (``apexmusic predict INPUT...``:
  resumable, rows written as they come, failures logged) and :func:`score_store`
  (``apexmusic predict --embeddings STORE``: re-scores a store without touching audio);
- :mod:`~apexmusic.predict.writers`: the JSONL / CSV / Parquet output writers;
- :mod:`~apexmusic.predict.results`: the typed results and :func:`compare_scores`.
"""

from apexmusic.predict.batch import (
    FailureLog,
    PredictConfig,
    PredictReport,
    PredictRun,
    StoreScoreReport,
    failures_path,
    finish_predict_run,
    predict_inputs,
    score_store,
    start_predict_run,
)
from apexmusic.predict.predictor import (
    DEFAULT_MC_SAMPLES,
    N_TOP_TAGS,
    Predictor,
    build_embedder,
    check_duration,
    torch_threads,
)
from apexmusic.predict.results import Comparison, Prediction, SegmentScore, compare_scores, format_tags
from apexmusic.predict.writers import (
    OUTPUT_FORMATS,
    CsvWriter,
    JsonlWriter,
    OutputWriter,
    ParquetWriter,
    jsonl_lines,
    open_writer,
)

__all__ = [
    "DEFAULT_MC_SAMPLES",
    "N_TOP_TAGS",
    "OUTPUT_FORMATS",
    "Comparison",
    "CsvWriter",
    "FailureLog",
    "JsonlWriter",
    "OutputWriter",
    "ParquetWriter",
    "PredictConfig",
    "PredictReport",
    "PredictRun",
    "Prediction",
    "Predictor",
    "SegmentScore",
    "StoreScoreReport",
    "build_embedder",
    "check_duration",
    "compare_scores",
    "failures_path",
    "finish_predict_run",
    "format_tags",
    "jsonl_lines",
    "open_writer",
    "predict_inputs",
    "score_store",
    "start_predict_run",
    "torch_threads",
]
