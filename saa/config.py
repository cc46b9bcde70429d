"""Run configuration: the YAML schema, ``--set`` overrides and readable validation errors.

A configuration file (see ``configs/*.yaml``) holds the model files, the behaviour preset
(``official`` reproduces the authors' code, ``paper`` the paper's description; SPEC §3.8;
``improved`` is ours, not the authors': ``paper`` plus cross-image saliency), the general defect
prompts and, per category, the expert prompts and property values (SPEC §3.1, §6).

Entry points used by the rest of the package::

    cfg = load_config("configs/mvtec.yaml", ["models.device=cuda", "out_size=256"])
    cfg.resolved_behaviour()          # every switch concrete
    cfg.category("bottle")            # CategoryConfig (ConfigError names the closest category)
    cfg.language_prompts("bottle")    # [(caption, filter), ...] general prompts first
    cfg.resolve_path(cfg.models.sam.checkpoint)

Every problem a user can cause is raised as :class:`saa.errors.ConfigError` with one message
that names the file, the dotted key path, the offending value and what is allowed.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from .errors import ConfigError
from .settings import WEIGHTS_DIR_ENV, find_model_file, weights_dirs  # noqa: F401 (WEIGHTS_DIR_ENV: re-exported)

__all__ = [
    "CROSS_IMAGE_KEYS",
    "PRESETS",
    "BehaviourConfig",
    "CategoryConfig",
    "ConfigError",
    "DatasetConfig",
    "GroundingConfig",
    "ModelsConfig",
    "PromptPair",
    "ResolvedBehaviour",
    "SaaConfig",
    "SaliencyConfig",
    "SamConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_property_sentence",
    "register_preset",
]

# --------------------------------------------------------------------------------------------
# Field types with user-readable error messages
# --------------------------------------------------------------------------------------------


def _reject_bool(value: Any) -> Any:
    # YAML turns `yes`/`no`/`true` into booleans; pydantic would silently read them as 1/0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _at_least(lo: float):
    def check(value):
        if value < lo:
            raise ValueError(f"must be at least {_fmt_num(lo)}")
        return value

    return AfterValidator(check)


def _between(lo: float, hi: float, *, lo_open: bool = False):
    def check(value):
        if (value <= lo if lo_open else value < lo) or value > hi:
            if lo_open:
                raise ValueError(
                    f"must be greater than {_fmt_num(lo)} and at most {_fmt_num(hi)}"
                )
            raise ValueError(f"must be between {_fmt_num(lo)} and {_fmt_num(hi)}")
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]
PositiveInt = Annotated[int, BeforeValidator(_reject_bool), _at_least(1)]
NonNegativeInt = Annotated[int, BeforeValidator(_reject_bool), _at_least(0)]
SizeInt = Annotated[int, BeforeValidator(_reject_bool), _at_least(32)]

# Upper bounds of the sizes that size an allocation (docs/limits.md). Each error says what the
# refused value would need.
#: ``out_size``: every image's map is out_size² float32 (kept for all images of a category).
MAX_OUT_SIZE = 4096
#: ``dataset.options.eval_size``: maps and masks of a whole category at eval_size² for the metrics.
MAX_EVAL_SIZE = 2048
#: ``behaviour.single_object_size``: the CNN input side; the saliency compares every position of the
#: (size/4)² feature grid with every other one.
MAX_SINGLE_OBJECT_SIZE = 1024
#: ``behaviour.multi_object_size``: the CNN input side of the multi-object saliency.
MAX_MULTI_OBJECT_SIZE = 2048
#: ``behaviour.cross_image_k``: the cross-image search keeps k similarities per feature position.
MAX_CROSS_IMAGE_K = 1024
#: Longest category / dataset ``category`` / ``vand_experiment`` name (they become folder names).
MAX_NAME_LENGTH = 128


def _gb(n_bytes: float) -> str:
    if n_bytes >= 1e12:
        return f"{n_bytes / 1e12:,.0f} TB"
    return f"{n_bytes / 1e9:.3g} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.3g} MB"


def _out_size_need(v: int) -> str:
    return f"a map is out_size² float32 per image: {v} needs {_gb(4.0 * v * v)} for each image's map"


def _eval_size_need(v: int) -> str:
    return (f"every map and mask of a category is held at eval_size² for the metrics, at least "
            f"5 bytes a pixel: {v} needs {_gb(5.0 * v * v)} per image")


def _single_size_need(v: int) -> str:
    p = (v // 4) ** 2
    return (f"the single-object saliency compares all (size/4)² = {p} feature positions with each "
            f"other: {v} needs {_gb(2 * 4.0 * min(p, 4096) * p)} for one 4096-row block of distances")


def _multi_size_need(v: int) -> str:
    p = (v // 4) ** 2
    return (f"the CNN runs on a size x size image and keeps a (size/4)² feature grid: {v} needs "
            f"{_gb(4.0 * 1792 * p)} for the wide_resnet50_2 features alone")


def _cross_k_need(v: int) -> str:
    return (f"the cross-image search keeps k similarities for each of the (single_object_size/4)² "
            f"positions: {v} needs {_gb(4.0 * v * 4096)} at single_object_size 256")


def _at_most(hi: int, need):
    def check(value):
        if value > hi:
            raise ValueError(f"must be at most {hi} ({need(value)})")
        return value

    return AfterValidator(check)


OutSize = Annotated[int, BeforeValidator(_reject_bool), _at_least(1), _at_most(MAX_OUT_SIZE, _out_size_need)]
SingleObjectSize = Annotated[int, BeforeValidator(_reject_bool), _at_least(32),
                             _at_most(MAX_SINGLE_OBJECT_SIZE, _single_size_need)]
MultiObjectSize = Annotated[int, BeforeValidator(_reject_bool), _at_least(32),
                            _at_most(MAX_MULTI_OBJECT_SIZE, _multi_size_need)]
CrossImageK = Annotated[int, BeforeValidator(_reject_bool), _at_least(1), _at_most(MAX_CROSS_IMAGE_K, _cross_k_need)]
NonNegativeFloat = Annotated[float, BeforeValidator(_reject_bool), _at_least(0)]
UnitFloat = Annotated[float, BeforeValidator(_reject_bool), _between(0, 1)]
AreaRatio = Annotated[float, BeforeValidator(_reject_bool), _between(0, 1, lo_open=True)]


def _check_plain_name(value: str) -> str:
    """A name that becomes one folder name: no path separators, no '..', no control characters."""
    if not value.strip():
        raise ValueError("must be a non-empty name")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be a plain name of at most {MAX_NAME_LENGTH} characters, "
                         f"got {len(value)} characters")
    if value in (".", "..") or any(c in "/\\:" or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be a plain name (it becomes a folder name: no '/', '\\', ':', '..', "
                         "NUL or control characters)")
    return value


#: A name used as one folder name (categories, ``dataset.options.category``, ``vand_experiment``).
PlainName = Annotated[str, AfterValidator(_check_plain_name)]


def _check_path_text(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if isinstance(value, str) and not value.strip():
        raise ValueError("must be a non-empty path")
    return value


PathText = Annotated[Union[str, Path], AfterValidator(_check_path_text)]


def _check_suffix(value: str) -> str:
    if any(c in "/\\" or ord(c) < 32 for c in value):
        raise ValueError("must be a file-name suffix such as '_mask' (no '/', '\\' or control characters)")
    return value


def _check_eval_size(value: Any) -> Any:
    """``dataset.options.eval_size``: what saa.evaluator.eval_size_of accepts, at most MAX_EVAL_SIZE.
    The value is kept as written (the evaluator reads it again)."""
    if value is None:
        return value
    bad = ValueError("must be a positive integer")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        size = int(value)
        if size != float(value) or size < 1:
            raise bad
    except (ValueError, OverflowError):
        raise bad from None
    if size > MAX_EVAL_SIZE:
        raise ValueError(f"must be at most {MAX_EVAL_SIZE} ({_eval_size_need(size)})")
    return value


def _check_prompt_pair(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(
                f"must be a 2-item [caption, filter] list, got {len(value)} item(s)"
            )
        for what, item in zip(("caption", "filter"), value):
            if not isinstance(item, str):
                raise ValueError(f"the {what} must be a string, got {item!r}")
            if not item.strip():
                raise ValueError(f"the {what} must be a non-empty string")
        return tuple(value)
    raise ValueError("must be a 2-item [caption, filter] list")


#: A ``(caption, filter)`` pair; written as a 2-item list in YAML. Strings are kept exactly
#: as written (trailing spaces included, they reach Grounding DINO unchanged).
PromptPair = Annotated[tuple[str, str], BeforeValidator(_check_prompt_pair)]

_DEVICE_RE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def _check_device(value: str) -> str:
    if not _DEVICE_RE.match(value):
        raise ValueError("must be 'cpu', 'cuda', 'cuda:<index>', 'mps' or 'auto'")
    return value


# --------------------------------------------------------------------------------------------
# Behaviour switches and presets (SPEC §3.8)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Models, categories, dataset
# --------------------------------------------------------------------------------------------


class GroundingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: NonEmptyStr = "GroundingDINO_SwinT_OGC.py"
    checkpoint: NonEmptyStr = "groundingdino_swint_ogc.pth"
    text_encoder: NonEmptyStr = "bert-base-uncased"
    box_threshold: UnitFloat = 0.1
    text_threshold: UnitFloat = 0.1
    # "fast": saa.models.dino_kernels (deformable attention as one weighted gather, image-text
    # fusion with the projections folded into the text side); "reference": the package's own code.
    # Same formulas; outputs differ by float32 rounding only.
    kernels: Literal["fast", "reference"] = "fast"
    #: "groundingdino": the rf-groundingdino package (reference); "transformers":
    #: GroundingDinoForObjectDetection, from the same files (converted in memory) or from a local
    #: save_pretrained folder named by `checkpoint` (saa/models/hf_grounding.py).
    backend: Literal["groundingdino", "transformers"] = "groundingdino"


class SamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: NonEmptyStr = "sam_vit_h_4b8939.pth"
    #: "segment_anything": the segment-anything package (reference); "transformers": SamModel /
    #: SamHQModel / Sam2Model (saa/models/hf_sam.py).
    backend: Literal["segment_anything", "transformers"] = "segment_anything"
    #: with backend transformers: "sam" (an official SAM file or a save_pretrained folder),
    #: "sam_hq" or "sam2" (a save_pretrained folder). segment_anything runs SAM only.
    variant: Literal["sam", "sam_hq", "sam2"] = "sam"

    @model_validator(mode="after")
    def _variant_needs_backend(self) -> "SamConfig":
        if self.variant != "sam" and self.backend != "transformers":
            raise ValueError(f"variant {self.variant!r} needs backend 'transformers' "
                             f"(the segment_anything backend runs SAM only)")
        return self


class SaliencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: NonEmptyStr = "wide_resnet50_2"
    checkpoint: NonEmptyStr = "wide_resnet50_2.pth"
    stages: list[NonNegativeInt] = Field(default_factory=lambda: [1, 2, 3])

    @field_validator("stages")
    @classmethod
    def _stages_non_empty(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one stage")
        return value


class ModelsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Annotated[str, AfterValidator(_check_device)] = "cpu"
    #: Numeric precision on CUDA: fp32 (exact, default), tf32 (TF32 matmuls), bf16 / fp16 (autocast).
    #: Ignored on the CPU, which always computes in fp32.
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"
    #: The folder relative model paths are joined to (and only that folder). Relative to the
    #: config file's folder when written in a file, to the current directory when given with
    #: ``--set`` or in code. Unset (the default): ``$SAA_WEIGHTS_DIR`` when set, else each file is
    #: looked up in the folder install.sh recorded, then the repository's ``weights/`` (saa.settings).
    weights_dir: Optional[NonEmptyStr] = None
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    saliency: SaliencyConfig = Field(default_factory=SaliencyConfig)

    @field_validator("grounding", "sam", "saliency", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `sam:` with nothing under it


def parse_property_sentence(sentence: str) -> dict[str, Any]:
    """Read the authors' property sentence by word position (SPEC §3.1).

    ``the image of {name} have {n} {similar|dissimilar} {object_word}, with a maximum of {K}
    anomaly. The anomaly would not exceed {area_ratio} object area.`` — split on single spaces:
    word 5 = n_objects, 6 = similar, 7 = object word (trailing comma kept), 12 = k_mask,
    19 = area_ratio.
    """
    if not isinstance(sentence, str):
        raise ConfigError(f"property sentence must be a string, got {sentence!r}")
    words = sentence.split(" ")
    if len(words) < 20:
        raise ConfigError(
            f"property sentence {sentence!r} is too short: expected the form 'the image of "
            "<name> have <n> <similar|dissimilar> <object>, with a maximum of <K> anomaly. "
            "The anomaly would not exceed <area_ratio> object area.'"
        )

    def number(index: int, what: str, kind: type) -> Any:
        word = words[index]
        try:
            return kind(word)
        except ValueError:
            raise ConfigError(
                f"property sentence {sentence!r}: word {index} ({word!r}) should be {what}"
            ) from None

    n_objects = number(5, "the number of objects (an integer)", int)
    similar = words[6]
    if similar not in ("similar", "dissimilar"):
        raise ConfigError(
            f"property sentence {sentence!r}: word 6 ({similar!r}) should be "
            "'similar' or 'dissimilar'"
        )
    obj = words[7]
    if not obj.strip():
        raise ConfigError(f"property sentence {sentence!r}: word 7 (the object) is empty")
    k_mask = number(12, "the maximum number of anomalies (an integer)", int)
    area_ratio = number(19, "the area ratio (a number)", float)
    return dict(
        n_objects=n_objects, similar=similar, object=obj, k_mask=k_mask, area_ratio=area_ratio
    )


class CategoryConfig(BaseModel):
    """Per-category expert knowledge: property values and own defect prompts."""

    model_config = ConfigDict(extra="forbid")

    #: Caption of the object (kept exactly, e.g. ``"bottle,"`` with the official comma).
    object: NonEmptyStr
    n_objects: PositiveInt
    k_mask: PositiveInt
    area_ratio: AreaRatio
    prompts: list[PromptPair] = Field(default_factory=list)
    similar: Optional[Literal["similar", "dissimilar"]] = None

    @model_validator(mode="before")
    @classmethod
    def _read_property_sentence(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "property" in data:
            data = dict(data)
            sentence = data.pop("property")
            try:
                parsed = parse_property_sentence(sentence)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            for key, value in parsed.items():
                data.setdefault(key, value)  # explicit named fields win
        return data

    @property
    def object_max_area(self) -> float:
        """Largest object box area (fraction of the image) kept in stage A."""
        return 1.0 / self.n_objects


@with_config(ConfigDict(extra="allow"))
class DatasetOptions(TypedDict, total=False):
    """Types of the known ``dataset.options`` (validated as a plain dict: only the keys given are
    kept; which keys a dataset kind accepts is checked when the dataset is built)."""

    eval_size: Annotated[Any, AfterValidator(_check_eval_size)]  # evaluator; kept as written
    vand_experiment: PlainName  # evaluator: submission folder name
    category: Optional[PlainName]  # folder
    split: str  # ksdd2
    label_from: str  # mtd
    normal_dir: Optional[PathText]  # folder
    mask_dir: Optional[PathText]
    defect_dirs: Optional[Union[PathText, list[PathText]]]
    mask_suffix: Optional[Annotated[str, AfterValidator(_check_suffix)]]
    extensions: Optional[Union[str, list[str]]]


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Optional[NonEmptyStr] = None
    root: Optional[PathText] = None
    options: DatasetOptions = Field(default_factory=dict)

    @field_validator("options", mode="before")
    @classmethod
    def _empty_options(cls, value: Any) -> Any:
        return {} if value is None else value


_GENERAL_PROMPTS: list[tuple[str, str]] = [
    ("defect on {c}", "{c}"),
    ("damage on {c}", "{c}"),
    ("flaw on {c}", "{c}"),
]


class SaaConfig(BaseModel):
    """A complete run configuration."""

    model_config = ConfigDict(extra="forbid")

    #: the method (saa.methods registry): ``saa`` (SAA+; ``full`` is an old name for it), ``lite``,
    #: or a registered plug-in; checked against the registry when a run builds it
    method: str = "saa"
    preset: str = "official"
    out_size: OutSize = 400
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    general_prompts: list[PromptPair] = Field(default_factory=lambda: list(_GENERAL_PROMPTS))
    categories: dict[PlainName, CategoryConfig]
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)

    @field_validator("models", "behaviour", "dataset", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # `behaviour:` with every key commented out reads as null: take the defaults.
        return {} if value is None else value

    @field_validator("method")
    @classmethod
    def _method_name(cls, value: str) -> str:
        value = str(value).strip()
        if not value:
            raise ValueError("must be a method name (saa, lite, or a registered plug-in)")
        return "saa" if value == "full" else value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            choices = ", ".join(repr(p) for p in PRESETS)
            hint = _did_you_mean(value, PRESETS)
            raise ValueError(f"must be one of {choices}{hint}")
        return value

    @field_validator("categories")
    @classmethod
    def _some_categories(cls, value: dict) -> dict:
        if not value:
            raise ValueError("at least one category is required")
        return value

    # -- queries used by the pipeline -------------------------------------------------------

    def resolved_behaviour(self) -> ResolvedBehaviour:
        """The preset's switches overlaid by the non-``None`` fields of ``behaviour``."""
        values = dict(PRESETS[self.preset])
        values.update(self.behaviour.model_dump(exclude_none=True))
        return ResolvedBehaviour(**values)

    def category(self, name: str) -> CategoryConfig:
        try:
            return self.categories[name]
        except KeyError:
            pass
        available = ", ".join(self.categories)
        raise ConfigError(
            f"unknown category `{name}`{_did_you_mean(name, self.categories)} "
            f"(available: {available})"
        )

    def language_prompts(self, name: str) -> list[tuple[str, str]]:
        """General prompts with ``{c}`` replaced by the category name, then the category's own.

        ``{c}`` is replaced in the category's own prompts too (the shipped prompts have none).
        """
        cat = self.category(name)
        out = []
        for caption, filt in [*self.general_prompts, *cat.prompts]:
            out.append((caption.replace("{c}", name), filt.replace("{c}", name)))
        return out

    def resolve_path(self, p: Union[str, os.PathLike]) -> Path:
        """Where the model file ``p`` is: an absolute path (``~`` expanded) unchanged; a relative
        one joined to ``models.weights_dir`` when the config sets it, else the first of
        :meth:`weights_dirs` that holds it (the first of them when none does). The full order is
        in :mod:`saa.settings`."""
        path = Path(p).expanduser()
        if path.is_absolute():
            return path
        if self.models.weights_dir is not None:
            return self.weights_dirs()[0][1] / path
        return find_model_file(path)

    def weights_dirs(self) -> list[tuple[str, Path]]:
        """The folders relative model paths are looked up in, in order, each with where it comes
        from: only ``models.weights_dir`` when the config sets it."""
        if self.models.weights_dir is not None:
            base = Path(self.models.weights_dir).expanduser()
            return [("models.weights_dir", base if base.is_absolute() else Path.cwd() / base)]
        return weights_dirs()

    def to_yaml(self, comment: Optional[str] = None) -> str:
        """YAML text that :func:`load_config` reads back to an equal config."""
        data = self.model_dump(mode="json", exclude_none=True)
        text = yaml.dump(
            _flow_pairs(data),
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
            width=100,
        )
        if comment:
            header = "".join(f"# {line}\n".replace("# \n", "#\n") for line in comment.splitlines())
            text = header + text
        return text


