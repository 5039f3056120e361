"""A simulated AI-music corpus: audible hidden factors, SongEval-like ratings, Suno-like
popularity and Music Arena battles, written in the formats of the real data.

``generate_corpus(out_dir, n_songs=600, seed=0)`` is the entry point; see ``corpus.py``.
"""

from apexmusic.synth.corpus import Corpus, generate_corpus, write_audio
from apexmusic.synth.music import DIMENSIONS, SongSpec, render_song
from apexmusic.synth.styles import HELDOUT_STYLES, STYLES, TRAIN_STYLES, Style

__all__ = [
    "DIMENSIONS",
    "HELDOUT_STYLES",
    "STYLES",
    "TRAIN_STYLES",
    "Corpus",
    "SongSpec",
    "Style",
    "generate_corpus",
    "render_song",
    "write_audio",
]
