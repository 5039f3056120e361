"""musicnn's fixed signal settings, tag vocabularies and the four published models' configs."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000


N_FFT = 512


HOP = 256


N_MELS = 96


WINDOW_FRAMES = 187  # librosa.time_to_frames(3 s) + 1, as the original extractor computes it


BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization default


MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)  # fmt: skip


MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal",
    "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age",
    "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird", "country",
    "metal", "female voice", "choral",
)  # fmt: skip


@dataclass(frozen=True)
class MusicnnConfig:
    """One of the published models (the ``MSD_musicnn_big`` variant is not in the wheel)."""

    name: str  # registry name, e.g. "musicnn-msd"
    checkpoint: str  # folder name inside the wheel, e.g. "MSD_musicnn"
    labels: tuple[str, ...]
    arch: str = "musicnn"  # "musicnn" or "vgg" (the paper's 5-layer VGG baseline)
    n_mels: int = N_MELS
    frontend_scale: float = 1.6
    midend_filters: int = 64
    backend_units: int = 200
    vgg_filters: int = 128

    @property
    def layer_dims(self) -> dict[str, int]:
        """The per-window feature vectors the encoder returns as layers, in layer order."""
        if self.arch == "vgg":
            return {"pool5": 2 * self.vgg_filters, "pool4": self.vgg_filters, "pool3": self.vgg_filters}
        return {"penultimate": self.backend_units, "mean_pool": self.midend_dim, "max_pool": self.midend_dim}

    @property
    def timbral_filters(self) -> int:
        return int(self.frontend_scale * 128)

    @property
    def temporal_filters(self) -> int:
        return int(self.frontend_scale * 32)

    @property
    def frontend_dim(self) -> int:
        return 2 * self.timbral_filters + 3 * self.temporal_filters

    @property
    def midend_dim(self) -> int:
        return self.frontend_dim + 3 * self.midend_filters


MSD_MUSICNN = MusicnnConfig("musicnn-msd", "MSD_musicnn", MSD_LABELS)


MTT_MUSICNN = MusicnnConfig("musicnn-mtt", "MTT_musicnn", MTT_LABELS)


MSD_VGG = MusicnnConfig("musicnn-msd-vgg", "MSD_vgg", MSD_LABELS, arch="vgg")


MTT_VGG = MusicnnConfig("musicnn-mtt-vgg", "MTT_vgg", MTT_LABELS, arch="vgg")
