"""A literal oracle of the published APEX pipeline (official embedding_extraction.py / inference.py).

Written from the published steps, with only the model swapped for a given HubertModel: soundfile
read, channel mean in torch, ``torchaudio.functional.resample`` (torchaudio's own source, from
its PyPI wheel), 30 s segments from 0 with every non-empty tail zero-padded, the checkpoint's
``Wav2Vec2FeatureExtractor``, hidden states [2, 5, 8, -1] averaged over all frames, the seed-42
``Conv1d(4 -> 1)``, mean over segments. Shared by the tests and ``benchmarks/bench_compat.py``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

TORCHAUDIO = "torchaudio==2.11.1"  # its resample() is the one every 2.x release ships
LAYER_INDICES = [2, 5, 8, -1]
SEGMENT_SEC = 30
SEED = 42


class OracleUnavailable(RuntimeError):
    """torchaudio's wheel could not be downloaded (PyPI unreachable)."""


def torchaudio_functional(cache: Path):
    """torchaudio's ``functional.py`` from its wheel, imported beside our torch with its
    torchaudio-internal imports stubbed (``resample`` itself is pure torch)."""
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "torchaudio_functional.py"
    if not source.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "20",
               "-d", str(cache), TORCHAUDIO]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        wheels = sorted(cache.glob("torchaudio-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OracleUnavailable(f"pip download {TORCHAUDIO} failed: {tail[0]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            source.write_bytes(wheel.read("torchaudio/functional/functional.py"))
    package = types.ModuleType("_torchaudio_oracle")
    package.__path__ = []
    filtering = types.ModuleType("_torchaudio_oracle.filtering")
    filtering.highpass_biquad = filtering.treble_biquad = None
    sys.modules["_torchaudio_oracle"] = package
    sys.modules["_torchaudio_oracle.filtering"] = filtering
    spec = importlib.util.spec_from_file_location("_torchaudio_oracle.functional", source)
    module = importlib.util.module_from_spec(spec)
    # Its top-level "import torchaudio" needs a module; the stub must not outlive the import, or
    # transformers' package probing (find_spec("torchaudio")) breaks.
    had = "torchaudio" in sys.modules
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    try:
        spec.loader.exec_module(module)
    finally:
        if not had:
            del sys.modules["torchaudio"]
    return module


def load_waveform(path: Path, target_sr: int, taf):
    """inference.py's ``_load_audio``: soundfile, channel mean, torchaudio resample."""
    import soundfile as sf
    import torch

    waveform, sr = sf.read(str(path), dtype="float32")
    waveform = torch.from_numpy(waveform)
    if len(waveform.shape) > 1 and waveform.shape[1] > 1:
        waveform = waveform.mean(dim=1)
    if sr != target_sr:
        waveform = taf.resample(waveform, sr, target_sr)
    return waveform


def song_vector(waveform, processor, model, target_sr: int = 24000) -> np.ndarray:
    """inference.py's ``_extract_embedding`` on a 1-D float32 tensor at ``target_sr``."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        aggregator = nn.Conv1d(in_channels=len(LAYER_INDICES), out_channels=1, kernel_size=1)
    segment_len = SEGMENT_SEC * target_sr
    segment_embeddings = []
    with torch.no_grad():
        for start in range(0, waveform.shape[0], segment_len):
            segment = waveform[start : start + segment_len]
            if segment.numel() == 0:
                break
            if segment.shape[0] < segment_len:
                segment = torch.nn.functional.pad(segment, (0, segment_len - segment.shape[0]))
            inputs = processor(segment.cpu().numpy(), sampling_rate=target_sr, return_tensors="pt")
            outputs = model(**inputs, output_hidden_states=True)
            all_hidden = torch.stack([outputs.hidden_states[i].mean(dim=1) for i in LAYER_INDICES])
            all_hidden = all_hidden.squeeze(1)
            segment_embeddings.append(aggregator(all_hidden.unsqueeze(0)).squeeze())
        return torch.stack(segment_embeddings).mean(dim=0).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
