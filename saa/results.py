"""The results store of a run folder: where every per-image result lives, and the checks that keep
it honest.

Layout (``OUT`` is ``--out``)::

    OUT/<category>/maps/<stem>.npz      per image: ``map`` (out_size², float32, raw method output),
                                        ``image_score`` (raw), ``image_size``, ``fingerprint``,
                                        ``image`` (its path), ``key``, ``source`` (size and mtime of the
                                        image file when it was computed)
    OUT/<category>/maps/<stem>.json     the image's regions / notes (``Prediction.regions_dict()``),
                                        written first; a result without a readable one is recomputed
    OUT/<category>/scores.csv           key, label, raw score, normalised image score
    OUT/<category>/cross_features/      pass-1 features of a method that compares each image with the
                                        category's others, while the category is incomplete

``<stem>`` is :func:`saa.naming.stored_stem` of the sample key: injective, so no two samples can
share a file. A category must be a plain folder name and every path the store hands out is checked
to lie inside ``OUT`` (:meth:`ResultStore.path`), so nothing is written outside the output folder.

A stored result is reused only when it is readable, complete, of the current ``out_size``, made by
the same method with the same settings (``fingerprint``; for a method with references it covers
the category's image set too), for the same key, from the same image file (``source``), and its
``.json`` sidecar is readable. Anything else is recomputed. Files are written atomically (the
sidecar first), so an interrupted run loses at most the image in progress.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .errors import SaaError
from .image_io import atomic_write_bytes, atomic_write_text
from .naming import plain_name, stored_stem

__all__ = ["ImageResult", "ResultStore", "CategoryStore", "map_file_name", "map_path", "save_image_result",
           "load_image_result", "source_token", "json_default"]

log = logging.getLogger("saa.results")

_NPZ_KEYS = ("map", "image_score", "image_size", "fingerprint")
PathLike = Union[str, os.PathLike]


@dataclass
class ImageResult:
    """The raw result of one image, as stored on disk."""

    map: np.ndarray  # (out_size, out_size) float32
    image_score: float  # raw (max of the raw map unless the method says otherwise)
    image_size: tuple[int, int]  # (H, W) of the original image


def map_file_name(key: str) -> str:
    """File name (without folder) of a sample's result: :func:`saa.naming.stored_stem` + ``.npz``
    (``good/000`` -> ``good__000.npz``)."""
    return stored_stem(key) + ".npz"


def map_path(out_dir: PathLike, category: str, key: str) -> Path:
    """Where a sample's result lives in a run folder (the category checked to be a plain name)."""
    return ResultStore(out_dir).category(category).result_path(key)


