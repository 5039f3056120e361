"""Encoder registry: look an encoder up by name; heavy modules load only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from apexmusic.encoders.base import Encoder, EncoderBase
from apexmusic.errors import ConfigError

# name -> "module:factory". A factory takes (weights, device, precision, **options).
_REGISTRY: dict[str, str] = {
    "handcrafted": "apexmusic.encoders.handcrafted:load",
    "mert-v1-95m": "apexmusic.encoders.mert:load_95m",
    "mert-v1-330m": "apexmusic.encoders.mert:load_330m",
    "musicnn-msd": "apexmusic.encoders.musicnn:load_msd",
    "musicnn-mtt": "apexmusic.encoders.musicnn:load_mtt",
    "musicnn-msd-vgg": "apexmusic.encoders.musicnn:load_msd_vgg",
    "musicnn-mtt-vgg": "apexmusic.encoders.musicnn:load_mtt_vgg",
}


def available_encoders() -> list[str]:
    return sorted(_REGISTRY)


def load_encoder(
    name: str,
    weights: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Encoder:
    """Build the encoder registered under ``name``.

    ``weights`` is a local folder or file, a hub id, ``"random"`` (timing and tests only), or
    None for the encoder's default. Raises ConfigError for an unknown name.
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown encoder {name!r}; choose from {', '.join(available_encoders())}"
        ) from None
    module_name, factory_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(weights=weights, device=device, precision=precision, **options)


__all__ = ["Encoder", "EncoderBase", "available_encoders", "load_encoder"]
