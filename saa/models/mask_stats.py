"""Exact statistics of SAM's full-size masks without making every full-size mask.

A refiner's full-size mask is ``upscale_logits(low) > 0``: the decoder's low-resolution logits
(e.g. 256 x 256) through bilinear resizes (and a crop) to the image size. The resizes are
separable and every full-size logit is a combination, with non-negative weights, of a few
low-resolution logits, its *support*: ``full[y, x] = sum_ij R[y, i] C[x, j] low[i, j]``. So:

1. A pixel whose whole support is >= ``POSITIVE_FLOOR`` is > 0, one whose support is all
   <= ``-POSITIVE_FLOOR`` is < 0, whatever the float32 rounding: products of same-sign values
   with non-negative weights, and their sums, keep the sign (the floor keeps them clear of
   underflow; exact 0 counts as "not > 0", like ``logits > 0``). Such pixels are counted in
   blocks (all pixels that read the same low-resolution window), never computed.
2. The other pixels, near the zero crossing, get ``full[y, x]`` in float64 from the weights.
   Torch's float32 value is within ``ROUNDING_BOUND`` x (largest support magnitude) of it (a few
   roundings of 2**-24 each, with 4x margin), so outside that bound the sign is torch's.
3. The few pixels inside the bound get torch's own value: their supports are copied into shared
   canvases (low-resolution arrays, one candidate per window) and the canvases go through
   ``upscale_logits`` itself. A full-size value depends only on its support (other inputs meet
   weight 0), so this is bit for bit what the full computation gives.

The weights R and C are not derived from a formula: they are measured by running the refiner's
own ``upscale_logits`` on probe inputs (one-hot classes of the row / column index modulo 8, and
a ramp that places them), so they are what the installed torch computes, through the same call.
A geometry is used only after a self-check (smooth, near-zero and tie-heavy random logits, all
through the classification: the same masks pixel for pixel as ``upscale_logits(low) > 0``); otherwise, and for a candidate with
non-finite logits, the full-size logits are computed as before.

Counts are exact integers and masks exactly the pixels of ``upscale_logits(low) > 0``. Saliency
sums are accumulated in float64; the straightforward ``saliency[mask].mean()`` accumulates in
float32 (numpy's pairwise sum, relative error up to ~1e-6), so means agree to that.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

__all__ = ["AxisMap", "MaskGeometry", "SaliencyBlocks", "probe_geometry", "saliency_blocks", "mask_stats",
           "make_masks", "verify_geometry", "POSITIVE_FLOOR", "ROUNDING_BOUND"]

UpscaleLogits = Callable[[torch.Tensor], torch.Tensor]  # (n, 1, h, w) -> (n, 1, H, W) float

#: a support value counts as surely positive (negative) from this magnitude on
POSITIVE_FLOOR = 1e-30
#: |torch's float32 value - the float64 value| <= ROUNDING_BOUND * max |support| + 1e-37
ROUNDING_BOUND = 2.0 ** -19
_CLASSES = 8  # probe classes: a support may span at most 8 low-resolution rows / columns
#: above this fraction of pixels near a crossing, a chunk's full-size logits are computed instead
DENSE_FRACTION = 0.02
_OWN_CANVAS = 32  # undecided pixels above which a candidate's own logits are upscaled whole
_CHUNK = 16  # candidates classified at once (bounds the memory of the per-row tables)


# ------------------------------------------------------------------ geometry (probed)
@dataclass(frozen=True)
class AxisMap:
    """How one axis of the full-size logits reads the low-resolution axis."""

    start: np.ndarray  # (n_out,) first low index of each output's window
    weights: np.ndarray  # (n_out, L) float64 weights over low[start : start + L] (0 outside the support)
    group_first: np.ndarray  # (G,) first output of each run of outputs with the same window
    group_len: np.ndarray  # (G,) outputs in the run

    @property
    def span(self) -> int:
        return int(self.weights.shape[1])

    @property
    def group_start(self) -> np.ndarray:
        return self.start[self.group_first]


@dataclass(frozen=True)
class MaskGeometry:
    """Both axes of one (low-resolution size, full size) pair of a refiner's upscaling."""

    low_shape: tuple[int, int]
    shape: tuple[int, int]
    rows: AxisMap
    cols: AxisMap


