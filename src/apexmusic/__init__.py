"""apexmusic: predict how an AI-generated song will do and how it sounds, from audio alone.

Heavy dependencies (torch, transformers, ray, fastapi) are imported where they are used,
so ``import apexmusic`` stays fast.
"""

from apexmusic.tasks import AESTHETIC_TASKS, ALL_TASKS, POPULARITY_TASKS, TASKS

__version__ = "0.1.0"
__all__ = ["AESTHETIC_TASKS", "ALL_TASKS", "POPULARITY_TASKS", "TASKS", "__version__"]
