"""SAA+'s default schedule against the straightforward one of the authors' code: object masks only
where they are used, and the defect masks' area and mean saliency taken a chunk at a time without
keeping the full-size masks, give the same predictions; the refiners' statistics equal their own
full-size masks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REALDATA, REPO


@pytest.mark.parametrize("backend", ["segment_anything", "transformers"])
def test_refiner_mask_stats_equal_full_masks(tiny_models, backend):
    from saa.models.hf_sam import HFBoxRefiner
    from saa.models.sam import BoxRefiner

    ref = BoxRefiner(tiny_models.sam_checkpoint) if backend == "segment_anything" else \
        HFBoxRefiner(tiny_models.sam_checkpoint, variant="sam")
    rng = np.random.default_rng(3)
    h, w = 240, 320
    ref.set_image(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    try:
        xy = rng.random((12, 2)) * [w * 0.7, h * 0.7]
        boxes = torch.tensor(np.concatenate([xy, xy + rng.random((12, 2)) * [w * 0.3, h * 0.3] + 2], 1),
                             dtype=torch.float32)
        low = ref.low_res_logits(boxes)
        want = ref.upscale(low)
        assert np.array_equal(ref.masks_of(low), want)
        sal = rng.random((h, w)).astype(np.float32)
        frac, means = ref.mask_stats(low, sal)
        np.testing.assert_array_equal(frac, want.reshape(len(want), -1).sum(1) / (h * w))
        for m, mean in zip(want, means):
            if m.any():
                assert abs(float(mean) - float(sal[m].mean())) <= 2e-6 * float(sal[m].mean())
            else:
                assert np.isnan(mean)
    finally:
        ref.reset_image()


def test_pipeline_same_as_straightforward(tiny_models):
    """The default schedule gives the straightforward schedule's maps, kept masks, areas and scores;
    a single-object category with the box area rule runs no object decoder call."""
    from saa.config import load_config
    from saa.methods.saa_plus import SAAPipeline
    from saa.testing import tiny_config_overrides

    hits = sorted(REALDATA.glob("mvtec_ad__*/bottle/test/broken_large/000.png"))
    if not hits:
        pytest.skip("real bottle image missing")
    img = cv2.cvtColor(cv2.resize(cv2.imread(str(hits[0])), (300, 260)), cv2.COLOR_BGR2RGB)
    cfg = load_config(REPO / "configs/mvtec.yaml", tiny_config_overrides(tiny_models))
    fast = SAAPipeline(cfg)
    slow = SAAPipeline(cfg, detector=fast.detector, refiner=fast.refiner, extractor=fast.extractor)
    slow.straightforward_masks = True
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
