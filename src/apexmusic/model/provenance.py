"""Where a model's training data came from, in a form safe to show anyone.

Stored in the model directory's ``config.json`` (``provenance``) and shown at the top of the
model card, on the web page, in ``GET /v1/model`` and in every prediction
(``simulated_training_data``). Label sources are recorded by file name only: a server's paths
never leave it.
"""

from __future__ import annotations

import re
from typing import Any

SIMULATED_NOTICE = "trained on simulated songs — not predictions for real music"
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[^\s()+,;]*[/\\])+([^\s()+,;/\\]*)")


def strip_paths(text: str) -> str:
    """``text`` with every file-system path reduced to its last component."""
    return _PATH.sub(lambda m: m.group(1), str(text))


def make_provenance(labels_source: str, simulated: bool, songs: int | None = None) -> dict[str, Any]:
    """The ``provenance`` block a trained model records."""
    out: dict[str, Any] = {"labels": strip_paths(labels_source) or "unrecorded", "simulated": bool(simulated)}
    if songs is not None:
        out["songs"] = int(songs)
    return out


def describe(provenance: dict[str, Any] | None) -> str:
    """One line for the top of the card and the page."""
    if not provenance:
        return "training data not recorded (a model saved before provenance was kept)"
    if provenance.get("simulated"):
        return SIMULATED_NOTICE
    songs = f"{provenance['songs']} songs, " if provenance.get("songs") is not None else ""
    return f"trained on {songs}labels from {provenance.get('labels', 'an unrecorded source')}"


def is_simulated(provenance: dict[str, Any] | None) -> bool | None:
    """``True``/``False`` as recorded; ``None`` when the model does not say."""
    if not provenance or "simulated" not in provenance:
        return None
    return bool(provenance["simulated"])
