"""The straightforward schedule of the authors' code, kept to measure and verify the fast one.

- :class:`FullForwardDetector`: the whole Grounding DINO (Swin backbone included) once per caption.
- :func:`self_similarity_saliency_sorted`: the full P x P distance matrix sorted row by row.
- :func:`cross_object_saliency_loops`: per-pixel Python loops over every object mask.

``scripts/benchmark.py --baseline`` runs these beside the default implementation in one process
and reports the speed ratio and the largest map difference.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .models.grounding import DetectorOutput, GroundingDetector, normalize_caption


class FullForwardDetector(GroundingDetector):
    """Runs the full model (backbone included) for every caption, like the authors' code."""

    @torch.no_grad()
    def detect(self, caption: str) -> DetectorOutput:
        if self._image is None:
            raise RuntimeError("detect called before set_image")
        cap = normalize_caption(caption)
        out = self.model(self._image[None], captions=[cap])
        return DetectorOutput(caption=cap, input_ids=self.tokenize(cap), boxes=out["pred_boxes"][0].float().cpu(),
                              token_probs=out["pred_logits"].sigmoid()[0].float().cpu())

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> torch.Tensor:
        self._image = self.preprocess(rgb).to(self.device)  # the backbone runs inside every detect()
        return self._image


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
