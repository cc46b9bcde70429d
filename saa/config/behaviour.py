"""The behaviour switches of SAA+ and their presets (SPEC §3.8): ``official`` (the authors' code,
the default), ``paper`` (the paper's formulas) and ``improved`` (ours: paper + cross-image saliency)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from ..errors import ConfigError
from .fields import CrossImageK, MultiObjectSize, NonNegativeFloat, NonNegativeInt, PositiveInt, SingleObjectSize
from .messages import _format_validation_error


ColorOrder = Literal["bgr", "rgb"]
#: How a cross-image score map joins the single-image saliency map (saa.saliency.cross.combine).
CombineRule = Literal["geomean", "cross", "mean", "product", "max"]


class ResolvedBehaviour(BaseModel):
    """Every behaviour switch with a concrete value (preset overlaid by explicit settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sam_color_order: ColorOrder
    saliency_color_order: ColorOrder
    saliency_neighbors: Literal["farthest", "nearest"]
    saliency_n: PositiveInt
    single_object_size: SingleObjectSize
    multi_object_size: MultiObjectSize
    rescore_gamma: NonNegativeFloat
    fusion_delta: NonNegativeFloat
    area_rule: Literal["boxes", "masks"]
    # Cross-image saliency (our addition, not the authors'; see saa.saliency.bank). Off unless a
    # preset or the config turns it on, so presets written before it existed stay valid.
    cross_image_saliency: StrictBool = False
    cross_image_combine: CombineRule = "geomean"
    cross_image_k: CrossImageK = 1
    cross_image_max_others: NonNegativeInt = 0
    cross_image_subset: Literal["similar", "spread"] = "similar"
    cross_image_aggregate: Literal["nearest", "per_image"] = "nearest"
    cross_image_fraction: float = Field(0.5, gt=0.0, le=1.0)


class BehaviourConfig(BaseModel):
    """Explicit switch settings; ``None`` (the default) takes the value from the preset."""

    model_config = ConfigDict(extra="forbid")

    sam_color_order: Optional[ColorOrder] = None
    saliency_color_order: Optional[ColorOrder] = None
    saliency_neighbors: Optional[Literal["farthest", "nearest"]] = None
    saliency_n: Optional[PositiveInt] = None
    single_object_size: Optional[SingleObjectSize] = None
    multi_object_size: Optional[MultiObjectSize] = None
    rescore_gamma: Optional[NonNegativeFloat] = None
    fusion_delta: Optional[NonNegativeFloat] = None
    area_rule: Optional[Literal["boxes", "masks"]] = None
    #: Combine the saliency map with a cross-image score map (each position against the other
    #: images of the category; needs several images: ``saa run``, or ``saa predict`` on several).
    cross_image_saliency: Optional[StrictBool] = None
    #: ``geomean``: sqrt(single x cross) of the raw maps (both 1 - cos distances); ``cross``: the
    #: cross-image map alone; ``mean`` / ``product`` / ``max`` of the two maps, each divided by its
    #: own mean first (saa.saliency.cross.combine).
    cross_image_combine: Optional[CombineRule] = None
    #: nearest positions (over the other images) averaged by the cross-image score
    cross_image_k: Optional[CrossImageK] = None
    #: compare each image with at most this many others (0 = all of them)
    cross_image_max_others: Optional[NonNegativeInt] = None
    #: which others when capped: ``similar`` (closest global descriptors) or ``spread`` (evenly spaced)
    cross_image_subset: Optional[Literal["similar", "spread"]] = None
    #: the reference rule: ``nearest`` (the k nearest positions over all compared images) or
    #: ``per_image`` (lite's rule: mean of the smallest ``cross_image_fraction`` of the per-image
    #: nearest distances, so a defect that recurs in a few images still scores high)
    cross_image_aggregate: Optional[Literal["nearest", "per_image"]] = None
    cross_image_fraction: Optional[float] = Field(None, gt=0.0, le=1.0)


#: The behaviour keys of cross-image saliency. They do not change anything while
#: ``cross_image_saliency`` is off (and are then left out of a run's resume fingerprint).
CROSS_IMAGE_KEYS = (
    "cross_image_saliency",
    "cross_image_combine",
    "cross_image_k",
    "cross_image_max_others",
    "cross_image_subset",
    "cross_image_aggregate",
    "cross_image_fraction",
)

#: Preset name -> complete behaviour dict. Add presets with :func:`register_preset`.
PRESETS: dict[str, dict[str, Any]] = {
    # What the authors' code does (the default; needed for map equality with it).
    "official": dict(
        sam_color_order="bgr",
        saliency_color_order="bgr",
        saliency_neighbors="farthest",
        saliency_n=400,
        single_object_size=256,
        multi_object_size=1024,
        rescore_gamma=3.0,
        fusion_delta=1.0,
        area_rule="boxes",
        cross_image_saliency=False,
        cross_image_combine="geomean",
        cross_image_k=1,
        cross_image_max_others=0,
        cross_image_subset="similar",
        cross_image_aggregate="nearest",
        cross_image_fraction=0.5,
    ),
}
# What the paper describes: the official behaviour with every SPEC §3.8 switch flipped.
PRESETS["paper"] = dict(
    PRESETS["official"],
    sam_color_order="rgb",
    saliency_color_order="rgb",
    saliency_neighbors="nearest",
    rescore_gamma=1.0,
    fusion_delta=0.0,
    area_rule="masks",
)
# OURS, not the authors': the paper's formulas (RGB to every model, nearest-neighbour saliency,
# the paper's re-scoring and fusion, the area rule on masks) plus cross-image saliency: the
# single-image saliency map is combined (geometric mean) with each position's distance to its
# nearest position in the 32 most similar other images of the category (saa.saliency.bank). Needs
# several images of a category (``saa run``, or ``saa predict`` on several images); on one image
# it falls back to the paper preset's saliency and says so in the prediction's notes.
PRESETS["improved"] = dict(
    PRESETS["paper"],
    cross_image_saliency=True,
    cross_image_combine="geomean",
    cross_image_k=1,
    cross_image_max_others=32,
    cross_image_subset="similar",
)


def register_preset(name: str, behaviour: Mapping[str, Any]) -> None:
    """Register (or replace) a preset; ``behaviour`` must set every switch (the ``cross_image_*``
    ones may be left out: cross-image saliency is then off)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"preset name must be a non-empty string, got {name!r}")
    try:
        resolved = ResolvedBehaviour(**dict(behaviour))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, f"preset `{name}`", ResolvedBehaviour))
    PRESETS[name] = resolved.model_dump()