def source_token(path: PathLike) -> str:
    """``"<bytes>:<mtime ns>"`` of an image file: a stored result made from another version of the
    file is stale. Empty when the file cannot be stat'ed (the read then reports the problem)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def save_image_result(path: PathLike, result: ImageResult, fingerprint: str, image: str = "",
                      regions: Optional[dict] = None, key: str = "", source: str = "") -> None:
    """Write the ``.npz`` (and the regions ``.json`` beside it, first) atomically."""
    path = Path(path)
    if regions is not None:
        atomic_write_text(path.with_name(path.name[:-4] + ".json"), json.dumps(regions, indent=1, default=json_default))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        map=np.asarray(result.map, dtype=np.float32),
        image_score=np.float64(result.image_score),
        image_size=np.asarray(result.image_size, dtype=np.int64),
        fingerprint=np.str_(fingerprint),
        image=np.str_(image),
        key=np.str_(key),
        source=np.str_(source),
    )
    atomic_write_bytes(path, buf.getvalue())


def _read(path: Path) -> Optional[dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if any(k not in z.files for k in _NPZ_KEYS):
                return None
            return {
                "map": np.asarray(z["map"], dtype=np.float32),
                "score": float(z["image_score"]),
                "size": tuple(int(v) for v in np.asarray(z["image_size"]).reshape(-1)),
                "fingerprint": str(z["fingerprint"]),
                "key": str(z["key"]) if "key" in z.files else None,
                "source": str(z["source"]) if "source" in z.files else None,
            }
    except Exception as e:  # truncated zip, bad header, wrong dtype ...
        log.debug("%s: unreadable (%s): recomputing", path, e)
        return None


def load_image_result(path: PathLike, out_size: Optional[int] = None, fingerprint: Optional[str] = None,
                      key: Optional[str] = None, source: Optional[str] = None) -> Optional[ImageResult]:
    """The stored result, or None when the file is missing, unreadable, partial or stale (another
    ``out_size``, ``fingerprint``, ``key`` or ``source`` than the ones given)."""
    path = Path(path)
    if not path.is_file():
        return None
    z = _read(path)
    if z is None:
        return None
    m, score, size = z["map"], z["score"], z["size"]
    if m.ndim != 2 or len(size) != 2 or min(size) < 1 or not np.isfinite(m).all() or not math.isfinite(score):
        return None
    if out_size is not None and m.shape != (out_size, out_size):
        return None
    if fingerprint is not None and z["fingerprint"] != fingerprint:
        return None
    if key is not None and z["key"] != key:
        return None
    if source is not None and z["source"] != source:
        return None
    return ImageResult(m, score, (size[0], size[1]))


class ResultStore:
    """A run folder. Every path it hands out lies inside it."""

    def __init__(self, out_dir: PathLike):
        self.root = Path(out_dir)

    def path(self, *parts: str) -> Path:
        """``root / parts``, refused (:class:`SaaError`) when it would resolve outside the root."""
        p = self.root.joinpath(*parts)
        root = self.root.resolve()
        resolved = p.resolve()
        if resolved != root and root not in resolved.parents:
            raise SaaError(f"refusing to write {p}: it is outside the output folder {self.root}")
        return p

    def category(self, name: str) -> "CategoryStore":
        return CategoryStore(self, plain_name(name, "category"))


class CategoryStore:
    """The results of one category of a run folder."""

    def __init__(self, store: ResultStore, name: str):
        self.name = name
        self.root = store.path(name)
        self.maps_dir = store.path(name, "maps")
        self.scores_csv = store.path(name, "scores.csv")
        self.features_dir = store.path(name, "cross_features")

    def result_path(self, key: str) -> Path:
        return self.maps_dir / map_file_name(key)

    def sidecar_path(self, key: str) -> Path:
        return self.maps_dir / (stored_stem(key) + ".json")

    def check_keys(self, keys: Iterable[str]) -> None:
        """Every key has a file of its own (also on a case-insensitive file system); a dataset
        giving two samples one key is an error naming both."""
        seen: dict[str, str] = {}
        for k in keys:
            name = map_file_name(k).lower()
            if name in seen:
                raise SaaError(f"category {self.name}: samples {seen[name]!r} and {k!r} would share the "
                               f"result file {map_file_name(k)} (names that differ only in case); rename one")
            seen[name] = k

    def load(self, key: str, out_size: int, fingerprint: str, source: Optional[str] = None) -> Optional[ImageResult]:
        """The valid stored result of ``key`` (see the module docstring), or None."""
        res = load_image_result(self.result_path(key), out_size, fingerprint, key=key, source=source)
        if res is None:
            return None
        try:
            side = json.loads(self.sidecar_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.debug("%s: sidecar missing or unreadable: recomputing", self.sidecar_path(key))
            return None
        if not isinstance(side, dict) or side.get("key", key) != key:
            return None
        return res

    def save(self, key: str, result: ImageResult, fingerprint: str, image: str = "",
             regions: Optional[dict] = None, source: str = "") -> None:
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        regions = dict(regions or {})
        regions.setdefault("key", key)
        save_image_result(self.result_path(key), result, fingerprint, image=image, regions=regions, key=key,
                          source=source)
