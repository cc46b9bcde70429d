"""Single-image saliency scoring (SPEC §3.6), pure functions on feature tensors.

The scoring uses partial selection (top-k) and matrix products in row chunks instead of a full
sort of the P x P distance matrix or per-pixel loops; the values are those of the straightforward
definitions in :mod:`saa.saliency.reference`, which the tests compare them with.
"""
from __future__ import annotations

import logging
from typing import Literal, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

Neighbors = Literal["farthest", "nearest"]


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) or (C, h, w) -> (C, h*w)."""
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError("one image at a time")
        features = features[0]
    return features.float().reshape(features.shape[0], -1)  # autocast may hand in bf16/fp16


def self_similarity_saliency(features: torch.Tensor, n: int = 400, neighbors: Neighbors = "farthest",
                             chunk: int = 4096) -> np.ndarray:
    """Single-object saliency on a feature grid -> (h, w) float32.

    ``farthest`` (official): mean of d = 0.5 (1 - cos) over the ``n`` positions farthest from each
    position. ``nearest`` (paper): mean of d = 1 - cos over its ``n`` nearest positions (itself
    included, as in a plain sort).
    """
    h, w = features.shape[-2:]
    f = _flat(features)
    p = f.shape[1]
    n = max(1, min(int(n), p))
    out = torch.empty(p, dtype=f.dtype, device=f.device)
    for start in range(0, p, chunk):
        sim = f[:, start:start + chunk].T @ f  # (rows, P)
        if neighbors == "farthest":
            d = 0.5 * (1 - sim)
            vals = torch.topk(d, n, dim=1, largest=True, sorted=False)[0]
        elif neighbors == "nearest":
            d = 1 - sim
            vals = torch.topk(d, n, dim=1, largest=False, sorted=False)[0]
        else:
            raise ValueError(f"neighbors must be 'farthest' or 'nearest', not {neighbors!r}")
        out[start:start + chunk] = vals.mean(dim=1)
    return out.view(h, w).cpu().numpy()


def cross_object_saliency(features: torch.Tensor, grid_masks: np.ndarray,
                          chunk: int = 4096) -> Optional[np.ndarray]:
    """Multi-object saliency on a feature grid -> (h, w) float64, or None with fewer than 2 objects.

    For each object mask i and each of its positions: 0.5 (1 - max cosine) to the positions of the
    OTHER object masks; positions shared with object i count as zero vectors there (cosine 0), as
    in the authors' implementation. Pixel-wise max over objects, 0 outside every object.
    """
    h, w = features.shape[-2:]
    f = _flat(features)
    masks = np.asarray(grid_masks, dtype=bool).reshape(len(grid_masks), -1)
    nonempty = [i for i in range(len(masks)) if masks[i].any()]
    if len(nonempty) < 2:
        return None
    result = np.zeros(h * w, dtype=np.float64)
    for i in nonempty:
        own = masks[i]
        others = np.zeros(h * w, dtype=bool)
        for j in nonempty:
            if j != i:
                others |= masks[j]
        other_idx = torch.from_numpy(np.flatnonzero(others & ~own)).to(f.device)
        shared = bool((others & own).any())
        own_idx = np.flatnonzero(own)
        g = f[:, other_idx]  # (C, M)
        best = torch.empty(len(own_idx), dtype=f.dtype, device=f.device)
        own_t = torch.from_numpy(own_idx).to(f.device)
        for start in range(0, len(own_idx), chunk):
            rows = f[:, own_t[start:start + chunk]].T  # (r, C)
            if g.shape[1]:
                m = (rows @ g).max(dim=1)[0]
                if shared:
                    m = torch.clamp(m, min=0.0)
            else:
                m = torch.zeros(rows.shape[0], dtype=f.dtype, device=f.device)
            best[start:start + chunk] = m
        score = np.zeros(h * w, dtype=np.float64)
        score[own_idx] = (0.5 * (1.0 - best)).cpu().numpy()
        np.maximum(result, score, out=result)
    return result.reshape(h, w)
