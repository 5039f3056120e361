"""A split as training tensors: inputs prepared (standardised, mixed) once, labels with their masks,
and song-level predictions from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from apexmusic.data import Dataset
from apexmusic.model import ApexNet, weighted_song_mean


@dataclass
class _Tensors:
    """One split as training tensors; ``song_of`` maps segment rows to song rows."""

    x: torch.Tensor  # prepared inputs [rows, D] or [rows, L, D]
    y: torch.Tensor  # [rows, T], missing labels as 0
    mask: torch.Tensor  # [rows, T] bool
    song_y: np.ndarray  # [songs, T] with NaN
    song_of: torch.Tensor | None = None  # [rows] song index (segment mode)
    row_weight: torch.Tensor | None = None  # [rows] segment weights (segment mode)

    @property
    def n_songs(self) -> int:
        return len(self.song_y)


@torch.no_grad()
def _predict(net: ApexNet, data: _Tensors, batch_size: int = 8192) -> np.ndarray:
    """Song-level predictions ``[songs, T]`` (segment rows averaged with their weights)."""
    was = net.training
    net.eval()
    out = torch.cat(
        [net.forward_prepared(data.x[s : s + batch_size]) for s in range(0, len(data.x), batch_size)]
    )
    net.train(was)
    rows = out.float().cpu().numpy()
    if data.song_of is None:
        return rows
    song_of, weights = data.song_of.cpu().numpy(), data.row_weight.cpu().numpy()
    return weighted_song_mean(rows, song_of, weights, data.n_songs).astype(np.float32)


def _song_rows(dataset: Dataset, index: np.ndarray, mode: str) -> np.ndarray:
    if mode == "song":
        return np.asarray(index)
    return np.repeat(np.asarray(index), [len(dataset.store.segments[i]) for i in index])


def _inputs(
    dataset: Dataset, index: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Raw input rows for songs ``index``: song vectors, or all their segment vectors."""
    store = dataset.store
    if mode == "song":
        return store.layers[index], None, None
    segs = [store.segments[i] for i in index]
    weights = [store.segment_weights[i] for i in index]
    song_of = np.repeat(np.arange(len(index)), [len(s) for s in segs])
    return np.concatenate(segs).astype(np.float32), song_of, np.concatenate(weights).astype(np.float32)


def _tensors(
    net: ApexNet,
    dataset: Dataset,
    index: np.ndarray,
    mode: str,
    device: torch.device,
    raw: tuple | None = None,
) -> _Tensors:
    x, song_of, weight = raw if raw is not None else _inputs(dataset, index, mode)
    song_y = dataset.targets[index]
    row_y = song_y if song_of is None else song_y[song_of]
    with torch.no_grad():
        prepared = net.prepare(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)).contiguous()
    mask = torch.from_numpy(np.isfinite(row_y)).to(device)
    return _Tensors(
        x=prepared,
        y=torch.from_numpy(np.nan_to_num(row_y).astype(np.float32)).to(device),
        mask=mask,
        song_y=song_y,
        song_of=torch.from_numpy(song_of).to(device) if song_of is not None else None,
        row_weight=torch.from_numpy(weight).to(device) if weight is not None else None,
    )


def fit_standardisation(net: ApexNet, x: np.ndarray, chunk: int = 65536) -> None:
    """Set the network's input mean and std from training inputs (two passes, float64)."""
    cfg = net.config
    total, total_sq, n = 0.0, 0.0, 0
    for s in range(0, len(x), chunk):
        block = torch.from_numpy(np.ascontiguousarray(x[s : s + chunk], np.float32))
        if block.dim() == 2:
            block = block.unsqueeze(1)
        if not cfg.normalise_layers:
            with torch.no_grad():
                block = net.mixer(block.to(net.norm_mean.device)).cpu()
        block = block.double()
        total = total + block.sum(0)
        total_sq = total_sq + (block**2).sum(0)
        n += len(block)
    mean = total / n
    std = torch.sqrt(torch.clamp(total_sq / n - mean**2, min=0.0))
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    net.norm_mean.copy_(mean.float())
    net.norm_std.copy_(std.float())


def _label_counts(dataset: Dataset, index: np.ndarray) -> dict[str, int]:
    y = dataset.targets[index]
    return {t: int(np.isfinite(y[:, i]).sum()) for i, t in enumerate(dataset.tasks)}
