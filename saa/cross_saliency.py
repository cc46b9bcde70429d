"""Cross-image saliency: score each position of an image against the OTHER test images.

Anomalies are rare across a test set (the idea behind MuSc): a normal patch of image ``i`` has a
close match somewhere in the other images of its category, a defect patch has not. For image ``i``
and position ``p`` with unit feature ``f``::

    score(i, p) = mean over the k nearest g of (1 - cos(f, g)),
                  g ranging over ALL positions of the other images (or of a subset of them)

Pure functions on feature tensors; no model here (see :mod:`saa.lite`).

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
* the running best similarities of the image being scored, ``positions x k`` floats.

Nothing of size ``positions x (positions of all others)`` is ever built. With the defaults
(``chunk = 1024``, ``block = 16384``) a tile is 64 MiB; e.g. 100 images of 64 x 64 positions and
176 channels use ~290 MiB for the features and well under 200 MiB on top of that.

One image only: there is nothing to compare with; :func:`cross_image_scores` returns ``None`` and
callers fall back to single-image saliency (``saa.lite`` logs a warning when it does).
"""
from __future__ import annotations

import logging
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

log = logging.getLogger(__name__)

FeatureLike = Union[torch.Tensor, np.ndarray]
Subset = Literal["similar", "spread"]
CombineRule = Literal["cross", "mean", "product", "max"]
COMBINE_RULES = ("cross", "mean", "product", "max")

__all__ = ["cross_image_scores", "select_others", "global_descriptors", "combine", "COMBINE_RULES"]


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


def _blocks(flats: Sequence[torch.Tensor], idx: Sequence[int], block: int):
    """Concatenate whole images of ``idx`` into (positions, C) blocks of about ``block`` positions."""
    cur: list[torch.Tensor] = []
    size = 0
    for j in idx:
        if cur and size + flats[j].shape[0] > block:
            yield torch.cat(cur) if len(cur) > 1 else cur[0]
            cur, size = [], 0
        cur.append(flats[j])
        size += flats[j].shape[0]
    if cur:
        yield torch.cat(cur) if len(cur) > 1 else cur[0]


@torch.no_grad()
def cross_image_scores(features: Sequence[FeatureLike], k: int = 1, max_others: Optional[int] = None,
                       chunk: int = 1024, block: int = 16384, subset: Subset = "similar",
                       ) -> Optional[list[np.ndarray]]:
    """Cross-image anomaly score of every position of every image -> list of (h_i, w_i) float32.

    ``features``: one unit-norm feature grid per image, (C, h, w) (or (1, C, h, w)); the grids may
    differ in size, not in C. ``k``: number of nearest neighbours averaged. ``max_others``: compare
    each image with at most this many other images (see :func:`select_others`; None = all).
    ``chunk`` / ``block``: query rows / other positions per similarity tile (memory bound in the
    module docstring; the result does not depend on them beyond float rounding of the products).

    Returns ``None`` when there are fewer than two images (nothing to compare with): the caller
    must fall back to single-image saliency.
    """
    grids = [_as_grid(f) for f in features]
    n = len(grids)
    if n < 2:
        return None
    if len({g.shape[0] for g in grids}) != 1:
        raise ValueError("all feature grids must have the same number of channels")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    chunk, block = max(1, int(chunk)), max(1, int(block))
    flats = [g.reshape(g.shape[0], -1).T.contiguous() for g in grids]  # (P_j, C)
    desc = global_descriptors(grids) if (max_others is not None and subset == "similar") else None
    out: list[np.ndarray] = []
    for i in range(n):
        idx = select_others(n, i, max_others, subset, desc)
        n_other = sum(flats[j].shape[0] for j in idx)
        kk = min(k, n_other)
        q = flats[i]
        p = q.shape[0]
        best = torch.full((p, kk), -float("inf"), dtype=q.dtype, device=q.device)
        for blk in _blocks(flats, idx, block):
            bt = blk.T  # (C, B) view
            for s in range(0, p, chunk):
                sims = q[s:s + chunk] @ bt  # (rows, B): the only large temporary
                if kk == 1:
                    torch.maximum(best[s:s + chunk, 0], sims.max(dim=1)[0], out=best[s:s + chunk, 0])
                else:
                    top = torch.topk(sims, min(kk, sims.shape[1]), dim=1, largest=True, sorted=False)[0]
                    both = torch.cat([best[s:s + chunk], top], dim=1)
                    best[s:s + chunk] = torch.topk(both, kk, dim=1, largest=True, sorted=False)[0]
                del sims
        score = (1.0 - best).mean(dim=1)
        out.append(score.reshape(grids[i].shape[1:]).cpu().numpy().astype(np.float32))
    return out


def _scaled(m: np.ndarray) -> np.ndarray:
    mean = float(np.mean(m))
    return m / mean if mean > 0 else m


def combine(single, cross, rule: CombineRule = "cross"):
    """Merge a single-image map and a cross-image map of the same image (same shape).

    ``cross``: the cross-image map alone (``single`` may be None). For the others each map is
    first divided by its own mean (maps > 0: the result says "how many times the image's typical
    level"), which puts both kinds on one scale without erasing differences between images the way
    a per-map min-max would; then ``mean``: (a + b) / 2, ``product``: a * b, ``max``: elementwise
    max. Accepts arrays or lists of arrays (combined pairwise). Returns float32.
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
    a, b = _scaled(s), _scaled(c)
    if rule == "mean":
        r = 0.5 * (a + b)
    elif rule == "product":
        r = a * b
    else:
        r = np.maximum(a, b)
    return r.astype(np.float32)
