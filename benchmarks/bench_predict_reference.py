"""``apexmusic predict`` with an imported reference head vs the official pipeline, whole process.

Weights: the real-size MERT-v1-95M with seeded random weights, written once as a published
checkpoint folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``), as
``bench_embed.py`` and ``bench_compat.py`` do. Head: an official-architecture ``best_model.pt``
(2 shared layers, seven task branches, random weights, as tests/test_compat_official.py builds
it), imported with ``apexmusic import-reference``.

Rows, on the same songs (the real songs in ../shared/data/real-audio; ``--quick``: the two
shortest):

- ``apexmusic predict SONGS --model DIR --weights FOLDER`` as a fresh process, whole: start-up,
  weights, decoding, MERT in reference compat at ``--precision auto`` (and ``fp32`` with
  ``--fp32``), the head, the output file.
- the official pipeline (tests/official_pipeline.py: soundfile, torchaudio's ``resample``,
  padded 30 s segments, ``Wav2Vec2FeatureExtractor``, transformers' fp32 ``HubertModel`` one
  segment per forward, the seed-42 mix) and the official head, in this process with the model
  already built: the reference loop, without its start-up.

Reported: seconds and x real time per row, the speed-up of each predict row over the reference
loop, and the largest |score difference| of each predict row to the official head on the
official pipeline's vectors (0-100 tasks and 1-5 tasks).

Targets: predict at the default precision >= 1.8x the reference loop; scores within 0.1 (0-100)
and 0.005 (1-5) of the official pipeline.

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_predict_reference.py [--quick] [--fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REAL_AUDIO = ROOT.parent / "shared" / "data" / "real-audio"
SR = 24000


def build_inputs(tmp: Path, normalize: bool):
    """The published-layout MERT folder, the plain HubertModel it holds, its processor, the
    official head and the imported model directory."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_compat_official import PREPROCESSOR, _official_head
    from test_mert import write_published_folder
    from transformers import Wav2Vec2FeatureExtractor

    from apexmusic.cli import main as cli_main
    from apexmusic.encoders.mert import MERT_V1_95M, build_model

    hubert = build_model(MERT_V1_95M, None, seed=0)
    folder = tmp / "MERT-v1-95M"
    write_published_folder(hubert, MERT_V1_95M, folder, "safetensors")
    (folder / "preprocessor_config.json").write_text(json.dumps({**PREPROCESSOR, "do_normalize": normalize}))
    processor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
    head = _official_head(tmp / "best_model.pt", 768)
    model_dir = tmp / "apex"
    if cli_main(["import-reference", str(tmp / "best_model.pt"), str(model_dir)]) != 0:
        raise SystemExit("import-reference failed")
    return folder, hubert, processor, head, model_dir


def predict_process(songs: list[Path], model_dir: Path, weights: Path, out: Path, precision: str) -> float:
    """Wall seconds of a fresh ``apexmusic predict`` process (defaults but the precision)."""
    cmd = [sys.executable, "-m", "apexmusic.cli", "predict", *map(str, songs),
           "--model", str(model_dir), "--weights", str(weights), "--out", str(out),
           "--precision", precision, "--full-precision"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "precision" in line]
    for line in warnings[:4]:
        print(f"  [{precision}] {line.strip()[:160]}")
    return wall


def official_scores(songs: list[Path], processor, hubert, head) -> tuple[float, dict, dict]:
    """Seconds of the official pipeline + head over ``songs``, its scores and its song vectors
    per song path."""
    import torch
    from official_pipeline import load_waveform, song_vector, torchaudio_functional

    taf = torchaudio_functional(Path.home() / ".cache" / "apexmusic" / "torchaudio-oracle")
    scores, vectors = {}, {}
    t = time.perf_counter()
    for path in songs:
        vector = song_vector(load_waveform(path, SR, taf), processor, hubert)
        with torch.no_grad():
            out = head(torch.from_numpy(vector)[None])
        scores[str(path)] = {task: float(value[0]) for task, value in out.items()}
        vectors[str(path)] = vector
    return time.perf_counter() - t, scores, vectors


