"""``saa prepare check``: what a dataset folder holds and what is wrong with it
(:func:`validate_dataset`)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from ..errors import DatasetError, ImageReadError
from ..image_io import _decode_quiet, read_header, read_mask
from .base import Sample, build_dataset, empty_mask_warning

#: At most this many warning lines of one kind in a check report (then a count of the others).
MAX_WARNING_LINES = 20


def _check_pair(s: Sample, decode_image: bool, problems: list[str], warnings: dict[str, list[str]]) -> None:
    """Headers (pixel limit, EXIF orientation), then the decoded image and mask of one sample."""
    files = [("image", s.image_path)] + ([("mask", s.mask_path)] if s.mask_path is not None else [])
    headers = {}
    for what, path in files:
        try:
            h = read_header(path)
        except ImageReadError as e:
            problems.append(f"unreadable {what}: {e}")
            return
        headers[what] = h
        if h.orientation not in (0, 1):
            warnings["orientation"].append(
                f"{path}: EXIF orientation {h.orientation} is ignored (saa reads images and masks as their "
                f"pixels are stored; a viewer shows this file turned: check that its "
                f"{'mask' if what == 'image' else 'image'} was drawn on the stored pixels)")
    size = (headers["image"].height, headers["image"].width)
    if decode_image:
        try:
            img = _decode_quiet(s.image_path, "color")
            size = img.shape[:2]
        except ImageReadError as e:
            problems.append(f"unreadable image: {e}")
            return
    if s.mask_path is None:
        return
    try:
        mask = read_mask(s.mask_path)
    except ImageReadError as e:
        problems.append(f"unreadable mask: {e}")
        return
    if mask.shape != tuple(size):
        problems.append(f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {size[1]}x{size[0]}: "
                        f"mask {s.mask_path}, image {s.image_path}")
    elif s.label == 1 and not mask.any():
        warnings["empty mask"].append(empty_mask_warning(s))


def _header_lines(kind: str, ds: Any, present: list[str], categories: Optional[Iterable[str]]) -> list[str]:
    """The report's first line (kind, root, categories present) and a note on absent standard ones."""
    lines = [f"dataset {kind} at {ds.root}: {len(present)} categories present ({', '.join(present)})"]
    if categories is None and ds.known_categories and len(ds.known_categories) > 1:
        absent = [c for c in ds.known_categories if c not in present]
        if absent:
            lines.append(f"note: {len(absent)} of the {len(ds.known_categories)} standard categories "
                         f"are absent: {', '.join(absent)}")
    return lines


def _counts(samples: list[Sample]) -> tuple[int, int, int, int, int]:
    """(images, normal, anomalous, unlabelled, masks) of one category's samples."""
    return (len(samples), sum(s.label == 0 for s in samples), sum(s.label == 1 for s in samples),
            sum(s.label is None for s in samples), sum(s.mask_path is not None for s in samples))


def _category_lines(ds: Any, cat: str, samples: list[Sample], warnings: dict[str, list[str]]) -> list[str]:
    """The report lines of one category; its mask files that match no image go to the warnings."""
    _, normal, bad, unknown, masks = _counts(samples)
    types = sorted({s.defect_type for s in samples})
    line = f"{cat}: {len(samples)} images ({normal} normal, {bad} anomalous"
    if unknown:
        line += f", {unknown} unlabelled"
    line += f"), {masks} masks; types: {', '.join(types)}"
    lines = [line] + ds.label_notes(cat)
    unmatched = ds.unmatched_masks(cat)
    if unmatched:
        lines.append(f"{cat}: {len(unmatched)} mask file(s) match no image and label nothing (listed as warnings)")
        warnings["unmatched mask"] += [f"mask matches no image of {cat!r} (a renamed image or mask?): {p}"
                                       for p in unmatched]
    return lines


def _decode_files(samples: list[Sample], decode: bool, problems: list[str], warnings: dict[str, list[str]]) -> None:
    """Decode every image that has a mask and its mask (with ``decode``: every image)."""
    for s in samples:
        if s.mask_path is None and not decode:
            continue
        _check_pair(s, True, problems, warnings)


def _summary_lines(totals: list[int], check_sizes: bool, decode: bool) -> list[str]:
    """The totals line and the line saying what was decoded."""
    lines = [f"total: {totals[0]} images ({totals[1]} normal, {totals[2]} anomalous"
             + (f", {totals[3]} unlabelled" if totals[3] else "") + f"), {totals[4]} masks"]
    if decode:
        lines.append("decoded: every image and mask")
    elif check_sizes:
        lines.append("decoded: every image with a mask, and its mask (--decode: every image)")
    else:
        lines.append("note: the images were not decoded; add --decode to decode every image and mask "
                     "(corrupt files, sizes, empty masks) before a long run")
    return lines


def _warning_lines(warnings: dict[str, list[str]]) -> list[str]:
    """``warning:`` lines, at most :data:`MAX_WARNING_LINES` of each kind and a count of the rest."""
    lines = []
    for kind_, items in warnings.items():
        lines += [f"warning: {w}" for w in items[:MAX_WARNING_LINES]]
        if len(items) > MAX_WARNING_LINES:
            lines.append(f"warning: ... and {len(items) - MAX_WARNING_LINES} more ({kind_})")
    return lines


def _check_failed(ds: Any, problems: list[str], lines: list[str]) -> DatasetError:
    """The error listing every problem, the report so far and the expected layout."""
    report = "\n".join(lines)
    return DatasetError(
        f"dataset check failed ({len(problems)} problem(s)):\n- " + "\n- ".join(problems)
        + f"\n\nreport:\n{report}\n\nexpected layout ({ds.name}):\n{ds.expected_layout()}"
    )


def validate_dataset(
    kind: str,
    root: str | os.PathLike,
    categories: Optional[Iterable[str]] = None,
    check_sizes: bool = False,
    decode: bool = False,
    **options: Any,
) -> list[str]:
    """Human-readable report lines on a dataset (for ``saa prepare check``).

    Lists each category with its normal / anomalous / unlabelled image counts and mask count.
    With ``check_sizes`` every image that has a mask and its mask are decoded (as a run reads them)
    and their sizes compared; with ``decode`` every image is decoded too. Either way the headers are
    checked against the pixel limit, and ``warning:`` lines name anomalous images whose mask is empty
    and files with an EXIF orientation tag (ignored for images and masks alike), and list the mask
    files that match no image (they label nothing: a renamed image or mask).
    Raises DatasetError with every problem found (and the report so far) when something is wrong.
    """
    ds = build_dataset(kind, root, **options)
    ds.warn_unmatched_masks = False  # listed below instead
    present = ds.categories()
    cats = list(categories) if categories is not None else present
    lines = _header_lines(kind, ds, present, categories)
    problems: list[str] = []
    warnings: dict[str, list[str]] = {"unmatched mask": [], "empty mask": [], "orientation": []}
    totals = [0, 0, 0, 0, 0]
    for cat in cats:
        try:
            samples = ds.samples(cat)
        except DatasetError as e:
            problems.append(str(e).split("\n\n", 1)[0])
            continue
        lines += _category_lines(ds, cat, samples, warnings)
        totals = [t + v for t, v in zip(totals, _counts(samples))]
        if check_sizes or decode:
            _decode_files(samples, decode, problems, warnings)
    lines += _summary_lines(totals, check_sizes, decode) + _warning_lines(warnings)
    if problems:
        raise _check_failed(ds, problems, lines)
    return lines
