"""Cross-image saliency: score each position of an image against the OTHER test images.

Anomalies are rare across a test set (the idea behind MuSc): a normal patch of image ``i`` has a
close match somewhere in the other images of its category, a defect patch has not. For image ``i``
and position ``p`` with unit feature ``f``, two ways to aggregate (``aggregate=``):

``"nearest"`` (default)::

    score(i, p) = mean over the k nearest g of (1 - cos(f, g)),
                  g ranging over ALL positions of the other images (or of a subset of them)

``"per_image"`` (MuSc's "interval average" of per-image nearest distances)::

    d_j(p)      = mean over the k nearest g of image j of (1 - cos(f, g)),  for each other image j
    score(i, p) = mean of the ceil(fraction * R) smallest d_j(p)            (R = number of others)

``"nearest"`` fails when a kind of defect recurs in the set: one similar defect in ANY other image
is enough to make a defect patch look normal. ``"per_image"`` asks for a close match in at least a
``fraction`` of the other images, so a defect that recurs in fewer than about that fraction of the
images still scores high. On the 492 real MTD images (80 % defective; 23 % have blowholes, 20 % uneven
surfaces), with the lite defaults (:mod:`saa.methods.lite`): image AUROC 56 -> 62, AUPRO 37.5 -> 45.2 and
the pixel AUROC of each small-defect class +2 to +6 points over ``"nearest"`` with the same others.

Pure functions on feature tensors; no model here (see :mod:`saa.methods.lite`).

Exactness and memory
--------------------
The search is exact: cosine similarities are matrix products of the unit features, and the k
nearest are found with ``topk`` (for ``k = 1``: a running ``max``), merged block by block. Since
``1 - s`` is monotone, the k largest similarities give exactly the k smallest distances.

Memory of one call of :func:`cross_image_scores`, besides the features themselves (float32):

* one block of the other images' features, ``block x C`` floats (the others' positions are taken
  ``block`` positions at a time, whole images at a time, so a block holds at most
  ``max(block, positions of one image)`` positions);
* one similarity tile, ``chunk x block`` floats (``chunk`` query positions against one block),
  plus a ``topk`` result of ``chunk x k``;
* the running best similarities of the image being scored, ``positions x k`` floats
  (``"per_image"``: the per-image distances ``d_j``, ``positions x R`` floats instead).

Nothing of size ``positions x (positions of all others)`` is ever built. With the defaults
(``chunk = 1024``, ``block = 16384``) a tile is 64 MiB; e.g. 100 images of 64 x 64 positions and
176 channels use ~290 MiB for the features and well under 200 MiB on top of that.

One image only: there is nothing to compare with; :func:`cross_image_scores` returns ``None`` and
callers fall back to single-image saliency (lite logs a warning when it does).
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Literal, Optional, Sequence, Union

import numpy as np
import torch

log = logging.getLogger(__name__)

FeatureLike = Union[torch.Tensor, np.ndarray]
Subset = Literal["similar", "spread"]
CombineRule = Literal["geomean", "cross", "mean", "product", "max"]
#: How a single-image saliency map and a cross-image score map are joined (:func:`combine`).
COMBINE_RULES = ("cross", "mean", "product", "max", "geomean")
Aggregate = Literal["nearest", "per_image"]
AGGREGATES = ("nearest", "per_image")

__all__ = ["cross_image_scores", "nearest_search", "knn_scores", "select_others", "global_descriptors",
           "combine", "combine_saliency", "pool_features", "merge_nearest", "flat_positions", "COMBINE_RULES",
           "AGGREGATES"]


def _as_grid(f: FeatureLike) -> torch.Tensor:
    """(C, h, w) or (1, C, h, w) tensor/array -> float32 torch tensor (C, h, w)."""
    t = torch.as_tensor(f)
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"features must be (C, h, w) or (1, C, h, w), got {tuple(t.shape)}")
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"features must be (C, h, w) or (1, C, h, w), got {tuple(t.shape)}")
    return t.float()


def global_descriptors(grids: Sequence[torch.Tensor]) -> torch.Tensor:
    """One unit vector per image: the mean of its position features, L2-normalised -> (N, C)."""
    d = torch.stack([g.reshape(g.shape[0], -1).mean(dim=1) for g in grids])
    return torch.nn.functional.normalize(d, dim=1)


def select_others(n: int, i: int, max_others: Optional[int] = None, subset: Subset = "similar",
                  descriptors: Optional[torch.Tensor] = None) -> list[int]:
    """Indices of the images image ``i`` is compared with (sorted ascending, deterministic).

    All other images when ``max_others`` is None or >= n - 1. Otherwise ``max_others`` of them:

    * ``"similar"``: the ones whose global descriptor (see :func:`global_descriptors`) is closest
      (highest cosine) to image i's; ties broken by index. Needs ``descriptors``.
    * ``"spread"``: evenly spaced through the others in index order.
    """
    others = [j for j in range(n) if j != i]
    if max_others is None or max_others >= len(others):
        return others
    m = int(max_others)
    if m < 1:
        raise ValueError(f"max_others must be >= 1 or None, got {max_others}")
    if subset == "spread":
        pos = np.unique(np.round(np.linspace(0, len(others) - 1, m)).astype(int))
        return [others[p] for p in pos]
    if subset == "similar":
        if descriptors is None:
            raise ValueError("subset='similar' needs the global descriptors")
        sims = (descriptors[others] @ descriptors[i]).double().cpu().numpy()
        order = sorted(range(len(others)), key=lambda t: (-sims[t], others[t]))[:m]
        return sorted(others[t] for t in order)
    raise ValueError(f"subset must be 'similar' or 'spread', not {subset!r}")


def flat_positions(g: torch.Tensor) -> torch.Tensor:
    """(C, h, w) grid -> (h*w, C) contiguous: one row per position (what the search compares)."""
    return g.reshape(g.shape[0], -1).T.contiguous()


@torch.no_grad()
def merge_nearest(best: torch.Tensor, q: torch.Tensor, blk: torch.Tensor, chunk: int) -> None:
    """Fold one block of other positions into the running nearest-neighbour similarities, in place.

    ``best``: (P, k) the k largest cosine similarities of each query row found so far (-inf where
    none yet); ``q``: (P, C) unit query features; ``blk``: (B, C) unit features of other positions.
    ``chunk`` query rows at a time, so the only large temporary is one ``chunk x B`` tile.
    """
    k = best.shape[1]
    bt = blk.T  # (C, B) view
    for s in range(0, q.shape[0], chunk):
        sims = q[s:s + chunk] @ bt
        if k == 1:
            torch.maximum(best[s:s + chunk, 0], sims.max(dim=1)[0], out=best[s:s + chunk, 0])
        else:
            top = torch.topk(sims, min(k, sims.shape[1]), dim=1, largest=True, sorted=False)[0]
            both = torch.cat([best[s:s + chunk], top], dim=1)
            best[s:s + chunk] = torch.topk(both, k, dim=1, largest=True, sorted=False)[0]
        del sims


def _fold_per_image(per: torch.Tensor, col: int, q: torch.Tensor, blk: torch.Tensor,
                    bounds: Sequence[tuple[int, int]], k: int, chunk: int) -> None:
    """``"per_image"``: each image's (rows ``bounds`` of ``blk``) mean 1 - cos to its k nearest,
    written into columns ``col, col + 1, ...`` of ``per`` (P, R)."""
    bt = blk.T
    for s in range(0, q.shape[0], chunk):
        sims = q[s:s + chunk] @ bt  # (rows, B)
        for c, (a, b) in enumerate(bounds):
            part = sims[:, a:b]
            kk = min(k, b - a)
            if kk == 1:
                best = part.max(dim=1)[0]
            else:
                best = torch.topk(part, kk, dim=1, largest=True, sorted=False)[0].mean(dim=1)
            per[s:s + chunk, col + c] = 1.0 - best
        del sims


@torch.no_grad()
def nearest_search(query: FeatureLike, others: Iterable[FeatureLike], *, k: int = 1,
                   aggregate: Aggregate = "nearest", fraction: float = 0.5, chunk: int = 1024,
                   block: int = 16384, device: Union[str, torch.device, None] = None,
                   n_others: Optional[int] = None) -> Optional[np.ndarray]:
    """THE k-nearest search of cross-image saliency: score every position of ``query`` against
    ``others`` (see the module docstring for ``aggregate`` / ``fraction``) -> (h, w) float32, or
    None when ``others`` is empty.

    ``query``: a unit feature grid (C, h, w); ``others``: unit grids with the same C, consumed one
    at a time (a generator that loads them keeps memory bounded). Whole grids are copied into one
    reused buffer of about ``block`` positions, compared ``chunk`` query rows at a time; the block
    grouping depends only on the grid sizes, so the same inputs always give the same arithmetic.
    ``n_others``: how many grids ``others`` yields (needed up front by ``"per_image"``; counted
    when ``others`` is a sequence).
    """
    k, chunk, block = int(k), max(1, int(chunk)), max(1, int(block))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    g = _as_grid(query)
    shape = g.shape[1:]
    dev = torch.device(device) if device is not None else g.device
    q = flat_positions(g).to(dev)
    del g
    p, c = q.shape
    per_image = aggregate == "per_image"
    if per_image:
        if n_others is None:
            others = list(others)
            n_others = len(others)
        per = torch.empty((p, int(n_others)), dtype=q.dtype, device=dev)
    else:
        best = torch.full((p, k), -float("inf"), dtype=q.dtype, device=dev)

    buf: Optional[torch.Tensor] = None
    size = total = col = 0
    bounds: list[tuple[int, int]] = []

    def flush():
        nonlocal size, col, bounds
        if per_image:
            _fold_per_image(per, col, q, buf[:size], bounds, k, chunk)
            col += len(bounds)
        else:
            merge_nearest(best, q, buf[:size], chunk)
        size, bounds = 0, []

    for other in others:
        o = _as_grid(other)
        del other
        if o.shape[0] != c:
            raise ValueError(f"feature grids differ in channels: {c} vs {o.shape[0]}")
        pj = o.shape[1] * o.shape[2]
        if size and size + pj > block:
            flush()
        if buf is None or buf.shape[0] < size + pj:
            grown = torch.empty(max(block, size + pj), c, dtype=q.dtype, device=dev)
            if size:
                grown[:size] = buf[:size]
            buf = grown
        buf[size:size + pj] = o.reshape(c, pj).T
        del o
        bounds.append((size, size + pj))
        size += pj
        total += pj
    if size:
        flush()
    del buf
    if total == 0:
        return None
    if per_image:
        if col != per.shape[1]:
            raise ValueError(f"n_others={per.shape[1]} but {col} grids were given")
        m = max(1, math.ceil(fraction * col - 1e-9))
        score = per.mean(dim=1) if m >= col else torch.topk(per, m, dim=1, largest=False, sorted=False)[0].mean(dim=1)
    else:
        if total < k:  # fewer other positions than k: average the ones there are
            best = torch.topk(best, total, dim=1, largest=True, sorted=False)[0]
        score = (1.0 - best).mean(dim=1)
    return score.reshape(shape).cpu().numpy().astype(np.float32)


def knn_scores(query: FeatureLike, others: Iterable[FeatureLike], k: int = 1, chunk: int = 1024,
               block: int = 16384, device: Union[str, torch.device, None] = None) -> Optional[np.ndarray]:
    """Mean ``1 - cos`` of each query position to its ``k`` nearest positions among ``others``
    (:func:`nearest_search` with ``aggregate="nearest"``)."""
    return nearest_search(query, others, k=k, chunk=chunk, block=block, device=device)


def pool_features(f: FeatureLike, pool: int) -> torch.Tensor:
    """Local aggregation: mean of the unit features over ``pool x pool`` cells (stride ``pool``;
    a partial last row / column is averaged over the cells it has), re-normalised -> (C, h', w').

    Like PatchCore's / MuSc's neighbourhood aggregation it makes a position describe a small patch
    rather than one cell, and it divides the cost of a cross-image search by ``pool ** 4``.
    ``pool = 1`` returns the grid unchanged (as float32).
    """
    g = _as_grid(f)
    pool = int(pool)
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    if pool == 1:
        return g
    p = torch.nn.functional.avg_pool2d(g[None], pool, stride=pool, ceil_mode=True, count_include_pad=False)[0]
    return torch.nn.functional.normalize(p, dim=0)



@torch.no_grad()
def cross_image_scores(features: Sequence[FeatureLike], k: int = 1, max_others: Optional[int] = None,
                       chunk: int = 1024, block: int = 16384, subset: Subset = "similar",
                       aggregate: Aggregate = "nearest", fraction: float = 0.5,
                       ) -> Optional[list[np.ndarray]]:
    """Cross-image anomaly score of every position of every image -> list of (h_i, w_i) float32.

    ``features``: one unit-norm feature grid per image, (C, h, w) (or (1, C, h, w)); the grids may
    differ in size, not in C. ``k``: number of nearest neighbours averaged (``"per_image"``: within
    each other image). ``max_others``: compare each image with at most this many other images (see
    :func:`select_others`; None = all). ``aggregate`` / ``fraction``: ``"nearest"`` (k nearest over
    all positions of all the others) or ``"per_image"`` (mean of the ``ceil(fraction * R)``
    smallest per-image distances), see the module docstring. ``chunk`` / ``block``: query rows /
    other positions per similarity tile (memory bound in the module docstring; the result does not
    depend on them beyond float rounding of the products).

    Returns ``None`` when there are fewer than two images (nothing to compare with): the caller
    must fall back to single-image saliency. Each image is scored by :func:`nearest_search`, as
    :class:`saa.saliency.bank.CrossImageBank` does, so the two agree.
    """
    grids = [_as_grid(f) for f in features]
    n = len(grids)
    if n < 2:
        return None
    if len({g.shape[0] for g in grids}) != 1:
        raise ValueError("all feature grids must have the same number of channels")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    desc = global_descriptors(grids) if (max_others is not None and subset == "similar") else None
    out: list[np.ndarray] = []
    for i in range(n):
        idx = select_others(n, i, max_others, subset, desc)
        out.append(nearest_search(grids[i], [grids[j] for j in idx], k=k, aggregate=aggregate,
                                  fraction=fraction, chunk=chunk, block=block))
    return out


def _scaled(m: np.ndarray) -> np.ndarray:
    mean = float(np.mean(m))
    return m / mean if mean > 0 else m


def combine(single, cross, rule: CombineRule = "cross"):
    """Merge a single-image map and a cross-image map of the same image (same shape) -> float32.
    The one set of combine rules of both methods (lite mode and the ``improved`` preset).

    ``geomean`` (the ``improved`` preset): ``sqrt(single * cross)`` of the raw maps (negative
    rounding noise clipped to 0). Both maps are ``1 - cos`` distances, so the result keeps that
    unit: a position scores high only when it is unlike its own image AND unlike the other
    images, an image whose patches all have close matches elsewhere stays low everywhere (the
    image-level signal the re-scoring ``exp(gamma * mean saliency)`` needs), and a multi-object map's
    zeros outside the objects stay zero.
    ``cross``: the cross-image map alone (``single`` may be None). For ``mean`` / ``product`` /
    ``max`` each map is first divided by its own mean (maps > 0: the result says "how many times
    the image's typical level"), which puts both kinds on one scale without erasing differences
    between images the way a per-map min-max would; then ``mean``: (a + b) / 2, ``product``: a * b,
    ``max``: elementwise max. Accepts arrays or lists of arrays (combined pairwise).
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"combine rule must be one of {COMBINE_RULES}, not {rule!r}")
    if isinstance(cross, (list, tuple)):
        singles = single if single is not None else [None] * len(cross)
        if len(singles) != len(cross):
            raise ValueError("single and cross lists differ in length")
        return [combine(s, c, rule) for s, c in zip(singles, cross)]
    c = np.asarray(cross, dtype=np.float32)
    if rule == "cross":
        return c.copy()
    if single is None:
        raise ValueError(f"combine rule {rule!r} needs the single-image map")
    s = np.asarray(single, dtype=np.float32)
    if s.shape != c.shape:
        raise ValueError(f"single and cross maps differ in shape: {s.shape} vs {c.shape}")
    if rule == "geomean":
        return np.sqrt(np.maximum(s, 0) * np.maximum(c, 0)).astype(np.float32)
    a, b = _scaled(s), _scaled(c)
    if rule == "mean":
        r = 0.5 * (a + b)
    elif rule == "product":
        r = a * b
    else:
        r = np.maximum(a, b)
    return r.astype(np.float32)


#: The name the pipeline used for :func:`combine` (same function).
combine_saliency = combine
