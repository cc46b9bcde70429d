"""Greedy coreset (k-center) subsampling of reference positions, as PatchCore does: keep ``m`` of
``N`` feature positions such that every position is close to a kept one.

Start from position 0; then repeatedly keep the position farthest (squared Euclidean distance) from
every position kept so far. Distances are measured after a seeded Gaussian random projection to
``dims`` dimensions (cheap, and distances are nearly preserved); the kept positions keep their
full features. Deterministic: the same input, ``m``, ``dims`` and ``seed`` give the same indices.
Cost: ``m`` passes over an ``N x dims`` array (for 200 lite images, N = 204,800, m = 16,384,
dims = 16: about a minute on one core).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["random_projection", "greedy_coreset"]


def random_projection(channels: int, dims: int, seed: int = 0) -> Optional[torch.Tensor]:
    """A ``channels x dims`` Gaussian matrix scaled by ``1 / sqrt(dims)`` (seeded), or None when
    ``dims >= channels`` (no projection)."""
    if dims >= channels:
        return None
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(channels, dims, generator=g, dtype=torch.float32) / float(dims) ** 0.5


@torch.no_grad()
def greedy_coreset(points: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (ascending, int64) of ``m`` rows of ``points`` (N, d) chosen greedily: each next row
    the one farthest from the rows chosen so far (ties: the lowest index). All rows when ``m >= N``."""
    x = torch.as_tensor(points, dtype=torch.float32)
    n = int(x.shape[0])
    m = int(m)
    if m < 1:
        raise ValueError(f"a coreset needs at least one position, got m={m}")
    if m >= n:
        return torch.arange(n, dtype=torch.int64)
    x = x.contiguous()
    sq = (x * x).sum(dim=1)
    nearest = torch.full((n,), float("inf"), dtype=torch.float32)
    chosen = torch.empty(m, dtype=torch.int64)
    j = 0
    for t in range(m):
        chosen[t] = j
        d = sq - 2.0 * (x @ x[j]) + sq[j]
        torch.minimum(nearest, d, out=nearest)
        nearest[j] = -1.0  # chosen: never again (rounding may leave it slightly above 0)
        j = int(torch.argmax(nearest))
    return torch.sort(chosen).values