# --------------------------------------------------------------------------------------------
# YAML in and out
# --------------------------------------------------------------------------------------------


class _FlowList(list):
    """A list of scalars dumped in flow style (``[caption, filter]``, ``[1, 2, 3]``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList,
    lambda dumper, value: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", list(value), flow_style=True
    ),
)


def _flow_pairs(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _flow_pairs(v) for k, v in data.items()}
    if isinstance(data, list):
        if data and all(isinstance(x, (str, int, float, bool)) for x in data):
            return _FlowList(data)  # prompt pairs, stages
        return [_flow_pairs(v) for v in data]
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # let the base constructor raise its own error
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first defined on line {seen[key].line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


#: Largest config file read (a config is a short text file; /dev/zero must not be read forever).
MAX_CONFIG_BYTES = 1 << 20
#: Most values (mapping keys, values, list items) a YAML document may expand to, aliases counted
#: as many times as they are used (a "billion laughs" alias bomb of < 1 KB is refused at once).
MAX_YAML_NODES = 100_000


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_yaml_size(root: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """Number of nodes ``root`` expands to with every alias copied out (memoised over the node
    graph, so linear in the document's size); raises ValueError for a recursive alias."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            size[key] = min(limit + 1, 1 + sum(size[id(c)] for c in _yaml_children(node)))
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ValueError("a recursive alias (an anchor used inside itself)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node) if id(c) not in size)
    return size[id(root)]


def _bounded_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` (duplicate keys refused) with the alias expansion bounded by
    :data:`MAX_YAML_NODES`; YAML errors and bombs raise ConfigError, never with the value in it."""
    loader = _UniqueKeyLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            try:
                n = _expanded_yaml_size(node)
            except ValueError as exc:
                raise ConfigError(f"{source}: refused: the YAML has {exc}") from None
            if n > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source}: refused: the YAML expands to more than {MAX_YAML_NODES} values once its "
                    "aliases (*name) are copied out (an alias bomb?); a config needs a few hundred")
            return loader.construct_document(node)
        except RecursionError:
            raise ConfigError(f"{source}: refused: the YAML is nested too deeply") from None
    finally:
        loader.dispose()


def _read_config_text(path: Path) -> str:
    """The config file's text, reading at most MAX_CONFIG_BYTES + 1 bytes."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 2**20} MB (or not a regular file); "
            "a config is a short YAML text file (see configs/*.yaml)")
    return data.decode("utf-8")


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
    text = problem
    if context and "duplicate" not in problem:
        started = ""
        if context_mark is not None and mark is not None and context_mark.line != mark.line:
            started = f" started on line {context_mark.line + 1}"
        text = f"{problem} ({context}{started})"
    return f"{where}: {text}"


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> SaaConfig:
    """Read a YAML config, apply ``--set`` overrides (``a.b.c=value``) and validate."""
    path = Path(path)
    try:
        text = _read_config_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a folder, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = _bounded_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error at {_yaml_error_message(exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys to values, "
            f"got a {type(data).__name__}"
        )
    data = _weights_dir_from_file(data, path)
    cfg = config_from_dict(data, overrides, source=str(path))
    wd = cfg.models.weights_dir
    if wd is not None and not wd.startswith("~") and not Path(wd).is_absolute():
        # set with --set: relative to the current directory, fixed now (a run's config.yaml then
        # names the same folder from anywhere)
        cfg.models.weights_dir = os.path.normpath(Path.cwd() / wd)
    return cfg


def _weights_dir_from_file(data: dict, path: Path) -> dict:
    """``models.weights_dir`` of a config file made absolute against the file's folder (a copy of
    ``data``; values that are not a relative path are left for validation)."""
    models = data.get("models")
    wd = models.get("weights_dir") if isinstance(models, dict) else None
    if not isinstance(wd, str) or not wd.strip() or "\x00" in wd or wd.startswith("~") or Path(wd).is_absolute():
        return data
    base = path.expanduser().resolve().parent
    return {**data, "models": {**models, "weights_dir": os.path.normpath(base / wd)}}


def config_from_dict(
    data: Mapping[str, Any], overrides: Sequence[str] = (), source: str = "<dict>"
) -> SaaConfig:
    """Validate a config given as a dict (after applying ``overrides``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(data).__name__}")
    data = apply_overrides(dict(data), overrides)
    try:
        return SaaConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation_error(exc, source, SaaConfig, _override_keys(overrides))
        ) from None


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _split_override(item: str) -> tuple[list[str], str]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"malformed override {item!r}: expected KEY=VALUE, e.g. out_size=256")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"malformed override {item!r}: the key before '=' is empty")
    parts = key.split(".")
    if any(not part.strip() for part in parts):
        raise ConfigError(
            f"malformed override {item!r}: key {key!r} has an empty part (check the dots)"
        )
    return [part.strip() for part in parts], value


def _parse_override_value(item: str, raw: str) -> Any:
    if not raw.strip():
        return ""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"override {item[:60]!r}...: the value is longer than {MAX_CONFIG_BYTES // 2**20} MB")
    try:
        value = _bounded_yaml(raw, f"override {_short_repr(item, 80)}")
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({_yaml_error_message(exc)})"
        ) from None
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        value = float(value)  # YAML 1.1 reads `1e-3` as a string
    return value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied (value parsed as YAML)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    result = copy.deepcopy(dict(data))
    for item in overrides:
        parts, raw = _split_override(item)
        value = _parse_override_value(item, raw)
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"override {item!r}: `{where}` is {child!r}, not a mapping, so it has no "
                    f"key `{parts[depth + 1]}`"
                )
            node = child
        node[parts[-1]] = value
    return result


def _override_keys(overrides: Sequence[str]) -> dict[str, str]:
    keys = {}
    for item in overrides if not isinstance(overrides, str) else [overrides]:
        try:
            parts, _ = _split_override(item)
        except ConfigError:
            continue
        keys[".".join(parts)] = item
    return keys


# --------------------------------------------------------------------------------------------
# Pydantic errors -> one readable message
# --------------------------------------------------------------------------------------------


def _did_you_mean(word: Any, choices) -> str:
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else ""


def _unwrap(tp: Any) -> Any:
    """Strip Annotated/Optional layers from a type annotation."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_at(root: type[BaseModel], loc: Sequence[Any]) -> Optional[list[str]]:
    """Valid keys of the mapping at ``loc`` in the schema, or None when not a model."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
            continue
        origin = typing.get_origin(tp)
        if origin in (dict, Mapping):
            tp = typing.get_args(tp)[1]
        elif origin in (list, tuple, Sequence):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        keys = list(tp.model_fields)
        if tp is CategoryConfig:
            keys.append("property")
        return keys
    return None


def _loc_to_path(loc: Sequence[Any]) -> str:
    if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping key itself is invalid
        return f"{_loc_to_path(loc[:-2])} key {_short_repr(loc[-2], 60)}"
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string (quote it in YAML)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "bool_type": "must be true or false",
}


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_one(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    path = _loc_to_path(loc)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "extra_forbidden":
        valid = _keys_at(root, loc[:-1]) or []
        hint = _did_you_mean(loc[-1], valid)
        listing = f" (valid keys: {', '.join(valid)})" if valid else ""
        return f"{path}: unknown key{hint}{listing}"
    if kind == "literal_error":
        return f"{path}: must be one of {ctx.get('expected', '?')} (got {_short_repr(value)})"
    if kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
    elif kind in _TYPE_MESSAGES:
        msg = _TYPE_MESSAGES[kind]
    else:
        msg = str(err.get("msg", kind))
    if isinstance(value, (dict, list)) and len(repr(value)) > 120:
        return f"{path}: {msg}"
    return f"{path}: {msg} (got {_short_repr(value)})"


def _format_validation_error(
    exc: ValidationError,
    source: str,
    root: type[BaseModel],
    override_keys: Optional[Mapping[str, str]] = None,
) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        line = _format_one(err, root)
        path = _loc_to_path(err.get("loc", ()))
        for key, item in (override_keys or {}).items():
            if path == key or path.startswith(key + ".") or path.startswith(key + "["):
                line += f" [from --set {item}]"
                break
        lines.append(line)
    count = len(lines)
    head = f"{source}: invalid configuration ({count} problem{'s' if count != 1 else ''}):"
    return "\n".join([head, *("  " + line for line in lines)])
