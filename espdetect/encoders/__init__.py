"""Encoders: `Encoder` (the interface), `JpegEncoder`, `make_encoder` and `AdaptiveQuality`."""

from __future__ import annotations

from espdetect.encoders.adaptive import AdaptiveQuality as AdaptiveQuality
from espdetect.encoders.base import Encoder as Encoder
from espdetect.encoders.jpeg import EncoderBackend as EncoderBackend
from espdetect.encoders.jpeg import JpegEncoder as JpegEncoder
from espdetect.encoders.jpeg import make_encoder as make_encoder

__all__ = ["AdaptiveQuality", "Encoder", "EncoderBackend", "JpegEncoder", "make_encoder"]
