"""Faster formulations of two Grounding DINO layers, for our detector's per-caption heads.

On the CPU, once the Swin backbone runs once per image, nearly all of a caption's time is in the
6 encoder layers, and two of their parts do much more work than the maths needs:

**Multi-scale deformable attention** (every encoder and decoder layer). The package's
``multi_scale_deformable_attn_pytorch`` samples each level with ``F.grid_sample`` (bilinear, zero
padding, ``align_corners=False``), stacks the samples of all levels into a ``(bs * heads, dims,
queries, levels * points)`` tensor (13 294 queries x 8 heads x 32 dims x 16 samples for an 800 px
image), multiplies it by the attention weights and sums. :func:`ms_deform_attn_gather` computes the
same sum as one weighted gather: the 4 bilinear corners of every sampling location become row
indices of the value tensor with weights ``bilinear weight x attention weight`` (0 for a corner
outside the map: zero padding), and ``F.embedding_bag(mode="sum", per_sample_weights=...)``
gathers and sums them without building the stacked tensor.

**Image-text fusion** (``BiMultiHeadAttention``, one per encoder layer). It projects all image
tokens to the 1024-wide fusion space three times (queries, values, output) although the text has
only a handful of tokens. :func:`bi_attention_folded` folds the projections into the text side:

* image->text logits ``(v Wq^T + bq) k^T = v (Wq^T k^T) + bq k^T`` (a 256 x (heads x tokens) matrix
  instead of a 13 294 x 1024 projection);
* image output ``sum_h P_h (V_h Wo_h^T) + bo``;
* text output ``(P_l v) Wv^T + bv`` (the softmax rows sum to 1).

Both are the same formulas with a different order of floating-point operations: their outputs agree
with the package's to float32 rounding (``tests/models/test_dino_kernels.py``). A detector with random
weights can amplify such last-bit differences (a query swapped at the top-900 boundary of the
two-stage selection); ``scripts/benchmark.py --baseline`` reports the end-to-end map difference.

:func:`fast_kernels` is a context manager that routes the package's calls to these functions in
the current thread while it is active; elsewhere (e.g. the reference schedule in
:mod:`saa.models.full_forward`, in the same process) the package's own code runs.
"""
from __future__ import annotations

import contextlib
import threading

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_gather", "bi_attention_folded", "fast_kernels", "install"]

_state = threading.local()
_originals: dict = {}


def _active() -> bool:
    return getattr(_state, "active", 0) > 0


