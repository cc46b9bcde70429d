"""Exact mask statistics without full-size masks (saa.models.mask_stats) against the refiners'
own full-size masks: the same pixels mask by mask, the same counts, saliency sums to float64
precision; on random, near-zero, tie-heavy, fine-grained and non-finite logits, on several image
sizes (small, non-square, large), for the segment_anything and the transformers refiner, and in
the pipeline (the same predictions as the straightforward schedule)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saa.models import mask_stats as MS


def sam_chain(shape, image_size=1024):
    """segment-anything's postprocess_masks for an image of ``shape``."""
    h, w = shape
    s = image_size / max(h, w)
    inp = (int(h * s + 0.5), int(w * s + 0.5))

    def up(low):
        m = F.interpolate(low, (image_size, image_size), mode="bilinear", align_corners=False)
        return F.interpolate(m[..., :inp[0], :inp[1]], shape, mode="bilinear", align_corners=False)
    return up


def logits(n_smooth=4, size=256, seed=0) -> torch.Tensor:
    """Smooth fields with noise, the same near 0 (x1e-7), integer-valued ones (exact zeros and
    ties), a fine 4x4-periodic texture (what random-weight SAM decoders give), one exactly 0."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n_smooth, 1, 8, 8, generator=g) * 10
    smooth = F.interpolate(coarse, (size, size), mode="bilinear", align_corners=False)
    smooth = smooth + 0.3 * torch.randn(n_smooth, 1, size, size, generator=g)
    tile = torch.randn(1, 1, 4, 4, generator=g).repeat(1, 1, size // 4, size // 4)
    texture = tile + 0.05 * torch.randn(1, 1, size, size, generator=g) + smooth[:1] * 0.05
    return torch.cat([smooth, smooth[:2] * 1e-7, torch.round(smooth[:2] / 8), texture, torch.zeros(1, 1, size, size)])


def check_exact(up, low, saliency):
    geom = MS.probe_geometry(up, tuple(low.shape[-2:]), "cpu")
    assert geom is not None and geom.shape == saliency.shape
    assert MS.verify_geometry(up, geom)
    want = (up(low) > 0)[:, 0].numpy()
    got = MS.make_masks(up, geom, low)
    for i in range(len(low)):
        assert np.array_equal(got[i], want[i]), i
    count, sums = MS.mask_stats(up, geom, low, MS.saliency_blocks(geom, saliency))
    assert np.array_equal(count, want.reshape(len(want), -1).sum(1))
    ref = np.array([saliency[m].sum(dtype=np.float64) for m in want])
    np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=1e-9)
    return want


@pytest.mark.parametrize("shape", [(900, 900), (333, 517), (1500, 620), (48, 64)])
def test_sam_postprocess_exact(shape):
    torch.manual_seed(0)
    low = logits(seed=shape[0])
    sal = np.random.default_rng(0).random(shape, dtype=np.float32)
    want = check_exact(sam_chain(shape), low, sal)
    assert 0 < want[0].mean() < 1 and want[-1].sum() == 0 and want[4:6].sum() > 0  # crossings, zeros, ties


def test_large_image_and_single_resize():
    """A large non-square image (SAM's two resizes) and SAM 2's single resize."""
    low = logits(n_smooth=2, seed=3)
    sal = np.random.default_rng(1).random((2600, 1700), dtype=np.float32)
    check_exact(sam_chain((2600, 1700)), low, sal)
    one = lambda x: F.interpolate(x, (700, 1100), mode="bilinear", align_corners=False)  # noqa: E731
    check_exact(one, low, np.random.default_rng(2).random((700, 1100), dtype=np.float32))


@pytest.mark.parametrize("own_canvas", [32, 10**9])
def test_undecided_pixels_get_torch_values(monkeypatch, own_canvas):
    """With a deliberately loose rounding bound every near-crossing pixel is 'undecided' and goes
    through the canvases (a candidate's own, or windows packed with other candidates'), i.e.
    through the upscaling itself: still the same masks."""
    up = sam_chain((120, 160))
    g = torch.Generator().manual_seed(5)
    low = F.interpolate(torch.randn(6, 1, 4, 4, generator=g) * 10, (256, 256), mode="bilinear", align_corners=False)
    geom = MS.probe_geometry(up, (256, 256), "cpu")
    monkeypatch.setattr(MS, "ROUNDING_BOUND", 0.05)
    monkeypatch.setattr(MS, "_OWN_CANVAS", own_canvas)
    monkeypatch.setattr(MS, "DENSE_FRACTION", 1.0)  # the classification path, however many near pixels
    d, undecided = MS._decide(geom, low[:, 0])
    assert d is not None and undecided.sum() > 20
    assert np.array_equal(MS.make_masks(up, geom, low), (up(low) > 0)[:, 0].numpy())
    count, _ = MS.mask_stats(up, geom, low)
    assert np.array_equal(count, (up(low) > 0).flatten(1).sum(1).numpy())


def test_non_finite_and_not_bilinear():
    up = sam_chain((200, 300))
    low = logits(n_smooth=2, seed=7)[:2].clone()
    low[1, 0, 10, 10] = float("nan")
    low[0, 0, 5, 5] = float("inf")
    geom = MS.probe_geometry(up, (256, 256), "cpu")
    assert np.array_equal(MS.make_masks(up, geom, low), (up(low) > 0)[:, 0].numpy())
    nearest = lambda x: F.interpolate(x, (300, 200), mode="nearest")  # noqa: E731
    bicubic = lambda x: F.interpolate(x, (300, 200), mode="bicubic", align_corners=False)  # noqa: E731
    assert MS.probe_geometry(bicubic, (256, 256), "cpu") is None  # negative weights
    g = MS.probe_geometry(nearest, (256, 256), "cpu")
    assert g is None or MS.verify_geometry(nearest, g)
    # the self-check rejects weights measured on another upscaling of the same size
    other = lambda x: F.interpolate(x, (200, 300), mode="bilinear", align_corners=True)  # noqa: E731
    assert not MS.verify_geometry(other, geom)
    assert MS.verify_geometry(up, geom)


@pytest.fixture(scope="module")
def refiners(tiny_models):
    from saa.models.hf_sam import HFBoxRefiner
    from saa.models.sam import BoxRefiner

    out = {"segment_anything": BoxRefiner(tiny_models.sam_checkpoint),
           "transformers": HFBoxRefiner(tiny_models.sam_checkpoint, variant="sam")}
    for r in out.values():
        r.exact_statistics = True  # opt-in (off by default)
    return out


@pytest.mark.parametrize("backend", ["segment_anything", "transformers"])
@pytest.mark.parametrize("shape", [(240, 320), (700, 450)])
def test_refiners_mask_stats_equal_full_masks(refiners, backend, shape):
    """Both refiners: mask_stats / masks_of equal the full-size masks of their own upscale, on the
    decoder's own logits of random boxes and on crafted logits."""
    ref = refiners[backend]
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    ref.set_image(image)
    try:
        h, w = shape
        xy = rng.random((12, 2)) * [w * 0.7, h * 0.7]
        boxes = torch.tensor(np.concatenate([xy, xy + rng.random((12, 2)) * [w * 0.3, h * 0.3] + 2], 1),
                             dtype=torch.float32)
        low = torch.cat([ref.low_res_logits(boxes), logits(seed=shape[1])])
        want = ref.upscale(low)
        assert np.array_equal(ref.masks_of(low), want)
        sal = rng.random(shape).astype(np.float32)
        frac, means = ref.mask_stats(low, sal)
        np.testing.assert_array_equal(frac, want.reshape(len(want), -1).sum(1) / (h * w))
        for m, mean in zip(want, means):
            if m.any():
                assert abs(float(mean) - float(sal[m].mean())) <= 2e-6 * float(sal[m].mean())
            else:
                assert np.isnan(mean)
        assert ref.geometry((256, 256)) is not None
    finally:
        ref.reset_image()


@pytest.mark.parametrize("exact_statistics", [False, True])
def test_pipeline_same_as_straightforward(tiny_models, tmp_path, exact_statistics):
    """The default schedule (object masks only where used; the statistics from full-size masks a
    chunk at a time, or, opted in, without them) gives the straightforward schedule's maps, kept
    masks, areas and scores; a single-object category with the box area rule runs no object
    decoder call."""
    from pathlib import Path

    import cv2

    from saa.config import load_config
    from saa.pipeline import SAAPipeline
    from saa.testing import tiny_config_overrides

    repo = Path(__file__).resolve().parents[1]
    hits = sorted((repo.parent / "shared/realdata").glob("mvtec_ad__*/bottle/test/broken_large/000.png"))
    if not hits:
        pytest.skip("real bottle image missing")
    img = cv2.cvtColor(cv2.resize(cv2.imread(str(hits[0])), (300, 260)), cv2.COLOR_BGR2RGB)
    cfg = load_config(repo / "configs/mvtec.yaml", tiny_config_overrides(tiny_models))
    fast = SAAPipeline(cfg)
    slow = SAAPipeline(cfg, detector=fast.detector, refiner=fast.refiner, extractor=fast.extractor)
    slow.straightforward_masks = True
    fast.refiner.exact_statistics = exact_statistics
    calls = []
    decode = fast.refiner.low_res_logits
    fast.refiner.low_res_logits = lambda b: calls.append(len(b)) or decode(b)
    try:
        a = fast.predict(img, "bottle")
    finally:
        del fast.refiner.low_res_logits
    b = slow.predict(img, "bottle")
    assert len(calls) == 1  # defect boxes only: the single-object saliency does not use object masks
    assert a.object_masks is None and b.object_masks is not None
    assert np.abs(a.anomaly_map - b.anomaly_map).max() <= 1e-6
    assert np.array_equal(a.kept_masks, b.kept_masks)
    da, db = a.defects, b.defects
    assert [c.mask_area for c in da] == [c.mask_area for c in db]
    assert [c.dropped for c in da] == [c.dropped for c in db]
    np.testing.assert_allclose([c.rescored or 0 for c in da], [c.rescored or 0 for c in db], rtol=1e-6)
    assert len(da) > 0
    # the weights were measured (and used) exactly when opted in
    assert any(g is not None for g in fast.refiner.__dict__.get("_geometries", {}).values()) == exact_statistics
