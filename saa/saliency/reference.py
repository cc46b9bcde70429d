"""The straightforward definitions of the saliency scores (SPEC §3.6), as the authors' code computes
them: the full P x P distance matrix sorted row by row, and per-pixel Python loops over every
object mask. :mod:`saa.saliency.single` is tested against these, and ``scripts/benchmark.py
--baseline`` times them beside it."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def self_similarity_saliency_sorted(features: torch.Tensor, n: int = 400, neighbors: str = "farthest") -> np.ndarray:
    c, h, w = features.shape[-3:]
    f = features.reshape(c, h * w)
    sim = f.T @ f
    if neighbors == "farthest":
        d = (0.5 * (1 - sim)).sort(dim=1, descending=True)[0]
    else:
        d = (1 - sim).sort(dim=1)[0]
    return d[:, :n].mean(dim=1).view(h, w).cpu().numpy()


def cross_object_saliency_loops(features: torch.Tensor, grid_masks: np.ndarray) -> Optional[np.ndarray]:
    feats = features if features.dim() == 4 else features[None]
    c, h, w = feats.shape[1:]
    masks = [np.asarray(m) for m in grid_masks]
    if sum(bool(m.any()) for m in masks) < 2:
        return None
    maps = []
    for i in range(len(masks)):
        if not masks[i].any():
            continue
        clone = feats.clone()
        own, locs = [], []
        for y in range(h):
            for x in range(w):
                if masks[i][y, x] > 0:
                    own.append(clone[:, :, y, x].clone())
                    locs.append((y, x))
                    clone[:, :, y, x] = 0.0
        flat = clone.view(c, -1)
        others = [flat[:, masks[j].reshape(-1) > 0] for j in range(len(masks)) if j != i]
        other = torch.cat(others, dim=1).T
        sim = (torch.cat(own, dim=0) @ other.T).max(dim=1)[0]
        score = (0.5 * (1.0 - sim)).cpu().numpy()
        m = np.zeros((h, w))
        for (y, x), s in zip(locs, score):
            m[y, x] = s
        maps.append(m)
    return np.max(np.stack(maps), axis=0)
