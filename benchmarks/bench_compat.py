"""Reference compat vs a literal oracle of the published APEX pipeline, at real size.

A real-size MERT-v1-95M with seeded random weights is written as a published checkpoint folder
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``). The oracle
(tests/official_pipeline.py) runs the official steps: soundfile, channel mean,
torchaudio's own ``resample`` (from its PyPI wheel), 30 s segments with every tail padded,
``Wav2Vec2FeatureExtractor``, a plain transformers ``HubertModel``, layers [2, 5, 8, -1], the
seed-42 ``Conv1d``, mean over segments. apexmusic runs ``SongEmbedder`` in reference compat (its
decoder policy, sinc resampler and fast MERT path). An official-architecture head with random
weights (trained-looking BatchNorm statistics) scores both vectors, imported with
``import_reference_checkpoint`` on our side.

Per song: segments, cosine of the song vectors, largest score differences (0-100 and 1-5 tasks).
Also a song cut to 30.05 s (two segments in the official pipeline).

    flock /tmp/apexmusic-bench.lock python benchmarks/bench_compat.py [--quick] [--normalize] \
        [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REAL_AUDIO = ROOT.parent / "shared" / "data" / "real-audio"
SR = 24000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the 30.05 s cut and the shortest song only")
    parser.add_argument("--normalize", action="store_true", help="preprocessor do_normalize: true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="fp32", help="our encoder's precision (default fp32)")
    args = parser.parse_args()
    import soundfile as sf
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from official_pipeline import cosine, load_waveform, song_vector, torchaudio_functional
    from test_compat_official import PREPROCESSOR, _official_head
    from test_mert import write_published_folder
    from transformers import Wav2Vec2FeatureExtractor

    from apexmusic.compat import reference_vector
    from apexmusic.embed import REFERENCE, SongEmbedder
    from apexmusic.encoders.mert import MERT_V1_95M, MertEncoder, build_model, load_folder
    from apexmusic.model import import_reference_checkpoint
    from apexmusic.sources import Song

    taf = torchaudio_functional(Path.home() / ".cache" / "apexmusic" / "torchaudio-oracle")
    tmp = Path(tempfile.mkdtemp(prefix="bench-compat-"))
    hubert = build_model(MERT_V1_95M, None, seed=0)
    folder = tmp / "mert"
    write_published_folder(hubert, MERT_V1_95M, folder, "safetensors")
    (folder / "preprocessor_config.json").write_text(
        json.dumps({**PREPROCESSOR, "do_normalize": args.normalize})
    )
    processor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
    model, arch = load_folder(folder, MERT_V1_95M)
    ours = SongEmbedder(
        MertEncoder(model, arch, str(folder), device="cpu", precision=args.precision, compat=REFERENCE),
        compat=REFERENCE,
    )
    head = _official_head(tmp / "best_model.pt", 768)
    imported = import_reference_checkpoint(tmp / "best_model.pt")

    songs = sorted(REAL_AUDIO.glob("*.*"), key=lambda p: p.stat().st_size)
    source = REAL_AUDIO / "suno_01_en.mp3"
    audio, rate = sf.read(str(source), dtype="float32")
    cut = tmp / "suno_01_en_cut_30.05s.wav"
    sf.write(str(cut), audio[: int(30.05 * rate)], rate, subtype="FLOAT")
    songs = [cut] + (songs[:1] if args.quick else songs)

    print(
        f"torch threads {torch.get_num_threads()}, do_normalize={args.normalize}, "
        f"precision {ours.encoder.precision}",
        flush=True,
    )
    print(f"\n{'song':<38} {'segs':>4} {'1 - cosine':>10} {'max|d| 0-100':>13} {'max|d| 1-5':>11} {'s':>6}")
    worst = [1.0, 0.0, 0.0]
    spread: dict[str, list[float]] = {}
    for path in songs:
        start = time.perf_counter()
        theirs = song_vector(load_waveform(path, SR, taf), processor, hubert)
        embedding = ours.embed_path(Song(path.stem, str(path)))
        cos = cosine(reference_vector(embedding.layers), theirs)
        with torch.no_grad():
            expected = head(torch.from_numpy(theirs)[None])
        got = imported.predict_layers(embedding.layers[None])
        pop = max(abs(float(got[t][0]) - float(expected[t][0])) for t in ("score_streams", "score_likes"))
        aes = max(abs(float(got[t][0]) - float(expected[t][0])) for t in list(expected)[2:])
        worst = [min(worst[0], cos), max(worst[1], pop), max(worst[2], aes)]
        for task, value in expected.items():
            spread.setdefault(task, []).append(float(value[0]))
        seconds = time.perf_counter() - start
        n = len(embedding.segments)
        gap = 1 - cos
        print(f"{path.name:<38} {n:>4} {gap:>10.1e} {pop:>13.1e} {aes:>11.1e} {seconds:>6.0f}", flush=True)
    print(f"\nworst: cosine {worst[0]:.9f}, |d| 0-100 {worst[1]:.2e}, |d| 1-5 {worst[2]:.2e}")
    ranges = ", ".join(f"{k} {min(v):.2f}-{max(v):.2f}" for k, v in spread.items())
    print(f"official head's scores over the songs (its sensitivity to the vector): {ranges}")


if __name__ == "__main__":
    main()
