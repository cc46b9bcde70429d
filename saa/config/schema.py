"""The config schema: models, categories (expert prompts and properties), dataset, the method and
its options, and the queries the rest of the package uses (``resolved_behaviour``, ``category``,
``language_prompts``, ``resolve_path``, ``to_yaml``)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from ..errors import ConfigError
from ..settings import find_model_file, weights_dirs
from .behaviour import PRESETS, BehaviourConfig, ResolvedBehaviour
from .fields import (AreaRatio, NonEmptyStr, NonNegativeInt, OutSize, PathText, PlainName, PositiveInt,
                     PromptPair, UnitFloat, _check_device, _check_eval_size, _check_suffix)
from .messages import _did_you_mean
from .yaml_text import _Dumper, _flow_pairs

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
    #: Numeric precision: fp32 (exact, default), tf32 (TF32 matmuls on CUDA; fp32 elsewhere),
    #: bf16 / fp16 (autocast on the device, the CPU included; fp16 is slow on most CPUs).
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"
    #: Images per batch of the image-level models in ``saa run`` (``--batch-size``); maps unchanged.
    batch_size: PositiveInt = 1
    #: The folder relative model paths are joined to (and only that folder). Relative to the
    #: config file's folder when written in a file, to the current directory when given with
    #: ``--set`` or in code. Unset (the default): ``$SAA_WEIGHTS_DIR`` when set, else each file is
    #: looked up in the folders of this clone's lookup order (saa.settings, docs/install.md).
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
    #: keys accepted besides the fields (named by the "valid keys" of an error message)
    extra_keys: ClassVar[tuple[str, ...]] = ("property",)

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
    #: each method's own settings, keyed by method name (e.g. ``method_options: {lite: {size: 320}}``);
    #: validated with the method's settings model when the method is built (saa.methods.build_method)
    method_options: dict[NonEmptyStr, Optional[dict[str, Any]]] = Field(default_factory=dict)
    preset: str = "official"
    out_size: OutSize = 400
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    general_prompts: list[PromptPair] = Field(default_factory=lambda: list(_GENERAL_PROMPTS))
    categories: dict[PlainName, CategoryConfig]
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)

    #: where the config came from (file name, or a description) and the --set items applied, for
    #: the messages of checks made after loading (a method's settings); not part of the config
    _source: str = PrivateAttr("configuration")
    _override_items: dict = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    @property
    def override_items(self) -> dict:
        return dict(self._override_items)

    def __eq__(self, other: object) -> bool:
        # two configs are equal when their values are (where they were read from does not count)
        if isinstance(other, SaaConfig):
            return self.__dict__ == other.__dict__
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable, as every pydantic model)

    def with_source(self, source: str, override_items: Optional[dict] = None) -> "SaaConfig":
        """Record where this config came from (returns self)."""
        self._source = str(source)
        self._override_items = dict(override_items or {})
        return self

    @field_validator("models", "behaviour", "dataset", "method_options", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # `behaviour:` with every key commented out reads as null: take the defaults.
        return {} if value is None else value

    @field_validator("method_options")
    @classmethod
    def _empty_options(cls, value: dict) -> dict:
        return {k: ({} if v is None else v) for k, v in value.items()}

    @field_validator("method")
    @classmethod
    def _method_name(cls, value: str) -> str:
        value = str(value).strip()
        if not value:
            raise ValueError("must be a method name (saa, lite, or a registered plug-in)")
        return value

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
        if not data.get("method_options"):
            data.pop("method_options", None)
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


