"""Our Grounding DINO schedule and kernels against the package's own code.

* the exact schedule (backbone + input projections once per image, text encoding once per caption,
  only the last decoder layer's heads) is bit-identical to a full forward per caption;
* the fast kernels (deformable attention as a weighted gather, folded image-text fusion) agree with
  the package's functions to float32 rounding, on random inputs and through the tiny detector.
"""
from __future__ import annotations

import pytest
import torch

from saa.models.dino_kernels import bi_attention_folded, fast_kernels, ms_deform_attn_gather


def _deform_inputs(seed, bs=2, shapes=((12, 17), (6, 9), (3, 5)), q=50, heads=4, dims=8, points=3):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(bs, s, heads, dims, generator=g)
    # locations partly outside [0, 1] so that zero padding is exercised on every side
    loc = torch.rand(bs, q, heads, len(shapes), points, 2, generator=g) * 1.4 - 0.2
    w = torch.randn(bs, q, heads, len(shapes) * points, generator=g).softmax(-1).view(bs, q, heads, len(shapes), points)
    return value, torch.tensor(shapes), loc, w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deformable_attention_gather_equals_package(seed):
    from saa.models import dino_kernels

    dino_kernels.install()
    ref_fn = dino_kernels._originals["deform"]
    value, shapes, loc, w = _deform_inputs(seed)
    ref = ref_fn(value, shapes, loc, w)
    ours = ms_deform_attn_gather(value, shapes, loc, w)
    assert ours.shape == ref.shape == (2, 50, 32)
    assert torch.allclose(ours, ref, atol=2e-6, rtol=1e-5), float((ours - ref).abs().max())
    # a sample far outside the map contributes nothing (zero padding), as in grid_sample
    loc_out = loc.clone()
    loc_out[:, :, :, :, 0] = 5.0  # every point of level 0 far to the right
    ref2, ours2 = ref_fn(value, shapes, loc_out, w), ms_deform_attn_gather(value, shapes, loc_out, w)
    assert torch.allclose(ours2, ref2, atol=2e-6, rtol=1e-5)
    assert not torch.allclose(ours2, ours, atol=1e-3)


def test_fusion_folded_equals_package():
    from groundingdino.models.GroundingDINO.fuse_modules import BiMultiHeadAttention

    torch.manual_seed(0)
    m = BiMultiHeadAttention(v_dim=32, l_dim=24, embed_dim=64, num_heads=4, dropout=0.0).eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    v, l = torch.randn(2, 300, 32), torch.randn(2, 7, 24)
    mask_v = torch.zeros(2, 300, dtype=torch.bool)
    mask_v[1, 250:] = True  # padded image tokens of item 1
    mask_l = torch.zeros(2, 7, dtype=torch.bool)
    mask_l[0, 5:] = True  # padded text tokens of item 0
    from saa.models import dino_kernels

    dino_kernels.install()
    with torch.no_grad():
        ref_v, ref_l = m(v, l, attention_mask_v=mask_v, attention_mask_l=mask_l)  # outside: package code
        our_v, our_l = bi_attention_folded(m, v, l, mask_v, mask_l)
        with fast_kernels():
            routed_v, routed_l = m(v, l, attention_mask_v=mask_v, attention_mask_l=mask_l)
    assert torch.allclose(our_v, ref_v, atol=1e-5, rtol=1e-5), float((our_v - ref_v).abs().max())
    assert torch.allclose(our_l, ref_l, atol=1e-5, rtol=1e-5), float((our_l - ref_l).abs().max())
    # the context manager routes the module to the folded version, and only while active
    assert torch.equal(routed_v, our_v) and torch.equal(routed_l, our_l)
    with torch.no_grad():
        again_v, _ = m(v, l, attention_mask_v=mask_v, attention_mask_l=mask_l)
    assert torch.equal(again_v, ref_v)


@pytest.fixture(scope="module")
def detectors(tiny_models):
    from saa.models.full_forward import FullForwardDetector
    from saa.models.grounding import GroundingDetector
    from saa.testing import synthetic_image

    args = (tiny_models.grounding_config, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    dets = {"full": FullForwardDetector(*args), "exact": GroundingDetector(*args, kernels="reference"),
            "fast": GroundingDetector(*args)}
    img = synthetic_image()
    for d in dets.values():
        d.set_image(img)
    return dets


def _long_caption(n_words: int = 300) -> str:
    """Over max_text_len (256 tokens) with varied words: cut as the package's forward cuts it.
    (One word repeated gives exactly tied scores, where any rounding difference reorders queries.)"""
    from saa.testing import build_vocab

    words = [w for w in build_vocab() if w.isalpha()]
    return " ".join(words[i % len(words)] for i in range(n_words)) + "."


@pytest.mark.parametrize("caption", ["bottle.", "broken part. contamination. white broken.", _long_caption()],
                         ids=["short", "three", "over_max_text_len"])
def test_detector_schedule_and_kernels(detectors, caption):
    full = detectors["full"].detect(caption)
    exact = detectors["exact"].detect(caption)
    fast = detectors["fast"].detect(caption)
    # the exact schedule: bit-identical to one full forward per caption
    assert torch.equal(exact.boxes, full.boxes) and torch.equal(exact.token_probs, full.token_probs)
    # the fast kernels: float32 rounding only, on this (non-chaotic) tiny detector
    assert float((fast.boxes - full.boxes).abs().max()) < 1e-5
    assert float((fast.token_probs - full.token_probs).abs().max()) < 1e-5
    assert not torch.equal(fast.token_probs, full.token_probs)  # the fast path really ran
    if caption == _long_caption():
        assert len(full.input_ids) > 256  # the caption really is cut
    # the text encoding is cached per caption, and the cached copy is not altered by a forward
    det = detectors["fast"]
    cached = det.encode_text(fast.caption)
    before = cached["encoded_text"].clone()
    again = det.detect(caption)
    assert det.encode_text(fast.caption) is cached and torch.equal(cached["encoded_text"], before)
    assert torch.equal(again.token_probs, fast.token_probs)


def test_detector_rejects_unknown_kernels(tiny_models):
    from saa.models.grounding import GroundingDetector

    with pytest.raises(ValueError, match="kernels"):
        GroundingDetector(tiny_models.grounding_config, tiny_models.grounding_checkpoint,
                          tiny_models.text_encoder, kernels="cuda")
