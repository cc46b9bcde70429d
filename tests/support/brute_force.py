"""Straightforward definitions of the cross-image scores (saa.saliency.cross), in plain NumPy: full
distance matrices, full sorts. The fast code of saa is compared with them (tests/saliency/test_cross.py,
tests/methods/lite/test_features.py)."""
from __future__ import annotations

import numpy as np


def brute_force(feats, k, others_of):
    """Plain NumPy: all pairwise distances 1 - cos, full sort, mean of the k smallest."""
    out = []
    for i, f in enumerate(feats):
        q = f.reshape(f.shape[0], -1).T.astype(np.float64)
        g = np.concatenate([feats[j].reshape(f.shape[0], -1).T for j in others_of(i)]).astype(np.float64)
        d = np.sort(1.0 - q @ g.T, axis=1)[:, :k]
        out.append(d.mean(axis=1).reshape(f.shape[1:]))
    return out


def brute_force_per_image(feats, k, fraction, others_of):
    """Plain NumPy, "per_image": per other image the mean of its k smallest 1 - cos, then the mean
    of the ceil(fraction * R) smallest of those R per-image distances."""
    out = []
    for i, f in enumerate(feats):
        q = f.reshape(f.shape[0], -1).T.astype(np.float64)
        per = []
        for j in others_of(i):
            g = feats[j].reshape(f.shape[0], -1).T.astype(np.float64)
            d = np.sort(1.0 - q @ g.T, axis=1)[:, :k]
            per.append(d.mean(axis=1))
        per = np.sort(np.stack(per, axis=1), axis=1)
        m = int(np.ceil(fraction * per.shape[1] - 1e-9))
        out.append(per[:, :max(1, m)].mean(axis=1).reshape(f.shape[1:]))
    return out
