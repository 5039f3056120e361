"""The named choices of every setting (and the defaults the CLI's help shows), defined once.

The modules that validate a setting and the CLI's parser both read them from here. This module
imports nothing, so that building the parser (``apexmusic --help``) loads neither torch nor
scipy.
"""

from __future__ import annotations

LOSSES = ("equal", "weighted", "uncertainty")  # how the per-task losses combine in training
POOLINGS = ("song", "segment")  # a model's training mode, which is also its inference pooling rule
MIXINGS = ("reference", "mean", "learned")  # how stored hidden states become one vector
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # the trainer's arithmetic (fp16 is for encoders only)
SPLITS = ("random", "creator", "time")  # how songs are split into train / validation / test
COHORTS = ("none", "week", "month")  # popularity percentiles within creation-time cohorts
LABEL_PRESETS = ("auto", "suno", "udio", "plain", "songeval")  # labels-file column mappings
ARENA_SUBSETS = ("all", "instrumental", "vocal")  # official Music Arena boards
DEFAULT_MAX_SECONDS = 3600.0  # `embed` fails longer songs (an hour: no real song, any runaway file)
OUTPUT_DIGITS = 6  # significant digits of floats in JSONL / CSV output (float32 scores hold ~7)