def _axis_map(classes: np.ndarray, ramp: np.ndarray, n_in: int) -> Optional[AxisMap]:
    """One axis from the probe outputs: ``classes[k, y]`` is the weight output ``y`` puts on the
    low indices ``= k (mod 8)``, ``ramp[y]`` its weighted mean low index. None if that is not a
    short-support resize with non-negative weights summing to 1."""
    n_out = len(ramp)
    width = min(_CLASSES, n_in)
    if width < _CLASSES and np.abs(classes[width:]).max(initial=0.0) != 0.0:
        return None
    start = np.clip(np.rint(ramp).astype(np.int64) - (_CLASSES // 2 - 1), 0, n_in - width)
    idx = start[:, None] + np.arange(width)[None]
    w = classes[idx % _CLASSES, np.arange(n_out)[:, None]].astype(np.float64)
    total = w.sum(axis=1)
    if (w < 0).any() or np.abs(total - 1.0).max() > 1e-5:
        return None
    if np.abs((w * idx).sum(axis=1) / total - ramp).max() > 1e-2:
        return None  # weight outside the window
    nz = w > 0
    lo = start + nz.argmax(axis=1)
    hi = start + width - 1 - nz[:, ::-1].argmax(axis=1)
    span = int((hi - lo).max()) + 1
    new_start = np.minimum(lo, n_in - span)
    pos = new_start[:, None] + np.arange(span)[None] - start[:, None]
    inside = (pos >= 0) & (pos < width)
    weights = np.where(inside, np.take_along_axis(w, np.clip(pos, 0, width - 1), axis=1), 0.0)
    first = np.concatenate([[0], np.flatnonzero(np.diff(new_start)) + 1]).astype(np.int64)
    length = np.diff(np.concatenate([first, [n_out]])).astype(np.int64)
    return AxisMap(new_start.astype(np.int64), weights, first, length)


def _probe_inputs(low_shape: tuple[int, int], axis: int, device) -> torch.Tensor:
    """(9, 1, h, w): the 8 one-hot classes (index mod 8) along ``axis``, then a ramp of the index."""
    h, w = low_shape
    n = low_shape[axis]
    k = torch.arange(n, device=device)
    p = torch.cat([(k[None] % _CLASSES == torch.arange(_CLASSES, device=device)[:, None]).float(),
                   k[None].float()])
    p = p[:, :, None].expand(9, h, w) if axis == 0 else p[:, None, :].expand(9, h, w)
    return p[:, None].contiguous()


def probe_geometry(upscale_logits: UpscaleLogits, low_shape: tuple[int, int], device) -> Optional[MaskGeometry]:
    """The weights of ``upscale_logits`` measured on probes, or None if it is not a separable
    short-support resize."""
    maps, shape = [], None
    for axis in (0, 1):
        out = upscale_logits(_probe_inputs(low_shape, axis, device))[:, 0].double().cpu().numpy()
        shape = tuple(out.shape[1:])
        # constant along the other axis (exactly for the outer one, up to the rounding of the
        # other axis' weight sum for the inner one)
        line = out[:, :, :1] if axis == 0 else out[:, :1, :]
        if np.abs(out - line).max() > 1e-6 * max(1.0, float(np.abs(out).max())):
            return None
        line = line[:, :, 0] if axis == 0 else line[:, 0, :]
        m = _axis_map(line[:_CLASSES], line[_CLASSES], low_shape[axis])
        if m is None:
            return None
        maps.append(m)
    return MaskGeometry(tuple(low_shape), shape, maps[0], maps[1])


# ------------------------------------------------------------------ classification
@dataclass
class _Decided:
    """One chunk of candidates: the blocks that are wholly > 0, and the pixels near the zero
    crossing with their sign."""

    positive: torch.Tensor  # (n, G_rows, G_cols) bool
    cand: np.ndarray  # (P,) candidate within the chunk
    y: np.ndarray
    x: np.ndarray
    on: np.ndarray  # (P,) bool: logit > 0


def _window_extremes(low: torch.Tensor, geom: MaskGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, G_rows, G_cols) min and max of ``low`` over each block's window."""
    r, c = geom.rows, geom.cols
    x = low[:, None]
    mx = F.max_pool2d(x, (r.span, c.span), stride=1)[:, 0]
    mn = -F.max_pool2d(-x, (r.span, c.span), stride=1)[:, 0]
    gr, gc = torch.from_numpy(r.group_start), torch.from_numpy(c.group_start)
    return mn[:, gr][:, :, gc], mx[:, gr][:, :, gc]


def _block_pixels(k: np.ndarray, g: np.ndarray, q: np.ndarray, geom: MaskGeometry):
    """The pixels of blocks (candidate ``k``, row group ``g``, column group ``q``): candidate, y,
    x, and the block each comes from."""
    nr, nc = geom.rows.group_len[g], geom.cols.group_len[q]
    counts = nr * nc
    rep = np.repeat(np.arange(len(k)), counts)
    offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    y = geom.rows.group_first[g][rep] + offset // nc[rep]
    x = geom.cols.group_first[q][rep] + offset % nc[rep]
    return k[rep], y, x, rep


def _values(low64: torch.Tensor, geom: MaskGeometry, k, y, x) -> np.ndarray:
    """float64 full-size logits at pixels (k, y, x): the row pass for every output row, then the
    column pass at those pixels only."""
    r, c = geom.rows, geom.cols
    n, h, w = low64.shape
    rows = torch.zeros((n, len(r.start), w), dtype=torch.float64)
    for i in range(r.span):
        rows += torch.from_numpy(r.weights[:, i])[None, :, None] * low64[:, torch.from_numpy(r.start + i)]
    flat = rows.reshape(-1)
    base = (torch.from_numpy(k) * len(r.start) + torch.from_numpy(y)) * w + torch.from_numpy(c.start[x])
    out = torch.zeros(len(k), dtype=torch.float64)
    for j in range(c.span):
        out += torch.from_numpy(c.weights[x, j]) * flat[base + j]
    return out.numpy()


def _decide(geom: MaskGeometry, low: torch.Tensor, dense: bool = True) -> tuple[Optional[_Decided], np.ndarray]:
    """Classify ``low`` (n, h, w) float32 CPU, all finite. Returns the decisions and a bool array
    (P,) of near-crossing pixels still too close to 0 to decide here; or (None, ...) when more
    than ``DENSE_FRACTION`` of the pixels are near a crossing (fine-grained masks: the full-size
    logits are then cheaper)."""
    mn, mx = _window_extremes(low, geom)
    positive, negative = mn >= POSITIVE_FLOOR, mx <= -POSITIVE_FLOOR
    near = ~(positive | negative)
    sizes = torch.from_numpy(np.outer(geom.rows.group_len, geom.cols.group_len).astype(np.float32))
    if dense and float((near * sizes).sum()) > DENSE_FRACTION * len(low) * geom.shape[0] * geom.shape[1]:
        return None, np.zeros(0, bool)
    kb, gb, qb = (t.numpy() for t in near.nonzero(as_tuple=True))
    k, y, x, block = _block_pixels(kb, gb, qb, geom)
    value = _values(low.double(), geom, k, y, x)
    scale = torch.maximum(mx.abs(), mn.abs())[kb, gb, qb].double().numpy()[block]
    undecided = (np.abs(value) <= ROUNDING_BOUND * scale + 1e-37) & (scale > 0)
    return _Decided(positive, k, y, x, value > 0), undecided


def _resolve(upscale_logits: UpscaleLogits, geom: MaskGeometry, low: torch.Tensor, d: _Decided,
             undecided: np.ndarray) -> None:
    """Torch's own sign for the undecided pixels: each one's window is copied into a canvas that
    holds no other candidate's values there, and the canvases go through ``upscale_logits``."""
    idx = np.flatnonzero(undecided)
    if not len(idx):
        return
    r, c = geom.rows, geom.cols
    h, w = geom.low_shape
    canvases, owners = [], []
    where = np.full(len(idx), -1)
    # a candidate with many such pixels (ties, tiny logits) gets a canvas of its own: its logits
    per = np.bincount(d.cand[idx], minlength=len(low))
    for k in np.flatnonzero(per > _OWN_CANVAS):
        canvases.append(low[k].clone())
        owners.append(np.full((h, w), k, np.int64))
        where[d.cand[idx] == k] = len(canvases) - 1
    for n, p in enumerate(idx):
        if where[n] >= 0:
            continue
        k, y, x = int(d.cand[p]), int(d.y[p]), int(d.x[p])
        rs, cs = slice(int(r.start[y]), int(r.start[y]) + r.span), slice(int(c.start[x]), int(c.start[x]) + c.span)
        for ci, owner in enumerate(owners):
            o = owner[rs, cs]
            if ((o < 0) | (o == k)).all():
                break
        else:
            canvases.append(torch.zeros((h, w), dtype=low.dtype))
            owners.append(np.full((h, w), -1, np.int64))
            ci = len(owners) - 1
        canvases[ci][rs, cs] = low[k, rs, cs]
        owners[ci][rs, cs] = k
        where[n] = ci
    for i0 in range(0, len(canvases), _CHUNK):
        full = upscale_logits(torch.stack(canvases[i0:i0 + _CHUNK])[:, None])[:, 0]
        sel = np.flatnonzero((where >= i0) & (where < i0 + _CHUNK))
        vals = full[torch.from_numpy(where[sel] - i0), torch.from_numpy(d.y[idx[sel]]), torch.from_numpy(d.x[idx[sel]])]
        d.on[idx[sel]] = (vals > 0).cpu().numpy()


def _chunks(low: torch.Tensor, geom: MaskGeometry):
    """(indices, their logits (n, h, w) float32 CPU) per chunk of finite candidates, and the
    indices of candidates with non-finite logits."""
    low = low.detach().reshape(len(low), *geom.low_shape).float().cpu()
    finite = torch.isfinite(low).flatten(1).all(1).numpy()
    good = np.flatnonzero(finite)
    chunks = [(good[i:i + _CHUNK], low[torch.from_numpy(good[i:i + _CHUNK])]) for i in range(0, len(good), _CHUNK)]
    return chunks, np.flatnonzero(~finite)


def _decided_chunk(upscale_logits, geom, low, dense: bool = True) -> Union[_Decided, torch.Tensor]:
    """The decisions for one chunk, or (``dense``) its full-size masks (n, H, W) when they are cheaper."""
    d, undecided = _decide(geom, low, dense)
    if d is None:
        return (upscale_logits(low[:, None]) > 0)[:, 0].cpu()
    _resolve(upscale_logits, geom, low, d, undecided)
    return d


# ------------------------------------------------------------------ statistics and masks
@dataclass(frozen=True)
class SaliencyBlocks:
    """A saliency map and its float64 sums over every block of pixels that read the same window
    (made once per image, shared by every candidate)."""

    map: np.ndarray  # (H, W)
    sums: np.ndarray  # (G_rows, G_cols) float64


def saliency_blocks(geom: MaskGeometry, saliency: np.ndarray) -> SaliencyBlocks:
    """The block sums of ``saliency`` (H, W) for the masks of ``geom``."""
    s = np.asarray(saliency)
    if s.shape != geom.shape:
        raise ValueError(f"saliency map {s.shape} does not match the mask size {geom.shape}")
    sums = np.add.reduceat(s.astype(np.float64), geom.rows.group_first, axis=0)
    return SaliencyBlocks(s, np.add.reduceat(sums, geom.cols.group_first, axis=1))


def mask_stats(upscale_logits: UpscaleLogits, geom: MaskGeometry, low: torch.Tensor,
               saliency: Optional[SaliencyBlocks] = None, dense: bool = True) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Pixel counts (n,) int64 of the masks ``upscale_logits(low) > 0`` and, given the image's
    :func:`saliency_blocks`, the float64 saliency sums over them; ``low`` is (n, 1, h, w)."""
    n = len(low)
    count = np.zeros(n, np.int64)
    sal = np.zeros(n, np.float64) if saliency is not None else None
    sizes = torch.from_numpy(np.outer(geom.rows.group_len, geom.cols.group_len).astype(np.float64))
    sums = torch.from_numpy(saliency.sums) if saliency is not None else None
    chunks, bad = _chunks(low, geom)
    for sel, lo in chunks:
        d = _decided_chunk(upscale_logits, geom, lo, dense)
        if isinstance(d, torch.Tensor):  # made at full size
            m = d.numpy()
            count[sel] = m.reshape(len(m), -1).sum(1)
            if sal is not None:
                sal[sel] = [saliency.map[mi].sum(dtype=np.float64) for mi in m]
            continue
        pos = d.positive.double()
        on = d.on
        count[sel] = (pos * sizes).sum((1, 2)).round().long().numpy() + np.bincount(d.cand[on], minlength=len(sel))
        if sal is not None:
            pix = saliency.map[d.y[on], d.x[on]].astype(np.float64)
            sal[sel] = (pos * sums).sum((1, 2)).numpy() + np.bincount(d.cand[on], weights=pix, minlength=len(sel))
    if len(bad):  # non-finite logits: the straightforward way
        m = (upscale_logits(low[torch.from_numpy(bad)]) > 0)[:, 0].cpu().numpy()
        count[bad] = m.reshape(len(m), -1).sum(1)
        if sal is not None:
            sal[bad] = [saliency.map[mi].sum(dtype=np.float64) for mi in m]
    return count, sal


def make_masks(upscale_logits: UpscaleLogits, geom: MaskGeometry, low: torch.Tensor, dense: bool = True) -> np.ndarray:
    """Boolean masks (n, H, W): exactly ``(upscale_logits(low) > 0)[:, 0]``. ``dense``: chunks with
    many pixels near a crossing are made at full size (False: always classified, the self-check)."""
    out = np.zeros((len(low), *geom.shape), bool)
    chunks, bad = _chunks(low, geom)
    for sel, lo in chunks:
        d = _decided_chunk(upscale_logits, geom, lo, dense)
        if isinstance(d, torch.Tensor):
            out[sel] = d.numpy()
            continue
        blocks = d.positive.numpy()
        for j, i in enumerate(sel):
            m = np.repeat(np.repeat(blocks[j], geom.rows.group_len, axis=0), geom.cols.group_len, axis=1)
            here = d.cand == j
            m[d.y[here], d.x[here]] = d.on[here]
            out[i] = m
    if len(bad):
        out[bad] = (upscale_logits(low[torch.from_numpy(bad)]) > 0)[:, 0].cpu().numpy()
    return out


def _check_logits(low_shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Logits for the self-check: smooth random fields (many crossings), the same scaled to
    ~1e-6 (near-zero values), and integer-valued ones (exact zeros and ties)."""
    g = torch.Generator().manual_seed(seed)
    h, w = low_shape
    coarse = torch.randn(4, 1, max(2, h // 24), max(2, w // 24), generator=g) * 8
    smooth = F.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)
    smooth = smooth + 0.05 * torch.randn(4, 1, h, w, generator=g)
    return torch.cat([smooth, smooth[:2] * 1e-6, torch.round(smooth[2:] / 4)])


def verify_geometry(upscale_logits: UpscaleLogits, geom: MaskGeometry, seed: int = 0) -> bool:
    """The self-check: masks and counts of :func:`make_masks` / :func:`mask_stats` equal
    ``upscale_logits(low) > 0`` on :func:`_check_logits`."""
    low = _check_logits(geom.low_shape, seed)
    device = upscale_logits(low[:1]).device
    low = low.to(device)
    want = (upscale_logits(low) > 0)[:, 0].cpu().numpy()
    got = make_masks(upscale_logits, geom, low, dense=False)
    count, _ = mask_stats(upscale_logits, geom, low, dense=False)
    return bool(np.array_equal(want, got) and np.array_equal(want.reshape(len(want), -1).sum(1), count))
