"""The typed records of a run folder, and the one way they are read back.

Every file saa writes into a run folder and reads again is a typed record here (pydantic), checked
when it is read: types, finiteness, ranges and required fields. A problem is ONE line naming the
file, the field and what is wrong (:class:`RecordError`, a :class:`~saa.errors.SaaError`), never a
traceback from inside a library:

* :class:`RunResult` — ``metrics.json`` (per category a :class:`CategoryEntry`, with its
  :class:`DecisionRecord` when the category is labelled and its :class:`ReferencesRecord` when its
  images were scored against a reference bank of good parts);
* :class:`DecisionRecord` — the thresholds of a labelled category, the normalisation they are on
  (:class:`NormalisationRecord`), their provenance (method, fingerprint, out_size: required) and
  their quality (:class:`DecisionQuality`);
* :class:`ImageSidecar` — ``<category>/maps/<stem>.json``;
* :class:`ScoreRow` — one line of ``<category>/scores.csv``;
* :class:`RunState` — ``run_state.json`` (which settings the folder's files belong to, and whether
  the run that wrote them finished); :class:`LockInfo` — ``run.lock``.

JSON is read with :func:`read_json`: NaN / Infinity are refused, and numbers too large for a float
(``1e999``, a 400-digit integer) become :class:`TooLarge` markers that the number fields refuse by
name ("image_threshold is 1e999, too large for a float"), so a crafted file costs bounded work and
gives one line. The layout of the folder (which file is where) is :class:`saa.results.RunFolder`'s.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Type, TypeVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)

from .config import MAX_EVAL_SIZE, MAX_OUT_SIZE
from .config.messages import loc_path
from .errors import SaaError

__all__ = ["RecordError", "TooLarge", "read_json", "parse_json", "parse_record", "NormalisationRecord",
           "DecisionQuality", "DecisionRecord", "ReferencesRecord", "RunReferences", "CategoryEntry", "RunResult", "ImageSidecar", "ScoreRow",
           "RunState", "LockInfo", "METRIC_KEYS", "MAX_COUNT"]

#: Metric keys in table order (the values of :func:`saa.metrics.compute_all`, in percent).
METRIC_KEYS = (
    "image_auroc", "image_ap", "image_f1_max",
    "pixel_auroc", "pixel_ap", "pixel_f1_max",
    "aupro", "region_f1_max",
)
#: The largest count a record may hold (images of a run, computed / reused maps, ...).
MAX_COUNT = 10 ** 12
#: Digits of a JSON number beyond which it is too large for a float (1.8e308).
_FLOAT_DIGITS = 308


class RecordError(SaaError):
    """A record saa wrote and reads back is unreadable or not what saa writes (one line)."""


class TooLarge(str):
    """The text of a JSON number too large for a float (``1e999``, a 400-digit integer). Number
    fields refuse it by name; anywhere else it is an inert string."""


def _parse_float(text: str):
    v = float(text)
    return v if math.isfinite(v) else TooLarge(text)


def _parse_int(text: str):
    digits = text.lstrip("-")
    return int(text) if len(digits) <= _FLOAT_DIGITS else TooLarge(text)


def _no_constant(text: str):
    raise ValueError(f"{text} is not a number JSON allows")


def parse_json(text: str) -> Any:
    """``json.loads`` with bounded work: NaN / Infinity refused, numbers too large for a float kept as
    :class:`TooLarge`. Raises ``ValueError`` (JSON syntax), ``RecursionError`` (nesting)."""
    return json.loads(text, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_no_constant)


def read_json(path: Path | str, what: str, hint: str = "") -> Any:
    """The JSON value of ``path``; a one-line :class:`RecordError` naming the file when it is not
    UTF-8 JSON. ``what`` says what the file should be (``"a metrics file of `saa run`"``), ``hint``
    what to do (appended after ``; ``)."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{path}: corrupt (not UTF-8 text), not {what}{tail}") from None
    try:
        return parse_json(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: corrupt (not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}), "
                          f"not {what}{tail}") from None
    except RecursionError:
        raise RecordError(f"{path}: corrupt (nested too deeply), not {what}{tail}") from None
    except ValueError as e:  # NaN / Infinity, an integer beyond Python's digit limit
        raise RecordError(f"{path}: corrupt ({str(e)[:80]}), not {what}{tail}") from None


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, TooLarge) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validation_message(e: ValidationError) -> str:
    """The first problem of a pydantic error as ``field problem`` (and how many more)."""
    errors = e.errors(include_url=False)
    # a wrong value says more than a missing field (which often follows from the same mistake)
    errors = sorted(errors, key=lambda err: err.get("type") == "missing")
    first = errors[0]
    loc = first.get("loc", ())
    where = loc_path(loc) if loc else ""
    msg = str(first.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif first.get("type") == "missing":
        msg = "is missing (required)"
    elif first.get("type") == "extra_forbidden":
        msg = "is not a field of this record"
    else:
        msg = f"is {_short(first.get('input'))}: {msg[0].lower() + msg[1:]}" if msg else "is invalid"
    if where and msg.startswith(where + " "):
        text = msg  # the message names the field itself
    elif not where:
        text = msg
    elif msg.startswith(("is ", "must ", "has ")):
        text = f"{where} {msg}"
    else:
        text = f"{where}: {msg}"
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


M = TypeVar("M", bound=BaseModel)


def parse_record(model: Type[M], data: Any, where: str, hint: str = "") -> M:
    """``model`` from ``data`` (a parsed JSON value); a one-line :class:`RecordError`
    ``<where>: <field> <problem>[; <hint>]`` otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RecordError(f"{where}: {validation_message(e)}" + (f"; {hint}" if hint else "")) from None
    except RecursionError:
        raise RecordError(f"{where}: nested too deeply" + (f"; {hint}" if hint else "")) from None


# ---------------------------------------------------------------------------------------------
# field types


def _number(value: Any) -> float:
    if isinstance(value, TooLarge):
        raise ValueError(f"is {_short(value)}, too large for a float")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"is {_short(value)}, not a number")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"is {_short(value)}, too large for a float") from None
    if not math.isfinite(v):
        raise ValueError(f"is {_short(value)}, not a finite number")
    return v


def _opt_number(value: Any) -> Optional[float]:
    return None if value is None else _number(value)


def _count(value: Any) -> int:
    if isinstance(value, TooLarge):
        raise ValueError(f"is {_short(value)}, too large for a count")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"is {_short(value)}, not a whole number")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"is {_short(value)}, out of range (0 to {MAX_COUNT})")
    return value


def _opt_count(value: Any) -> Optional[int]:
    return None if value is None else _count(value)


def _percent(value: Any) -> Optional[float]:
    if value is None:
        return None
    v = _number(value)
    if not 0.0 <= v <= 100.0:
        raise ValueError(f"is {_short(value)}, not a percentage (0 to 100)")
    return v


def _rate(value: Any) -> Optional[float]:
    if value is None:
        return None
    v = _number(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"is {_short(value)}, not a fraction (0 to 1)")
    return v


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"is {_short(value)}, not true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or isinstance(value, TooLarge):
        raise ValueError(f"is {_short(value)}, not a text")
    return value


def _name(value: Any) -> str:
    value = _text(value)
    if not value.strip():
        raise ValueError("is empty")
    return value


def _opt_text(value: Any) -> Optional[str]:
    return None if value is None else _text(value)


Number = Annotated[float, BeforeValidator(_number)]
OptNumber = Annotated[Optional[float], BeforeValidator(_opt_number)]
Count = Annotated[int, BeforeValidator(_count)]
OptCount = Annotated[Optional[int], BeforeValidator(_opt_count)]
Percent = Annotated[Optional[float], BeforeValidator(_percent)]
Rate = Annotated[Optional[float], BeforeValidator(_rate)]
Bool = Annotated[bool, BeforeValidator(_strict_bool)]
Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, BeforeValidator(_name)]
OptText = Annotated[Optional[str], BeforeValidator(_opt_text)]


class _Record(BaseModel):
    """Unknown fields are ignored (a newer saa may add some); known ones are checked."""

    model_config = ConfigDict(extra="ignore", frozen=False)


# ---------------------------------------------------------------------------------------------
# decision


class NormalisationRecord(_Record):
    """How a category's maps were put on its normalised scale (:class:`saa.evaluation.Normalisation`)."""

    eval_size: int
    lo: Number
    hi: Number
    constant: Bool = False

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not all(k in data for k in ("eval_size", "lo", "hi")):
            kind = "a JSON object" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
            raise ValueError(f"normalisation record incomplete or not numbers (it is {kind} without "
                             "eval_size, lo and hi)")
        return data

    @field_validator("eval_size", mode="before")
    @classmethod
    def _eval_size(cls, v: Any) -> int:
        if isinstance(v, TooLarge) or (isinstance(v, int) and not isinstance(v, bool)
                                       and not 1 <= v <= MAX_EVAL_SIZE):
            raise ValueError(f"is {_short(v)}: normalisation record out of range (eval_size 1 to {MAX_EVAL_SIZE})")
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"is {_short(v)}: normalisation record incomplete or not numbers (eval_size must "
                             "be a whole number)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> "NormalisationRecord":
        if self.lo > self.hi:
            raise ValueError(f"normalisation record out of range: lo {self.lo!r} is above hi {self.hi!r} "
                             "(swapped bounds would turn every score upside down)")
        return self


class DecisionQuality(_Record):
    """How the image threshold did on the run's own images: counts, rates, the share of each
    verdict, the image AUROC. Rates are None where their denominator is 0."""

    images: Count
    normal: Count
    anomalous: Count
    ok: Count
    defect: Count
    false_alarms: Count  # normal images judged DEFECT
    misses: Count  # anomalous images judged OK
    false_alarm_rate: Rate = None  # false_alarms / normal
    miss_rate: Rate = None  # misses / anomalous
    ok_share: Rate = None  # ok / images
    defect_share: Rate = None  # defect / images
    image_auroc: Percent = None
    weak: Bool = False
    reasons: list[Text] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "DecisionQuality":
        if self.normal + self.anomalous != self.images or self.ok + self.defect != self.images:
            raise ValueError(f"counts do not add up (images {self.images}: normal {self.normal} + anomalous "
                             f"{self.anomalous}, ok {self.ok} + defect {self.defect})")
        if self.false_alarms > min(self.normal, self.defect) or self.misses > min(self.anomalous, self.ok):
            raise ValueError(f"false_alarms {self.false_alarms} / misses {self.misses} exceed the images they "
                             "count")
        for name, num, den in (("false_alarm_rate", self.false_alarms, self.normal),
                               ("miss_rate", self.misses, self.anomalous), ("ok_share", self.ok, self.images),
                               ("defect_share", self.defect, self.images)):
            want = num / den if den else None
            got = getattr(self, name)
            if (want is None) != (got is None) or (want is not None and abs(want - got) > 1e-9):
                raise ValueError(f"{name} is {got!r}, but the counts give {want!r}")
        return self


class DecisionRecord(_Record):
    """The ``decision`` of a labelled category in ``metrics.json`` (:mod:`saa.verdict`).

    A decision without its provenance (``method``, ``fingerprint``, ``out_size``) is refused: they
    are what lets ``saa predict --thresholds-from`` refuse maps made another way."""

    image_threshold: OptNumber = None
    pixel_threshold: OptNumber = None
    scale: OptText = None
    normalisation: NormalisationRecord
    method: Name
    fingerprint: Name
    out_size: int
    quality: Optional[DecisionQuality] = None

    @model_validator(mode="before")
    @classmethod
    def _provenance(cls, data: Any) -> Any:
        if isinstance(data, dict):
            missing = [k for k in ("method", "fingerprint", "out_size") if data.get(k) in (None, "")]
            if missing:
                raise ValueError(f"the decision has no {', '.join(missing)}: without its provenance saa cannot "
                                 "check that new maps are on its scale (the record was edited or made by an old "
                                 "saa); rerun `saa run` with the same --out (the stored maps are reused)")
            if "normalisation" not in data:
                raise ValueError("the decision has no normalisation record (normalisation record incomplete)")
        return data

    @field_validator("out_size", mode="before")
    @classmethod
    def _out_size(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_OUT_SIZE:
            raise ValueError(f"is {_short(v)}, not an out_size (1 to {MAX_OUT_SIZE})")
        return v


# ---------------------------------------------------------------------------------------------
# metrics.json


class Counts(_Record):
    images: Count
    normal: Count = 0
    anomalous: Count = 0
    unlabelled: Count = 0


class Verdicts(_Record):
    OK: Count = 0
    DEFECT: Count = 0


_CATEGORY_OPTIONAL = ("features_computed", "notes", "vand_dir", "decision", "verdicts", "masks_dir", "unavailable",
                      "map_fingerprint", "references")

#: how a run's references were given: ``--bank``, ``--references DIR`` or ``--k-shot K``
REFERENCE_MODES = ("bank", "references", "k_shot")


class ReferencesRecord(_Record):
    """The reference bank of good parts a category's test images were scored against (``saa run
    --bank`` / ``--references`` / ``--k-shot``): no image was compared with the other test images."""

    mode: Literal["bank", "references", "k_shot"]
    bank_id: Name
    #: the bank folder (for --references / --k-shot: OUT/<category>/bank)
    bank: Text
    #: the references' file names, in bank order, and their paths when built
    images: list[Text] = Field(default_factory=list)
    paths: list[Text] = Field(default_factory=list)
    #: k-shot: k, the seed run, the seed list and the ids it names
    k: OptCount = None
    seed_run: OptCount = None
    seed_file: OptText = None
    ids: list[Text] = Field(default_factory=list)
    #: the bank's calibration (thresholds from good parts), if it has one
    calibrated: Bool = False

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler):
        return {k: v for k, v in handler(self).items() if v not in (None, [])}


class RunReferences(_Record):
    """What the run's images were scored against, for the whole run (per category:
    :class:`ReferencesRecord`)."""

    mode: Literal["bank", "references", "k_shot"]
    k: OptCount = None
    seed_run: OptCount = None
    seeds: OptText = None
    source: OptText = None

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class CategoryEntry(_Record):
    """One category of ``metrics.json``. Optional entries are left out of the file when empty."""

    metrics: dict[str, Percent]
    counts: Counts
    computed: Count = 0
    reused: Count = 0
    features_computed: OptCount = None
    notes: list[Text] = Field(default_factory=list)
    seconds: dict[str, Number] = Field(default_factory=dict)
    vand_dir: OptText = None
    decision: Optional[DecisionRecord] = None
    verdicts: Optional[Verdicts] = None
    masks_dir: OptText = None
    #: metric key -> why it could not be computed (no mask, no anomalous image, ...)
    unavailable: dict[str, Text] = Field(default_factory=dict)
    #: the fingerprint of this category's stored maps (method settings and, for a method that compares
    #: images, the image set or the reference bank): a map with another one comes from another run
    map_fingerprint: OptText = None
    #: the reference bank of good parts the images were scored against (None: against each other / none)
    references: Optional[ReferencesRecord] = None

    @field_validator("metrics", mode="before")
    @classmethod
    def _all_metrics(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: v.get(k) for k in METRIC_KEYS} | {k: x for k, x in v.items() if k not in METRIC_KEYS}
        return v

    @model_serializer(mode="wrap")
    def _drop_empty(self, handler):
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in _CATEGORY_OPTIONAL and v in (None, [], {}))}