# ---------------------------------------------------------------------------------------------
# multi-scale deformable attention
# ---------------------------------------------------------------------------------------------
def ms_deform_attn_gather(value: torch.Tensor, value_spatial_shapes: torch.Tensor,
                          sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Drop-in for ``multi_scale_deformable_attn_pytorch``.

    Args:
        value: (bs, S, heads, dims), S = sum of H_l * W_l over levels.
        value_spatial_shapes: (levels, 2) integer (H_l, W_l).
        sampling_locations: (bs, Q, heads, levels, points, 2) normalised (x, y), 0..1 inside the map.
        attention_weights: (bs, Q, heads, levels, points).
    Returns:
        (bs, Q, heads * dims)
    """
    bs, s, nh, d = value.shape
    _, q, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]
    itype = torch.int32 if bs * s * nh < 2**31 else torch.long
    dev = value.device

    table = value.reshape(bs * s * nh, d)  # row (b * S + position) * heads + head: no copy
    # row offset of (batch, head): (bs, 1, heads, 1)
    offset = (torch.arange(bs, device=dev, dtype=itype).view(bs, 1, 1, 1) * (s * nh)
              + torch.arange(nh, device=dev, dtype=itype).view(1, 1, nh, 1))
    grid = 2 * sampling_locations - 1  # as the package computes it, then grid_sample's unnormalisation
    out = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        x = ((grid[:, :, :, lvl, :, 0] + 1) * w - 1) / 2  # (bs, Q, heads, points)
        y = ((grid[:, :, :, lvl, :, 1] + 1) * h - 1) / 2
        x0, y0 = torch.floor(x), torch.floor(y)
        x1, y1 = x0 + 1, y0 + 1
        # bilinear weights; a neighbour outside the map weighs 0 (zero padding)
        wx = torch.stack([(x1 - x) * ((x0 >= 0) & (x0 <= w - 1)), (x - x0) * ((x1 >= 0) & (x1 <= w - 1))], -1)
        wy = torch.stack([(y1 - y) * ((y0 >= 0) & (y0 <= h - 1)), (y - y0) * ((y1 >= 0) & (y1 <= h - 1))], -1)
        cx = torch.stack([x0.clamp(0, w - 1), x1.clamp(0, w - 1)], -1).to(itype)
        cy = torch.stack([y0.clamp(0, h - 1), y1.clamp(0, h - 1)], -1).to(itype)
        # corners (y, x) in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1)
        pos = (cy * w + start)[..., :, None] + cx[..., None, :]  # (bs, Q, heads, points, 2, 2)
        rows = pos * nh + offset[..., None, None]
        wts = (wx[..., None, :] * wy[..., :, None]) * attention_weights[:, :, :, lvl, :, None, None]
        part = F.embedding_bag(rows.reshape(bs * q * nh, n_points * 4), table,
                               per_sample_weights=wts.reshape(bs * q * nh, n_points * 4).to(table.dtype),
                               mode="sum")
        out = part if out is None else out.add_(part)
        start += h * w
    return out.view(bs, q, nh * d)


# ---------------------------------------------------------------------------------------------
# image-text fusion
# ---------------------------------------------------------------------------------------------
def _clamp_like_package(x: torch.Tensor, module) -> torch.Tensor:
    if module.clamp_min_for_underflow:
        x = torch.clamp(x, min=-50000)
    if module.clamp_max_for_overflow:
        x = torch.clamp(x, max=50000)
    return x


def bi_attention_folded(module, v: torch.Tensor, l: torch.Tensor, attention_mask_v=None, attention_mask_l=None):
    """Same outputs as ``BiMultiHeadAttention.forward(v, l, ...)`` (inference), projections folded.

    v: (bs, n_img, v_dim) image tokens; l: (bs, n_txt, l_dim) text tokens; masks True = padding.
    Returns (delta_v (bs, n_img, v_dim), delta_l (bs, n_txt, l_dim)).
    """
    bs, n_img, v_dim = v.shape
    n_txt = l.shape[1]
    nh, hd = module.num_heads, module.head_dim
    k = module.l_proj(l).view(bs, n_txt, nh, hd)
    vl = module.values_l_proj(l).view(bs, n_txt, nh, hd)
    wq = module.v_proj.weight.view(nh, hd, v_dim)
    bq = module.v_proj.bias.view(nh, hd)
    # logits[b, h, i, t] = scale * ((v_i Wq_h^T + bq_h) . k_t)
    m = torch.einsum("hdc,bthd->bcht", wq, k).reshape(bs, v_dim, nh * n_txt)
    c = torch.einsum("hd,bthd->bht", bq, k).reshape(bs, 1, nh * n_txt)
    logits = torch.baddbmm(c, v, m).view(bs, n_img, nh, n_txt).permute(0, 2, 1, 3) * module.scale
    attn = logits.reshape(bs * nh, n_img, n_txt)

    if module.stable_softmax_2d:
        attn = attn - attn.max()
    attn = _clamp_like_package(attn, module)
    attn_t = attn.transpose(1, 2)
    attn_l = _clamp_like_package(attn_t - torch.max(attn_t, dim=-1, keepdim=True)[0], module)
    if attention_mask_v is not None:
        attn_l = attn_l.masked_fill(attention_mask_v[:, None, None, :].repeat(1, nh, 1, 1).flatten(0, 1),
                                    float("-inf"))
    p_l = attn_l.softmax(dim=-1)  # (bs * nh, n_txt, n_img)
    if attention_mask_l is not None:
        attn = attn.masked_fill(attention_mask_l[:, None, None, :].repeat(1, nh, 1, 1).flatten(0, 1),
                                float("-inf"))
    p_v = attn.softmax(dim=-1)  # (bs * nh, n_img, n_txt)

    # image side: sum_h P_h (V_h Wo_h^T) + bo
    wo = module.out_v_proj.weight.view(v_dim, nh, hd)
    u = torch.einsum("bthd,chd->bhtc", vl, wo).reshape(bs, nh * n_txt, v_dim)
    p_v = p_v.view(bs, nh, n_img, n_txt).permute(0, 2, 1, 3).reshape(bs, n_img, nh * n_txt)
    delta_v = torch.baddbmm(module.out_v_proj.bias.view(1, 1, v_dim), p_v, u)

    # text side: ((P_l v) Wv_h^T + bv_h) per head, then the output projection
    pv = torch.bmm(p_l.view(bs, nh * n_txt, n_img), v).view(bs, nh, n_txt, v_dim)
    wv = module.values_v_proj.weight.view(nh, hd, v_dim)
    out_l = torch.einsum("bhtc,hdc->bthd", pv, wv) + module.values_v_proj.bias.view(1, 1, nh, hd)
    delta_l = module.out_l_proj(out_l.reshape(bs, n_txt, nh * hd))
    return delta_v, delta_l


# ---------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------
def _deform_dispatch(value, value_spatial_shapes, sampling_locations, attention_weights):
    if _active():
        return ms_deform_attn_gather(value, value_spatial_shapes, sampling_locations, attention_weights)
    return _originals["deform"](value, value_spatial_shapes, sampling_locations, attention_weights)


def _bi_dispatch(self, v, l, attention_mask_v=None, attention_mask_l=None):
    if _active() and not self.training:
        return bi_attention_folded(self, v, l, attention_mask_v, attention_mask_l)
    return _originals["bi"](self, v, l, attention_mask_v=attention_mask_v, attention_mask_l=attention_mask_l)


def install() -> None:
    """Route the package's two functions through dispatchers (idempotent). Outside
    :func:`fast_kernels` the dispatchers call the package's own code."""
    from groundingdino.models.GroundingDINO import fuse_modules, ms_deform_attn

    if "deform" not in _originals:
        _originals["deform"] = ms_deform_attn.multi_scale_deformable_attn_pytorch
        _originals["bi"] = fuse_modules.BiMultiHeadAttention.forward
    ms_deform_attn.multi_scale_deformable_attn_pytorch = _deform_dispatch
    fuse_modules.BiMultiHeadAttention.forward = _bi_dispatch


@contextlib.contextmanager
def fast_kernels(enabled: bool = True):
    """Use :func:`ms_deform_attn_gather` and :func:`bi_attention_folded` in this thread while active."""
    if not enabled:
        yield
        return
    install()
    _state.active = getattr(_state, "active", 0) + 1
    try:
        yield
    finally:
        _state.active -= 1
