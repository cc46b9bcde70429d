"""The typed records of a reference bank folder: ``manifest.json`` (:class:`BankManifest`, written
once by ``saa bank build``) and ``calibration.json`` (:class:`Calibration`, written by ``saa bank
calibrate``). Both are validated when read; a bad file is a one-line :class:`BankError` naming the
file and the first problem."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SaaError
from ..verdict import DEFECT, OK

__all__ = ["REVIEW", "VERDICTS", "bank_verdict", "BankError", "BANK_FORMAT", "MANIFEST", "CALIBRATION", "ModelFileRecord", "MethodRecord", "ImageRecord",
           "KShotRecord", "CoresetRecord", "ScoringRecord", "BankManifest", "CalibrationImage", "Calibration",
           "read_record", "record_json", "shown"]

#: version of the folder layout (a bank of another version is refused)
BANK_FORMAT = 1
MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"
REVIEW = "REVIEW"
#: the verdicts of a calibrated bank, from least to most severe
VERDICTS = (OK, REVIEW, DEFECT)


class BankError(SaaError):
    """A reference bank that cannot be used: missing, damaged, or made with other settings."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFileRecord(_Record):
    """A model file a method loads, as the bank was built with it: the path as configured, where it
    was found, and a cheap content digest (size + SHA-256 of its first and last MiB; a folder: of
    each file in it)."""

    what: str
    path: str
    resolved: str
    kind: Literal["file", "folder", "missing"]
    size: int = Field(ge=0)
    digest: str


class MethodRecord(_Record):
    """Everything about the method that changes the reference features."""

    name: str
    label: str
    #: ``method.fingerprint(category, references=None)``
    fingerprint: str
    #: the method's typed settings (``method_options.<name>``, defaults filled in)
    settings: dict[str, Any]
    #: ``method.describe()["settings"]`` (what the settings mean to a person; compared too)
    described: dict[str, Any]
    out_size: int = Field(gt=0)
    model_files: list[ModelFileRecord]


class ImageRecord(_Record):
    """One reference image: its identity (content, not name or time) and its share of the bank."""

    name: str
    path: str
    size: int = Field(ge=0)
    #: SHA-256 of the file's bytes
    sha256: str = Field(min_length=64, max_length=64)
    #: SHA-256 of the decoded RGB pixels (height, width and bytes): the same picture in another file
    pixels_sha256: str = Field(min_length=64, max_length=64)
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    #: its feature grid (rows, columns) and how many of its positions the bank keeps
    grid: tuple[int, int]
    kept: int = Field(ge=0)


class KShotRecord(_Record):
    """Where a k-shot bank's references come from."""

    k: int = Field(ge=1)
    run: int = Field(ge=0)
    seed_file: str
    seed_file_sha256: str
    ids: list[str]
    dataset_kind: str
    dataset_root: str


class CoresetRecord(_Record):
    rule: Literal["greedy k-center"] = "greedy k-center"
    #: the positions were compared after a random projection to this many dimensions (seeded)
    dims: int = Field(ge=1)
    seed: int
    seconds: float = Field(ge=0)


class ScoringRecord(_Record):
    """How a query is scored: each of its positions by the mean ``1 - cos`` to its ``k`` nearest
    kept positions of the references (all of them, or a greedy coreset of ``max_positions``)."""

    rule: Literal["nearest"] = "nearest"
    k: int = Field(ge=1)
    positions_total: int = Field(ge=0)
    positions_kept: int = Field(ge=0)
    max_positions: int = Field(ge=0)
    coreset: Optional[CoresetRecord] = None
    chunk: int = Field(ge=1)
    block: int = Field(ge=1)


class BankManifest(_Record):
    """``manifest.json``: what the bank holds and how it was made."""

    format: Literal[1] = BANK_FORMAT
    bank_id: str
    saa_version: str
    created: str
    category: str
    method: MethodRecord
    #: channels of the feature grids
    channels: int = Field(ge=1)
    #: where the features were computed (informative; not compared)
    device: str
    images: list[ImageRecord] = Field(min_length=1)
    #: inputs left out (duplicates), one line each
    skipped: list[str] = Field(default_factory=list)
    kshot: Optional[KShotRecord] = None
    scoring: ScoringRecord
    #: what the references were given as (command-line words, for people)
    source: str = ""
    #: SHA-256 of positions.npy (audit; the shapes are checked on load)
    positions_sha256: str


class CalibrationImage(_Record):
    name: str
    sha256: str
    score: float


class Calibration(_Record):
    """``calibration.json``: image thresholds set on scores of good parts only.

    Verdict of a query with image score ``s``: ``DEFECT`` when ``s >= t_defect``, ``REVIEW`` when
    ``t_review <= s < t_defect``, else ``OK`` (:func:`saa.bank.calibrate.bank_verdict`)."""

    format: Literal[1] = BANK_FORMAT
    bank_id: str
    fingerprint: str
    created: str
    saa_version: str
    #: ``images``: good images outside the bank; ``leave-one-out``: each bank image against the others
    mode: Literal["images", "leave-one-out"]
    score: str = "image score of the method (Prediction.score, raw scale)"
    false_alarm_rate: float = Field(gt=0, lt=1)
    review_rate: float = Field(gt=0, lt=1)
    t_defect: float
    t_review: float
    n: int = Field(ge=1)
    #: calibration images at or above t_defect / in the review band
    false_alarms: int = Field(ge=0)
    reviews: int = Field(ge=0)
    #: false_alarms / n and its two-sided 95 % Clopper-Pearson interval
    measured_far: float
    far_ci95: tuple[float, float]
    #: (false_alarms + 1) / (n + 1): the mean false-alarm rate on new good parts like these
    expected_far_new: float
    pixel_false_alarm_rate: Optional[float] = None
    pixel_threshold: Optional[float] = None
    notes: list[str] = Field(default_factory=list)
    images: list[CalibrationImage]


def bank_verdict(score: float, calibration: "Calibration") -> str:
    """``DEFECT`` when ``score >= t_defect``, ``REVIEW`` when ``t_review <= score < t_defect`` (or the
    score is not a number), else ``OK``."""
    s = float(score)
    if math.isnan(s):
        return REVIEW  # no number: a person must look
    if s >= calibration.t_defect:
        return DEFECT
    if s >= calibration.t_review:
        return REVIEW
    return OK


def record_json(record: BaseModel) -> str:
    """The record as JSON text; file names that are not UTF-8 (lone surrogates in Python) are
    written as ``\\udcXX`` escapes, so the file is valid UTF-8 and reads back to the same names."""
    text = json.dumps(record.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n"
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def shown(text: str) -> str:
    """``text`` printable as UTF-8 (undecodable file-name bytes as ``\\xNN``)."""
    try:
        data = str(text).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        data = str(text).encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
    return f"{loc}: {err.get('msg', 'invalid')}{more}"


def read_record(path: Path, model: type[_Record], what: str):
    """Read and validate ``path`` as ``model``; one-line :class:`BankError` otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BankError(f"{path}: missing: {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BankError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BankError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); the bank is damaged: build it again") from None
    if isinstance(data, dict) and data.get("format") not in (None, BANK_FORMAT):
        raise BankError(f"{path}: bank format {data.get('format')!r}, this saa reads format {BANK_FORMAT}; "
                        "build the bank again with this version")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BankError(f"{path}: invalid {what}: {_first_error(e)}") from None
