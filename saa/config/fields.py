"""Field types of the config schema, each with a user-readable error message, and the limits of
the values that size an allocation (docs/limits.md)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BeforeValidator



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
    """``dataset.options.eval_size``: what saa.evaluation.eval_size_of accepts, at most MAX_EVAL_SIZE.
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



def int_between(lo: int, hi: int):
    """An integer field ``lo <= value <= hi`` (booleans refused), with the config's messages."""
    return Annotated[int, BeforeValidator(_reject_bool), _between(lo, hi)]


def float_between(lo: float, hi: float, *, lo_open: bool = False):
    """A number field in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``; booleans refused)."""
    return Annotated[float, BeforeValidator(_reject_bool), _between(lo, hi, lo_open=lo_open)]
