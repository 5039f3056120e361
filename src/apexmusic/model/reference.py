"""Import the reference implementation's checkpoints (``best_model.pt``) as a ScoringModel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from apexmusic.errors import ModelLoadError
from apexmusic.model.network import TRUNK_DIMS, ApexNet, HeadConfig
from apexmusic.model.scoring import ScoringModel
from apexmusic.store.spec import EmbeddingSpec
from apexmusic.tasks import ALL_TASKS

log = logging.getLogger(__name__)

REFERENCE_CHECKPOINT_KEYS = ("model_state", "task", "shared", "mode", "epoch", "val_loss")
# The published pipeline's vectors: MERT-v1-95M's 13 hidden states under --compat reference.
# The published weights cannot be hashed offline, so the fingerprint stays unknown: a store
# embedded with a local copy of those weights is scored with a warning, never refused.
REFERENCE_ENCODER_SPEC = EmbeddingSpec(
    encoder="mert-v1-95m",
    weights="m-a-p/MERT-v1-95M",
    fingerprint=None,
    n_layers=13,
    dim=768,
    sample_rate=24000,
    segment_seconds=30.0,
    compat="reference",
    pad_last=True,
    pooling="all_frames",
    segment_weighting="uniform",
    precision="fp32",  # the published pipeline's arithmetic; other precisions score with a warning
)


def import_reference_checkpoint(
    path: str | Path, n_layers: int = 13, encoder_spec: EmbeddingSpec | None = None
) -> ScoringModel:
    """Convert the reference's ``best_model.pt`` into a :class:`ScoringModel`.

    The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only). The model gets ``reference`` mixing and no standardisation, as the reference had
    none: with ``n_layers=13`` it takes the 13 MERT hidden states of a ``--compat reference``
    store and applies the reference's fixed Conv1d over layers 2, 5, 8, 12 itself; with
    ``n_layers=1`` it takes the already-mixed 768-d vector.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path} not found") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        log.info("torch.load(%s, weights_only=True) failed: %s", path, exc)
        raise ModelLoadError(
            f"cannot load {path} safely as a reference checkpoint "
            f"({type(exc).__name__}; -v shows torch's reason)"
        ) from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state"), dict):
        raise ModelLoadError(f"{path} is not a reference checkpoint (needs a dict with 'model_state')")
    state = {k: v for k, v in ckpt["model_state"].items() if isinstance(v, torch.Tensor)}
    tasks = tuple(t for t in ALL_TASKS if f"branch_{t}.branch.2.weight" in state)
    n_shared = len({k.split(".")[1] for k in state if k.startswith("shared.")})
    if not tasks or n_shared not in TRUNK_DIMS or "shared.0.block.0.weight" not in state:
        raise ModelLoadError(f"{path}: unrecognised state dict (tasks {tasks}, {n_shared} shared layers)")
    if "shared" in ckpt and int(ckpt["shared"]) != n_shared:
        raise ModelLoadError(f"{path}: 'shared'={ckpt['shared']} but the weights have {n_shared} layers")
    dim = int(state["shared.0.block.0.weight"].shape[1])
    config = HeadConfig(
        tasks=tasks, shared=n_shared, n_layers=n_layers, dim=dim, mixing="reference", standardize=False
    )
    net = ApexNet(config)
    unexpected = [k for k in state if not k.startswith(("shared.", "branch_"))]
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights {unexpected[:5]}")
    try:
        net.head.load_published_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"{path}: weights do not fit the published layout: {exc}") from exc
    net.eval()
    info = {k: _plain(ckpt.get(k)) for k in REFERENCE_CHECKPOINT_KEYS if k != "model_state"}
    spec = encoder_spec or REFERENCE_ENCODER_SPEC.with_(n_layers=n_layers, dim=dim)
    return ScoringModel(
        net=net,
        encoder_spec=spec,
        targets={"popularity": "reference implementation (percentile within platform, power transform)"},
        training={**info, "source": str(path.name), "mixing": "reference"},
        card={
            "title": "APEX reference checkpoint (imported)",
            "source": f"import-reference {path.name}",
            "data": {
                "training data": "as trained by the reference implementation",
                **{k: v for k, v in info.items() if v is not None},
            },
        },
    )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
