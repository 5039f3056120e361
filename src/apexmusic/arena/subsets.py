"""The battles of an official Music Arena board: prompt kind and the lyrics-capability rule.

Music Arena publishes one board for instrumental and one for vocal prompts. Its
``generate_leaderboard`` then filters by what the systems can do: the vocal board keeps the
battles in which **both** systems can sing lyrics; the instrumental board keeps those in which
**at most one** can (a battle between two lyrics-capable systems is left out even when its
prompt was instrumental). A system unknown to the registry counts as unable to sing lyrics, as
it does there.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from apexmusic.arena.battles import Battles
from apexmusic.arena.config import LeaderboardConfig

log = logging.getLogger(__name__)

# ``supports_lyrics`` of Music Arena's systems registry (systems/registry.yaml), plus the two
# hidden preview systems that its published 2025 vocal boards list as lyrics-capable.
LYRICS_CAPABLE: dict[str, bool] = {
    "musicgen-small": False,
    "musicgen-medium": False,
    "musicgen-large": False,
    "sao": False,
    "sao-small": False,
    "audioldm2": False,
    "magenta-rt-base": False,
    "magenta-rt-large": False,
    "sa2": False,
    "lyria-rt": False,
    "acestep": True,
    "acestep-1.5-turbo-1.7b": True,
    "acestep-1.5-turbo-4b": True,
    "songgen": True,
    "riffusion-fuzz-1-0": True,
    "riffusion-fuzz-1-1": True,
    "sonauto-v2-2": True,
    "sonauto-v3-preview": True,
    "elevenlabs-music-v1": True,
    "lyria-3-30s": True,
    "lyria-3-pro-preview": True,
    "preview-jerboa": True,
    "preview-ocelot": True,
}
MIN_BOARD_BATTLES = 30  # Music Arena publishes no board from fewer battles


def lyrics_systems(config: LeaderboardConfig) -> frozenset[str]:
    """The systems that can sing lyrics: ``config.lyrics_systems``, else the registry's."""
    if config.lyrics_systems is not None:
        return frozenset(config.lyrics_systems)
    return frozenset(s for s, capable in LYRICS_CAPABLE.items() if capable)


def leaderboard_battles(battles: Battles, config: LeaderboardConfig) -> Battles:
    """The battles of the board ``config.subset`` (``all``: every battle).

    ``instrumental`` / ``vocal``: the battles with that ``is_instrumental`` value (every battle
    when none says, as Music Arena does without the column), then, with
    ``config.lyrics_filter``, the lyrics-capability rule. Battles already selected for the same
    board are returned as they are.
    """
    selection = (config.subset, config.lyrics_filter, config.lyrics_systems)
    if config.subset == "all" or battles.selection == selection:
        return battles
    kept = _by_prompt_kind(battles, config.subset)
    if config.lyrics_filter:
        kept = kept.subset(_lyrics_rule(kept, config))
    n_scored = int((kept.preference != "BOTH_BAD").sum())
    if n_scored < MIN_BOARD_BATTLES:
        log.warning(
            "the %s board has %d battles (Music Arena publishes none under %d)",
            config.subset,
            n_scored,
            MIN_BOARD_BATTLES,
        )
    return replace(kept, selection=selection)


def _by_prompt_kind(battles: Battles, subset: str) -> Battles:
    if np.isnan(battles.instrumental).all():
        log.warning(
            "no battle says whether its prompt was instrumental: the %s board uses every battle", subset
        )
        return battles
    return battles.subset(battles.instrumental == (1.0 if subset == "instrumental" else 0.0))


def _lyrics_rule(battles: Battles, config: LeaderboardConfig) -> np.ndarray:
    capable = lyrics_systems(config)
    unknown = sorted(set(battles.systems) - capable - set(LYRICS_CAPABLE))
    if unknown and config.lyrics_systems is None:
        log.warning(
            "systems not in Music Arena's registry count as unable to sing lyrics: %s", ", ".join(unknown)
        )
    both = np.isin(battles.system_a, list(capable)) & np.isin(battles.system_b, list(capable))
    return both if config.subset == "vocal" else ~both
