"""The scoring model: the APEX network, the model directory and the inference pooling rule.

- :mod:`~apexmusic.model.network`: the multi-task head, input standardisation, layer mixing;
- :mod:`~apexmusic.model.scoring`: :class:`ScoringModel`, a trained network plus its
  :class:`~apexmusic.store.EmbeddingSpec`, targets, training record and card;
- :mod:`~apexmusic.model.directory`: :class:`ModelDir`, the one owner of a model folder's files;
- :mod:`~apexmusic.model.pooling`: :func:`score_songs`, how every path turns a song's vectors
  into its scores;
- :mod:`~apexmusic.model.card`: the ``README.md`` model card;
- :mod:`~apexmusic.model.reference`: importing the reference implementation's checkpoints.
"""

from apexmusic.model.card import render_model_card
from apexmusic.model.directory import (
    CARD_FILE,
    COMPARATOR_FILE,
    CONFIG_FILE,
    EVAL_DIR,
    MODEL_FORMAT,
    WEIGHTS_FILE,
    ModelDir,
)
from apexmusic.model.network import (
    BRANCH_DIMS,
    MIXINGS,
    TRUNK_DIMS,
    ApexNet,
    Block,
    Branch,
    FastDropout,
    FusedHead,
    HeadConfig,
    LayerMixer,
    ReferenceHead,
    build_net,
    expected_state_shapes,
    fuse_state_dict,
    make_trunk,
    reference_mix_weights,
    resolve_device,
    unfuse_state_dict,
)
from apexmusic.model.pooling import (
    SongScores,
    mc_song_spread,
    score_songs,
    score_store_data,
    weighted_song_mean,
)
from apexmusic.model.reference import (
    REFERENCE_CHECKPOINT_KEYS,
    REFERENCE_ENCODER_SPEC,
    import_reference_checkpoint,
)
from apexmusic.model.scoring import POOLINGS, ScoringModel, weights_id

__all__ = [
    "BRANCH_DIMS",
    "CARD_FILE",
    "COMPARATOR_FILE",
    "CONFIG_FILE",
    "EVAL_DIR",
    "MIXINGS",
    "MODEL_FORMAT",
    "POOLINGS",
    "REFERENCE_CHECKPOINT_KEYS",
    "REFERENCE_ENCODER_SPEC",
    "TRUNK_DIMS",
    "WEIGHTS_FILE",
    "ApexNet",
    "Block",
    "Branch",
    "FastDropout",
    "FusedHead",
    "HeadConfig",
    "LayerMixer",
    "ModelDir",
    "ReferenceHead",
    "ScoringModel",
    "SongScores",
    "build_net",
    "expected_state_shapes",
    "fuse_state_dict",
    "import_reference_checkpoint",
    "make_trunk",
    "mc_song_spread",
    "reference_mix_weights",
    "render_model_card",
    "resolve_device",
    "score_songs",
    "score_store_data",
    "unfuse_state_dict",
    "weighted_song_mean",
    "weights_id",
]