def min_cosine(songs: list[Path], weights: Path, precision: str, vectors: dict) -> float:
    """Smallest cosine of our reference-compat song vectors at ``precision`` to the official
    pipeline's (a finer check than the scores of a random head, which barely move)."""
    from official_pipeline import cosine

    from apexmusic.compat import reference_vector
    from apexmusic.embed import REFERENCE, SongEmbedder
    from apexmusic.encoders.mert import MERT_V1_95M, MertEncoder, load_folder
    from apexmusic.sources import Song

    state, arch = load_folder(weights, MERT_V1_95M)
    encoder = MertEncoder(state, arch, str(weights), device="cpu", precision=precision, compat=REFERENCE)
    embedder = SongEmbedder(encoder, compat=REFERENCE)
    return min(
        cosine(reference_vector(embedder.embed_path(Song(p.stem, str(p))).layers), vectors[str(p)])
        for p in songs
    )


def max_differences(out: Path, expected: dict[str, dict[str, float]]) -> tuple[float, float]:
    rows = {str(Path(row["path"]).resolve()): row for row in map(json.loads, out.read_text().splitlines())}
    wide = narrow = 0.0
    for path, scores in expected.items():
        row = rows[str(Path(path).resolve())]
        for i, (task, value) in enumerate(scores.items()):
            gap = abs(float(row[task]) - value)
            wide, narrow = (max(wide, gap), narrow) if i < 2 else (wide, max(narrow, gap))
    return wide, narrow


def _line(name: str, *cells: str) -> str:
    return f"{name:<40}" + "".join(f"{cell:>14}" for cell in cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the two shortest songs")
    parser.add_argument("--fp32", action="store_true", help="also time predict --precision fp32")
    parser.add_argument("--normalize", action="store_true", help="preprocessor do_normalize: true")
    args = parser.parse_args()
    import soundfile as sf
    import torch

    from apexmusic.devices import resolve_precision

    songs = sorted(REAL_AUDIO.glob("*.*"), key=lambda p: p.stat().st_size)[: 2 if args.quick else None]
    audio_s = sum(sf.info(str(p)).duration for p in songs)
    auto = resolve_precision("auto", "cpu")
    threads = torch.get_num_threads()
    print(f"{len(songs)} songs, {audio_s:.1f} s of audio; cores {os.cpu_count()}, torch threads "
          f"{threads}; precision auto -> {auto}; load {os.getloadavg()}", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-ref-"))
    weights, hubert, processor, head, model_dir = build_inputs(tmp, args.normalize)

    rows = []
    for precision in ["auto"] + (["fp32"] if args.fp32 else []):
        out = tmp / f"scores-{precision}.jsonl"
        wall = predict_process(songs, model_dir, weights, out, precision)
        rows.append((f"apexmusic predict --precision {precision}", wall, out))
        print(f"  {rows[-1][0]}: {wall:.1f} s, load {os.getloadavg()}", flush=True)
    reference_s, expected, vectors = official_scores(songs, processor, hubert, head)
    print(f"  official pipeline + head: {reference_s:.1f} s, load {os.getloadavg()}", flush=True)

    header = ("row", "s", "x real time", "vs reference", "max|d| 0-100", "max|d| 1-5")
    print("\n" + _line(*header))
    print(
        _line(
            "official pipeline (reference loop)", f"{reference_s:.1f}", f"{audio_s / reference_s:.2f}", "1.00"
        )
    )
    for name, wall, out in rows:
        wide, narrow = max_differences(out, expected)
        speed, ratio = f"{audio_s / wall:.2f}", f"{reference_s / wall:.2f}"
        print(_line(name, f"{wall:.1f}", speed, ratio, f"{wide:.2e}", f"{narrow:.2e}"))
    for precision in ["auto"] + (["fp32"] if args.fp32 else []):
        gap = 1 - min_cosine(songs, weights, precision, vectors)
        print(f"1 - cosine of our --precision {precision} song vectors to the official ones: <= {gap:.1e}")
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
