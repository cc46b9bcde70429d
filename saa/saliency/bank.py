"""Cross-image saliency for the full pipeline (our addition, not the authors' method).

The single-image saliency of SPEC section 3.6 asks "does this patch look like the rest of THIS
image?". Cross-image saliency asks "does it look like anything in the OTHER images of the
category?" (anomalies are rare across a test set; see :mod:`saa.saliency.cross`). The ``improved``
preset combines the two (``behaviour.cross_image_*``); :class:`saa.methods.saa_plus.pipeline.SAAPipeline` does the
combining, this module provides the two passes:

* pass 1 -- :meth:`SAAPipeline.saliency_features` of every image of the category: the unit feature
  grid the single-object saliency uses (the whole image resized to ``single_object_size``, in the
  preset's colour order; for ``wide_resnet50_2`` at 256: 1792 x 64 x 64). Kept in memory
  (:meth:`CrossImageBank.from_features`) or, one file per image, in a :class:`FeatureStore` folder
  (``saa run`` keeps it under ``<out>/<category>/cross_features/`` and deletes it when every map of
  the category is written);
* pass 2 -- :meth:`CrossImageBank.scores` for image ``i``: each of its positions scored by the mean
  of ``1 - cos`` to its ``k`` nearest positions among the selected other images (all of them, or
  ``max_others`` chosen by :func:`saa.saliency.cross.select_others`), then
  :meth:`SAAPipeline.predict` with ``others=bank, index=i``.

Exactness and memory
--------------------
The search is exact (matrix products of the unit features, ``topk`` merged block by block, in
float32), with the same tiling as :func:`saa.saliency.cross.cross_image_scores`, so the scores equal
that function's. The other images are loaded (from memory or disk) one at a time and copied into
one reused block buffer, so one :meth:`CrossImageBank.scores` call holds, whatever the number of
images: the query (``P x C``), the block buffer (``max(block, P) x C``), one similarity tile
(``chunk x block``), the grid being loaded (``C x P``) and the running best values (``P x k``),
all float32. With the defaults (``chunk`` 1024, ``block`` 16384) and wide_resnet50_2 at 256
(P = 4096, C = 1792) that is about 0.25 GiB; ``scripts/bench_cross_bank.py`` measured a peak of
286 MiB above the process's resident memory on 167 images with 32 others, 283 MiB with all 166. A
:class:`FeatureStore` holds ``4 C P`` bytes per image on disk (28 MiB for wide_resnet50_2 at 256).
Compute per scored image: ``2 P C`` flops per other position (60 GFLOP per other image for
wide_resnet50_2 at 256), hence the ``improved`` preset's cap of 32 others.

Several objects per image (SPEC 3.6(b)): the cross-image score is always computed on the whole
image at ``single_object_size`` (the multi-object saliency's 1024 grid would be 16 times larger
per image); the pipeline resizes the score grid to the image and combines it with whichever
single-image map the image got (single- or multi-object), at the image resolution.
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..image_io import atomic_write_bytes
from ..naming import stored_stem
from .cross import (AGGREGATES, FeatureLike, _as_grid, combine_saliency, global_descriptors, knn_scores,
                    nearest_search, select_others)

log = logging.getLogger(__name__)

__all__ = ["CrossImageBank", "FeatureStore", "knn_scores", "combine_saliency", "SALIENCY_COMBINE_RULES",
           "scores_against"]

#: How the pipeline may join the single-image saliency map and the cross-image score map
#: (the rules of :func:`saa.saliency.cross.combine`).
from .cross import COMBINE_RULES as SALIENCY_COMBINE_RULES  # noqa: E402


class FeatureStore:
    """A folder of pass-1 feature grids, one ``<key>.npz`` per image (named by
    :func:`saa.naming.stored_stem`: ``/`` in keys becomes ``__``, ambiguous keys get a hash).

    Each file holds ``features`` (C, h, w) float32, ``descriptor`` (C,) float32 (the image's global
    descriptor, :func:`saa.saliency.cross.global_descriptors`) and ``fingerprint`` (the settings
    they were made with). Files are written atomically; a file with another fingerprint, or one
    that cannot be read, counts as missing.
    """

    def __init__(self, folder: Union[str, Path], fingerprint: str = ""):
        self.folder = Path(folder)
        self.fingerprint = str(fingerprint)

    def path(self, key: str) -> Path:
        return self.folder / (stored_stem(key) + ".npz")

    def has(self, key: str, source: Optional[str] = None) -> bool:
        """Whether valid features of ``key`` are stored (same fingerprint; with ``source``, made
        from that version of the image file: see :func:`saa.results.source_token`)."""
        try:
            with np.load(self.path(key), allow_pickle=False) as z:
                if str(z["fingerprint"]) != self.fingerprint or "features" not in z.files:
                    return False
                return source is None or ("source" in z.files and str(z["source"]) == source)
        except Exception:  # missing, partial, not an npz
            return False

    def put(self, key: str, features: FeatureLike, source: str = "") -> None:
        g = _as_grid(features).cpu()
        buf = io.BytesIO()
        np.savez(buf, features=g.numpy().astype(np.float32), descriptor=global_descriptors([g])[0].numpy(),
                 fingerprint=np.str_(self.fingerprint), source=np.str_(source))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path(key), buf.getvalue())

    def _read(self, key: str, name: str) -> torch.Tensor:
        with np.load(self.path(key), allow_pickle=False) as z:
            return torch.from_numpy(np.asarray(z[name], dtype=np.float32))

    def load(self, key: str) -> torch.Tensor:
        return self._read(key, "features")

    def descriptor(self, key: str) -> torch.Tensor:
        return self._read(key, "descriptor")

    def remove(self) -> None:
        """Delete the folder (nothing happens when it does not exist)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class CrossImageBank:
    """The features of a set of images of one category, and their cross-image scores.

    Build it from pass-1 features (a method's ``reference_features``, settings ``bank_settings()``) with
    :meth:`from_features` / :meth:`from_store`. ``k``, ``max_others`` (None = all) and ``subset``
    are those of :func:`saa.saliency.cross.select_others`; ``device`` is where the products run.
    """

    def __init__(self, loaders: Sequence[Callable[[], torch.Tensor]], descriptors: torch.Tensor, *,
                 k: int = 1, max_others: Optional[int] = None, subset: str = "similar",
                 device: Union[str, torch.device] = "cpu", chunk: int = 1024, block: int = 16384,
                 keys: Optional[Sequence[str]] = None, aggregate: str = "nearest", fraction: float = 0.5):
        if len(loaders) != len(descriptors):
            raise ValueError(f"{len(loaders)} feature grids but {len(descriptors)} descriptors")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if max_others is not None and int(max_others) < 1:
            raise ValueError(f"max_others must be >= 1 or None (all), got {max_others}")
        if subset not in ("similar", "spread"):
            raise ValueError(f"subset must be 'similar' or 'spread', not {subset!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.aggregate, self.fraction = aggregate, float(fraction)
        self._loaders = list(loaders)
        self.descriptors = torch.as_tensor(descriptors).float()
        self.k, self.subset = int(k), subset
        self.max_others = None if max_others is None else int(max_others)
        self.device = torch.device(device)
        self.chunk, self.block = int(chunk), int(block)
        self.keys = list(keys) if keys is not None else [str(i) for i in range(len(self._loaders))]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_features(cls, features: Sequence[FeatureLike], **settings) -> "CrossImageBank":
        """A bank held in memory: one unit feature grid (C, h, w) per image."""
        grids = [_as_grid(f) for f in features]
        desc = global_descriptors(grids) if grids else torch.zeros(0, 0)
        return cls([(lambda g=g: g) for g in grids], desc, **settings)

    @classmethod
    def from_store(cls, store: FeatureStore, keys: Sequence[str], **settings) -> "CrossImageBank":
        """A bank whose grids stay on disk in ``store`` (loaded one at a time when scoring)."""
        missing = [k for k in keys if not store.has(k)]
        if missing:
            raise FileNotFoundError(f"{store.folder}: no features (with fingerprint {store.fingerprint}) "
                                    f"for {len(missing)} image(s), e.g. {missing[0]}")
        desc = torch.stack([store.descriptor(k) for k in keys]) if keys else torch.zeros(0, 0)
        settings.setdefault("keys", list(keys))
        return cls([(lambda k=k: store.load(k)) for k in keys], desc, **settings)

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._loaders)

    def features(self, i: int) -> torch.Tensor:
        return self._loaders[i]()

    def others(self, i: int) -> list[int]:
        """Indices of the images image ``i`` is compared with."""
        return select_others(len(self), i, self.max_others, self.subset, self.descriptors)

    def _score(self, query: torch.Tensor, idx: Sequence[int]) -> Optional[np.ndarray]:
        return nearest_search(query, (self._loaders[j]() for j in idx), k=self.k, aggregate=self.aggregate,
                              fraction=self.fraction, chunk=self.chunk, block=self.block, device=self.device,
                              n_others=len(idx))

    def scores(self, i: int, query: Optional[FeatureLike] = None) -> Optional[np.ndarray]:
        """(h, w) float32 cross-image score grid of image ``i`` against its others; None when the
        bank holds fewer than two images (nothing to compare with). ``query``: image ``i``'s
        features if the caller has already loaded them (:meth:`features`)."""
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} outside a bank of {len(self)}")
        if len(self) < 2:
            return None
        return self._score(self.features(i) if query is None else query, self.others(i))

    def scores_for(self, features: FeatureLike) -> Optional[np.ndarray]:
        """Score grid of an image that is NOT in the bank against the bank's images (all of them,
        or the ``max_others`` chosen as for a bank member); None for an empty bank."""
        n = len(self)
        if n == 0:
            return None
        g = _as_grid(features)
        desc = torch.cat([self.descriptors, global_descriptors([g])]) if self.subset == "similar" else None
        idx = select_others(n + 1, n, self.max_others, self.subset, desc)
        return self._score(g, idx)


def scores_against(bank: Optional["CrossImageBank"], index: Optional[int],
                   query=None) -> tuple[Optional[np.ndarray], Optional[str]]:
    """One image's cross-image score grid against ``bank``, for every method: ``index`` is its place
    in the bank (``query``: its features if already loaded), or None for an image outside the bank
    (``query``: its features, or a function that makes them, called only then). Returns
    ``(grid, None)``, or ``(None, why)`` when there is nothing to compare with."""
    if bank is None:
        return None, "none were given"
    if index is not None:
        grid = bank.scores(index, query=None if callable(query) else query)
    else:
        grid = bank.scores_for(query() if callable(query) else query)
    return (grid, None) if grid is not None else (None, f"the bank holds {len(bank)} image(s)")
