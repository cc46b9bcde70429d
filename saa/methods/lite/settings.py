"""The settings of method ``lite``: the config's ``method_options.lite`` section (every key
optional; ``--set method_options.lite.size=320``). Every one of them is part of a run's fingerprint.
What each default was chosen on: docs/methods.md ("Lite mode")."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ...config.fields import CrossImageK, NonEmptyStr, NonNegativeInt, PositiveInt, float_between, int_between

__all__ = ["LiteSettings", "MAX_LITE_SIZE"]

#: largest network input side (the feature grid, and the search, grow with its square)
MAX_LITE_SIZE = 1024


class LiteSettings(BaseModel):
    """EfficientNet-Lite0 features compared across images (``saa.methods.lite.features``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: timm backbone and its weights (``package:NAME``: shipped in a Python package)
    backbone: NonEmptyStr = "efficientnet_lite0"
    checkpoint: NonEmptyStr = "package:efficientnet_lite0"
    #: backbone stages whose features are concatenated (grids resized to the first stage's)
    stages: list[NonNegativeInt] = Field(default_factory=lambda: [1, 2])
    #: images are resized to about size x size pixels before the CNN
    size: int_between(32, MAX_LITE_SIZE) = 256
    #: True: the pixel count of size x size with the image's aspect kept; False: squashed to size x size
    keep_aspect: StrictBool = True
    #: the unit features averaged over pool x pool cells before the search (1 = none)
    pool: PositiveInt = 2
    #: ``per_image``: mean of the smallest ``fraction`` of the per-reference nearest distances;
    #: ``nearest``: the k nearest positions over all references
    aggregate: Literal["per_image", "nearest"] = "per_image"
    fraction: float_between(0, 1, lo_open=True) = 0.5
    #: nearest positions averaged by the score
    k: CrossImageK = 1
    #: compare each image with at most this many references (null = all of them)
    max_others: Optional[PositiveInt] = 32
    #: which references when capped: ``spread`` (evenly through the set) or ``similar`` (closest
    #: global descriptors)
    subset: Literal["spread", "similar"] = "spread"
    #: Gaussian sigma of the score grid, in pixels of the network input (0 = none)
    smooth: float_between(0, 1000) = 8.0
    #: neighbours of the single-image saliency used when there is nothing to compare with
    single_n: PositiveInt = 400
    #: memory tiling of the search: query rows and reference positions per product
    chunk: PositiveInt = 1024
    block: PositiveInt = 16384

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one stage")
        return value
