"""VAND 2023 challenge submission tree (zero-shot track, SPEC §7; and the few-shot track).

Per test image, under an output root::

    <root>/<experiment>/0shot/0/<category>/Unknown/classification/<stem>.txt   one float, 5 decimals, in [0, 1]
    <root>/<experiment>/0shot/0/<category>/Unknown/segmentation/<stem>.npz     np.savez_compressed, key "img",
                                                                                uint8 400x400 = round(map x 255)

The few-shot track has the same two files per image under ``<root>/<experiment>/<k>shot/<run>/``
(``shots`` = k reference images, ``run`` = the seed run that chose them; zero-shot is ``0shot/0``),
e.g. ``visa_challenge/5shot/2/candle/Unknown/segmentation/0000.npz``.

``map`` is the category-normalised anomaly map (values in [0, 1]); it is resized to 400x400
(bicubic) when it has another size. The file stem is used literally: stems containing ``-`` or
dots (``000-a.b``) are written as ``000-a.b.txt`` / ``000-a.b.npz`` (the official writer split
names on ``-`` and crashed). Every file is written atomically (temporary file + rename).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from .image_io import atomic_write_bytes, atomic_write_text

__all__ = [
    "VAND_EXPERIMENT",
    "VAND_SIZE",
    "vand_category_dir",
    "vand_paths",
    "segmentation_uint8",
    "format_score",
    "write_vand_image",
    "write_vand_category",
    "read_vand_image",
    "category_stems",
]

#: Experiment name of the official run script.
VAND_EXPERIMENT = "visa_challenge"
#: Side of the segmentation maps of a submission.
VAND_SIZE = 400


def _check_name(what: str, name: str) -> str:
    name = str(name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"invalid VAND {what} {name!r}: must be a plain file/folder name")
    return name


def _shot_parts(shots: int, run: int) -> tuple[str, str]:
    shots, run = int(shots), int(run)
    if shots < 0 or run < 0:
        raise ValueError(f"VAND shots and run must be 0 or more, got {shots} and {run}")
    if shots == 0 and run != 0:
        raise ValueError(f"the zero-shot track has one run (0), got run {run}")
    return f"{shots}shot", str(run)


def vand_category_dir(root: str | os.PathLike, category: str, experiment: str = VAND_EXPERIMENT, *,
                      shots: int = 0, run: int = 0) -> Path:
    """``<root>/<experiment>/<shots>shot/<run>/<category>/Unknown`` (zero-shot: ``0shot/0``)."""
    shot, r = _shot_parts(shots, run)
    return (Path(root) / _check_name("experiment", experiment) / shot / r
            / _check_name("category", category) / "Unknown")


def vand_paths(root: str | os.PathLike, category: str, stem: str,
               experiment: str = VAND_EXPERIMENT, *, shots: int = 0, run: int = 0) -> tuple[Path, Path]:
    """(classification .txt path, segmentation .npz path) of one image; ``stem`` is used literally."""
    stem = _check_name("file stem", stem)
    base = vand_category_dir(root, category, experiment, shots=shots, run=run)
    # string concatenation, not Path.with_suffix: a stem with dots must keep all of them
    return base / "classification" / (stem + ".txt"), base / "segmentation" / (stem + ".npz")


def segmentation_uint8(norm_map: np.ndarray, size: int = VAND_SIZE) -> np.ndarray:
    """``round(map x 255)`` as uint8 (size x size); the map is resized bicubically if needed and
    clipped to [0, 1] (bicubic overshoot, float noise)."""
    m = np.asarray(norm_map, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"a segmentation map must be a non-empty 2-D array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("segmentation map contains NaN or inf")
    if m.shape != (size, size):
        m = cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    m = np.clip(m, 0.0, 1.0)
    return np.rint(m.astype(np.float64) * 255.0).astype(np.uint8)


def format_score(score: float) -> str:
    """The image score as the challenge expects it: one float with 5 decimals, clipped to [0, 1]."""
    s = float(score)
    if not math.isfinite(s):
        raise ValueError(f"image score must be finite, got {score!r}")
    s = min(max(s, 0.0), 1.0)
    return f"{s:.5f}"


def write_vand_image(root: str | os.PathLike, category: str, stem: str, norm_map: np.ndarray,
                     score: float, experiment: str = VAND_EXPERIMENT, *, shots: int = 0,
                     run: int = 0) -> tuple[Path, Path]:
    """Write the two files of one image; returns their paths (txt, npz)."""
    txt, npz = vand_paths(root, category, stem, experiment, shots=shots, run=run)
    seg = segmentation_uint8(norm_map)
    text = format_score(score)
    buf = io.BytesIO()
    np.savez_compressed(buf, img=seg)
    atomic_write_bytes(npz, buf.getvalue())
    atomic_write_text(txt, text)
    return txt, npz


def write_vand_category(root: str | os.PathLike, category: str, stems: Sequence[str],
                        norm_maps: Iterable[np.ndarray], scores: Sequence[float],
                        experiment: str = VAND_EXPERIMENT, *, shots: int = 0, run: int = 0) -> Path:
    """Write every image of a category (``shots`` / ``run``: the few-shot track's ``<k>shot/<run>``);
    returns the category folder. Duplicate stems raise."""
    stems = [str(s) for s in stems]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"category {category!r}: duplicate file stems {dup} (VAND names files by stem)")
    scores = list(scores)
    if len(scores) != len(stems):
        raise ValueError(f"{len(stems)} stems but {len(scores)} scores")
    n = 0
    for stem, m, s in zip(stems, norm_maps, scores):
        write_vand_image(root, category, stem, m, s, experiment, shots=shots, run=run)
        n += 1
    if n != len(stems):
        raise ValueError(f"{len(stems)} stems but {n} maps")
    return vand_category_dir(root, category, experiment, shots=shots, run=run)


def read_vand_image(root: str | os.PathLike, category: str, stem: str,
                    experiment: str = VAND_EXPERIMENT, *, shots: int = 0, run: int = 0) -> tuple[float, np.ndarray]:
    """(score, uint8 segmentation) of one written image (for checks and tests)."""
    txt, npz = vand_paths(root, category, stem, experiment, shots=shots, run=run)
    score = float(txt.read_text().strip())
    with np.load(npz) as z:
        seg = z["img"]
    return score, seg


def category_stems(root: str | os.PathLike, category: str,
                   experiment: str = VAND_EXPERIMENT, *, shots: int = 0, run: int = 0) -> Optional[list[str]]:
    """Stems that have both files in a category folder (None when the folder does not exist)."""
    base = vand_category_dir(root, category, experiment, shots=shots, run=run)
    if not base.is_dir():
        return None
    txt = {p.name[:-4] for p in (base / "classification").glob("*.txt")}
    npz = {p.name[:-4] for p in (base / "segmentation").glob("*.npz")}
    return sorted(txt & npz)