class DatasetInfo(_Record):
    kind: Text
    root: Text
    options: dict[str, Any] = Field(default_factory=dict)


class Totals(_Record):
    images: Count
    computed: Count = 0
    reused: Count = 0
    computed_by_all_processes: OptCount = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class VandInfo(_Record):
    root: Text
    experiment: Text
    #: ``<k>shot/<run>``: ``0shot/0`` for the zero-shot track
    track: Text = "0shot/0"


class Timings(_Record):
    total_s: Number = 0.0
    predict_s: Number = 0.0


class RunResult(_Record):
    """``metrics.json``: every number of a run (percent, full precision; None = undefined)."""

    dataset: DatasetInfo
    config_file: OptText = None
    method: Name = "saa"
    method_label: Text = ""
    method_summary: Text = ""
    method_settings: dict[str, Any] = Field(default_factory=dict)
    preset: OptText = None
    world_size: Count = 1
    device: Text = ""
    out_size: int = 400
    eval_size: int = 400
    unit: Text = "percent"
    metric_keys: list[Text] = Field(default_factory=lambda: list(METRIC_KEYS))
    labelled: Bool = True
    categories: dict[str, CategoryEntry]
    mean: dict[str, Percent] = Field(default_factory=dict)
    totals: Totals
    vand: Optional[VandInfo] = None
    timings: Timings = Field(default_factory=Timings)
    finished: Text = ""
    #: hash of what the folder's results depend on (method and its settings per category, eval size,
    #: dataset); the run state and the report compare it (absent in files of saa before 0.2)
    settings_fingerprint: OptText = None
    #: SHA-256 of the config.yaml this run wrote
    config_sha256: OptText = None
    #: lines the run printed as warnings (weak decisions, metrics that could not be computed)
    warnings: list[Text] = Field(default_factory=list)
    #: ``--bank`` / ``--references`` / ``--k-shot``: what the images were scored against (None: each other)
    references: Optional[RunReferences] = None

    @field_validator("out_size", "eval_size", mode="before")
    @classmethod
    def _size(cls, v: Any, info) -> int:
        top = MAX_OUT_SIZE if info.field_name == "out_size" else MAX_EVAL_SIZE
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise ValueError(f"is {_short(v)}, not a size (1 to {top})")
        return v

    @field_validator("mean", mode="before")
    @classmethod
    def _all_means(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: v.get(k) for k in METRIC_KEYS}
        return v

    def to_json(self) -> dict[str, Any]:
        """The JSON value written to ``metrics.json`` (optional per-category entries left out)."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# per-image sidecars and scores.csv


class ImageSidecar(_Record):
    """``<category>/maps/<stem>.json``: the image's regions and notes (``Prediction.regions_dict()``)
    with its ``key`` (absent in sidecars of early versions); free-form otherwise."""

    model_config = ConfigDict(extra="allow")

    key: OptText = None
    image: OptText = None
    label: Optional[Literal[0, 1]] = None

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or v not in (0, 1)):
            raise ValueError(f"is {_short(v)}, not 0, 1 or null")
        return v


class ScoreRow(_Record):
    """One line of ``<category>/scores.csv`` (every value is a CSV text field)."""

    key: Name
    label: Optional[Literal[0, 1]] = None
    raw_score: float
    image_score: float
    verdict: Optional[Literal["OK", "DEFECT"]] = None

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> Any:
        if v in (None, ""):
            return None
        if v not in ("0", "1", 0, 1):
            raise ValueError(f"is {_short(v)}, not 0, 1 or empty")
        return int(v)

    @field_validator("raw_score", "image_score", mode="before")
    @classmethod
    def _score(cls, v: Any) -> float:
        if isinstance(v, str):
            if len(v) > 64:
                raise ValueError(f"is {_short(v)}, not a number")
            try:
                f = float(v)
            except ValueError:
                raise ValueError(f"is {_short(v)}, not a number") from None
            if not math.isfinite(f):
                raise ValueError(f"is {_short(v)}, not a finite number")
            return f
        return _number(v)

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict(cls, v: Any) -> Any:
        if v in (None, ""):
            return None
        if v not in ("OK", "DEFECT"):
            raise ValueError(f"is {_short(v)}, not OK, DEFECT or empty")
        return v


# ---------------------------------------------------------------------------------------------
# run state and lock


class LockInfo(_Record):
    """Who holds a run folder (``run.lock``)."""

    pid: Count
    host: Text
    started: Text
    command: Text = ""


class RunState(_Record):
    """``run_state.json``: the settings the folder's files belong to and whether the run that wrote
    them finished (``running`` while it works, ``complete`` once its metrics files are written)."""

    status: Literal["running", "complete"]
    settings_fingerprint: Name
    started: Text
    finished: OptText = None
    pid: OptCount = None
    host: OptText = None
    command: Text = ""
    config_sha256: OptText = None
