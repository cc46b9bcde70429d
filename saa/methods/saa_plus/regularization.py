"""Hybrid-prompt regularisation maths (SPEC §3.2–3.4, 3.7): pure functions on arrays/tensors.

No model or file access here. The float types follow the authors' implementation exactly (box
areas and area limits in float32 torch, re-scoring factor in the saliency map's dtype, fusion in
float64), because a last-bit difference can move a box across a strict threshold.
"""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch

Area = Union[float, torch.Tensor]


def box_scores(token_probs: torch.Tensor) -> torch.Tensor:
    """Box score = max token probability of each query (Q, T) -> (Q,)."""
    return token_probs.max(dim=1)[0]


def box_areas(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """Normalised area w*h of (Q, 4) cx, cy, w, h boxes."""
    return boxes_cxcywh[:, 2] * boxes_cxcywh[:, 3]


def score_mask(scores: torch.Tensor, box_threshold: float) -> torch.Tensor:
    """Boxes whose score is strictly above the threshold."""
    return scores > box_threshold


def area_mask(areas: torch.Tensor, min_area: Area, max_area: Area) -> torch.Tensor:
    """Strict area window: min_area < area < max_area (compared in the areas' dtype)."""
    return torch.bitwise_and(areas < max_area, areas > min_area)


def phrase_filtered(phrase: str, filter_phrase: Optional[str]) -> bool:
    """True when the decoded phrase contains the filter phrase (the box names the object itself)."""
    return bool(filter_phrase) and phrase.count(filter_phrase) > 0


def largest_area(areas: torch.Tensor) -> Area:
    """``object_area``: the largest surviving object area; 1.0 when nothing survived."""
    if areas.numel() == 0:
        return 1.0
    return areas.max()


def defect_max_area(object_area: Area, area_ratio: float) -> Area:
    """Upper area limit of a defect: object_area * theta_area (float32 when object_area is a tensor)."""
    return object_area * area_ratio


def to_pixel_xyxy(boxes_cxcywh: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised (cx, cy, w, h) -> pixel (x0, y0, x1, y1), float32, in the authors' operation order."""
    b = boxes_cxcywh.clone() * torch.tensor([width, height, width, height], dtype=boxes_cxcywh.dtype)
    b[:, :2] -= b[:, 2:] / 2
    b[:, 2:] += b[:, :2]
    return b


def mask_area_fractions(masks: np.ndarray) -> np.ndarray:
    """Area of each boolean mask (N, H, W) as a fraction of the image (float64)."""
    if len(masks) == 0:
        return np.zeros(0)
    h, w = masks.shape[1:]
    return masks.reshape(len(masks), -1).sum(axis=1) / float(h * w)


def mask_area_keep(fractions: np.ndarray, min_area: Area, max_area: Area) -> np.ndarray:
    """The paper's area rule on masks: min_area < fraction < max_area (float32 like the box rule)."""
    f = torch.as_tensor(np.asarray(fractions, dtype=np.float32))
    return area_mask(f, min_area, max_area).numpy()


def rescore(scores: np.ndarray, masks: np.ndarray, saliency: np.ndarray, gamma: float) -> np.ndarray:
    """s = p * exp(gamma * mean(saliency over mask)); factor 1 for an empty mask.

    The mean and exponential are taken in the saliency map's dtype (float32 for single-object
    saliency), the product in float64 — as the authors' code did.
    """
    out = np.empty(len(scores), dtype=np.float64)
    g = np.asarray(gamma, dtype=saliency.dtype)
    for i, (p, m) in enumerate(zip(scores, masks)):
        values = saliency[m]
        factor = 1.0 if values.size == 0 else np.exp(g * values.mean())
        out[i] = np.float64(p) * factor
    return out


def top_k(rescored: np.ndarray, k: int) -> np.ndarray:
    """Indices of the K highest re-scored candidates, ascending order of score (all if fewer)."""
    return np.argsort(rescored)[-k:]


def fuse(masks: np.ndarray, scores: np.ndarray, indices: np.ndarray, delta: float,
         shape: tuple[int, int]) -> np.ndarray:
    """Map = sum_k m_k s_k / (delta + sum_k m_k), float64; 0 where the denominator is 0."""
    anomaly = np.zeros(shape, dtype=np.float64)
    weight = np.full(shape, float(delta), dtype=np.float64)
    for i in indices:
        anomaly += masks[i] * scores[i]
        weight += masks[i] * 1.0
    pos = weight > 0
    anomaly[pos] /= weight[pos]
    return anomaly


def resize_map(anomaly: np.ndarray, out_size: int) -> np.ndarray:
    """Bilinear resize to out_size x out_size (aspect not kept)."""
    return cv2.resize(anomaly, (out_size, out_size))
