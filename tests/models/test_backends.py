"""The transformers backends against the reference packages, with the same weights.

* Grounding DINO: ``groundingdino`` (package kernels) vs ``GroundingDinoForObjectDetection`` loaded
  from the same package files (converted in memory by saa) and from a ``save_pretrained`` folder;
  boxes <= 1e-4, token probabilities <= 1e-3 (measured on the tiny models: ~2e-6 / ~6e-7), captions
  batched through the heads equal to one call per caption;
* SAM: ``segment_anything`` vs ``SamModel`` from the same file: masks equal up to boundary pixels;
  SAM-HQ / SAM 2 (random tiny folders): shapes, determinism, batch = one box at a time;
* end to end on the tiny models: the anomaly maps of both backend stacks within 1e-4;
* a config switch alone selects every backend / variant combination for ``saa predict``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if int(transformers.__version__.split(".")[0]) < 5:  # pragma: no cover - the CI stack is transformers 5
    pytest.skip("the transformers backends need transformers>=5", allow_module_level=True)

from saa.config import load_config  # noqa: E402
from saa.errors import CheckpointError  # noqa: E402
from saa.image_io import read_rgb  # noqa: E402
from saa.methods.saa_plus import SAAPipeline  # noqa: E402
from saa.testing import BACKEND_COMBINATIONS, backend_overrides, build_tiny_hf_models  # noqa: E402

from tests.conftest import REPO  # noqa: E402

SAMPLES = REPO / "assets" / "samples"
CAPTIONS = ["bottle,.", "defect on bottle.", "crack. scratch. black hole."]


@pytest.fixture(scope="module")
def tiny_hf(tiny_models):
    return build_tiny_hf_models(tiny_models)


@pytest.fixture(scope="module")
def sample():
    return read_rgb(SAMPLES / "bottle_broken_large_000.jpg")


@pytest.fixture(scope="module")
def detectors(tiny_models, tiny_hf):
    from saa.models.grounding import GroundingDetector
    from saa.models.hf_grounding import HFGroundingDetector

    m = tiny_models
    return {
        "package": GroundingDetector(m.grounding_config, m.grounding_checkpoint, m.text_encoder, kernels="reference"),
        "converted": HFGroundingDetector(m.grounding_config, m.grounding_checkpoint, m.text_encoder),
        "folder": HFGroundingDetector(None, tiny_hf.grounding, None),
    }


def max_diffs(a, b):
    return float((a.boxes - b.boxes).abs().max()), float((a.token_probs - b.token_probs).abs().max())


def test_detector_parity_and_batching_tiny(detectors, sample, monkeypatch):
    ref, conv, fold = detectors["package"], detectors["converted"], detectors["folder"]
    assert torch.equal(ref.preprocess(sample), conv.preprocess(sample))  # identical pixels in
    swin_calls = []
    inner = conv._backbone.inner
    orig = inner.forward
    monkeypatch.setattr(inner, "forward", lambda *a, **k: swin_calls.append(1) or orig(*a, **k))
    for d in detectors.values():
        d.set_image(sample)
    worst = [0.0, 0.0]
    try:
        batched = conv.detect_many(CAPTIONS)  # all captions through the heads as one batch
        for i, (cap, bb) in enumerate(zip(CAPTIONS, batched)):
            a, b = ref.detect(cap), conv.detect(cap)
            assert a.input_ids == b.input_ids == bb.input_ids and a.caption == b.caption
            assert a.boxes.shape == b.boxes.shape and a.token_probs.shape == b.token_probs.shape
            db, dp = max_diffs(a, b)
            worst = [max(worst[0], db), max(worst[1], dp)]
            assert db <= 1e-4 and dp <= 1e-3, (cap, db, dp)
            # batched = one call per caption (padding is masked)
            db2, dp2 = max_diffs(b, bb)
            assert db2 <= 1e-5 and dp2 <= 1e-5, (cap, db2, dp2)
            # beyond the caption the probabilities are exactly 0 in both
            for x in (b, bb):
                assert float(x.token_probs[:, len(x.input_ids):].abs().max()) == 0.0
            # the same decisions downstream: boxes over the threshold and their phrases
            keep_a = torch.nonzero(a.scores > 0.1).flatten().tolist()
            keep_b = torch.nonzero(b.scores > 0.1).flatten().tolist()
            assert keep_a == keep_b, cap
            assert [ref.phrase(a.token_probs[q], a.input_ids, 0.1) for q in keep_a] == \
                   [conv.phrase(b.token_probs[q], b.input_ids, 0.1) for q in keep_b]
            if i == 0:  # a save_pretrained folder of the converted model gives the very same outputs
                c = fold.detect(cap)
                assert torch.equal(b.boxes, c.boxes) and torch.equal(b.token_probs, c.token_probs)
    finally:
        for d in detectors.values():
            d.reset_image()
    assert len(swin_calls) == 1  # the image backbone ran once for the image, not per caption
    print(f"tiny detector, transformers vs groundingdino: max |box| {worst[0]:.2e}, max |prob| {worst[1]:.2e}")


def test_sam_parity_tiny(tiny_models, tiny_hf, sample):
    from saa.models.hf_sam import HFBoxRefiner
    from saa.models.sam import BoxRefiner

    ref = BoxRefiner(tiny_models.sam_checkpoint)
    conv = HFBoxRefiner(tiny_models.sam_checkpoint, variant="sam")
    fold = HFBoxRefiner(tiny_hf.sam, variant="sam")
    h, w = sample.shape[:2]
    boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.95 * h],
                          [0, 0, w - 1, h - 1], [0.45 * w, 0.45 * h, 0.55 * w, 0.5 * h]])
    for r in (ref, conv, fold):
        r.set_image(sample)
    ma, mb, mc = ref.masks(boxes), conv.masks(boxes), fold.masks(boxes)
    assert ma.shape == mb.shape == (len(boxes), h, w)
    area = ma.reshape(len(boxes), -1).sum(1)
    flips = (ma != mb).reshape(len(boxes), -1).sum(1)
    assert (area > 0).all()  # a real comparison: the calibrated tiny SAM gives non-empty masks
    assert np.all(flips <= np.maximum(30, 1e-3 * area)), (flips, area)  # boundary pixels only
    np.testing.assert_array_equal(mb, mc)
    print(f"tiny SAM, transformers vs segment_anything: {flips.tolist()} differing pixels of {area.tolist()}")


@pytest.mark.parametrize("variant", ["sam_hq", "sam2"])
def test_sam_hq_and_sam2_refiners(tiny_hf, sample, variant):
    from saa.models.hf_sam import HFBoxRefiner

    r = HFBoxRefiner(getattr(tiny_hf, variant), variant=variant)
    h, w = sample.shape[:2]
    boxes = torch.tensor([[0.1 * w, 0.1 * h, 0.6 * w, 0.7 * h], [0.3 * w, 0.2 * h, 0.9 * w, 0.8 * h]])
    r.set_image(sample)
    low = r.low_res_logits(boxes)
    assert low.shape == (2, 1, 256, 256) and torch.isfinite(low).all()
    # each box is decoded on its own: a batch equals one box at a time
    one = torch.cat([r.low_res_logits(boxes[i:i + 1]) for i in range(2)])
    assert float((low - one).abs().max()) <= 1e-5
    m = r.masks(boxes)
    assert m.shape == (2, h, w) and m.dtype == bool
    # the boxes matter: two different boxes give different logits
    assert float((low[0] - low[1]).abs().max()) > 0
    np.testing.assert_array_equal(m, r.masks(boxes))


def test_variant_needs_the_right_files(tiny_models, tiny_hf):
    from saa.models.hf_sam import HFBoxRefiner

    with pytest.raises(CheckpointError, match="save_pretrained folder"):
        HFBoxRefiner(tiny_models.sam_checkpoint, variant="sam2")
    with pytest.raises(CheckpointError, match=r"holds a 'sam2' model.*'sam_hq'"):
        HFBoxRefiner(tiny_hf.sam2, variant="sam_hq")
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        HFBoxRefiner(tiny_models.saliency_checkpoint, variant="sam")


def test_detector_refuses_a_mismatched_checkpoint(tiny_models, tmp_path):
    from saa.models.hf_grounding import HFGroundingDetector

    with pytest.raises(CheckpointError, match="not a Grounding DINO checkpoint"):
        HFGroundingDetector(tiny_models.grounding_config, tiny_models.sam_checkpoint, tiny_models.text_encoder)
    cfg = tmp_path / "cfg.py"
    cfg.write_text(Path(tiny_models.grounding_config).read_text().replace("enc_layers = 1", "enc_layers = 2"))
    with pytest.raises(CheckpointError, match=r"does not match.*1? ?missing|does not match"):
        HFGroundingDetector(cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    cfg.write_text("import os\nbackbone = os.getcwd()\n")
    with pytest.raises(CheckpointError, match="not a plain value"):
        HFGroundingDetector(cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)


def test_end_to_end_maps_agree_tiny(tiny_models, tiny_hf, detectors):
    """Reference stack (groundingdino + segment_anything) vs transformers + transformers (SAM), the
    same tiny weights, one real sample image. The detector switch alone changes no decision and the
    map by < 1e-4 (measured 2.6e-5 with the detector swapped alone). SAM's logits differ by float
    rounding (different attention code), which flips a few mask-edge pixels whose logit is within
    noise of 0 (measured: 1 and 2 pixels of two kept masks of ~3200): the map differs there by the
    region's score and within 1e-4 everywhere else."""
    from saa.models.hf_sam import HFBoxRefiner
    from saa.models.sam import BoxRefiner

    img = SAMPLES / "bottle_broken_large_000.jpg"
    cfg = load_config(REPO / "configs" / "mvtec.yaml", backend_overrides(tiny_models, tiny_hf))
    a = SAAPipeline(cfg, detector=detectors["package"], refiner=BoxRefiner(tiny_models.sam_checkpoint)).predict(img, "bottle")
    b = SAAPipeline(cfg, detector=detectors["converted"],
                    refiner=HFBoxRefiner(tiny_models.sam_checkpoint, variant="sam")).predict(img, "bottle")
    assert len(a.kept) > 0  # the comparison covers kept regions, not just zero maps
    assert [(k.stage, k.query, k.dropped) for k in a.candidates] == [(k.stage, k.query, k.dropped) for k in b.candidates]
    np.testing.assert_allclose([k.rescored for k in a.kept], [k.rescored for k in b.kept], rtol=0, atol=1e-4)
    flips = a.kept_masks != b.kept_masks
    areas = a.kept_masks.reshape(len(a.kept_masks), -1).sum(1)
    n_flips = flips.reshape(len(flips), -1).sum(1)
    assert np.all(n_flips <= np.maximum(30, 1e-3 * areas)), (n_flips, areas)
    diff = np.abs(a.anomaly_map_full - b.anomaly_map_full)
    outside = float(diff[~flips.any(axis=0)].max())
    assert outside <= 1e-4, outside
    print(f"tiny end to end: mask-edge flips {n_flips.tolist()} of {areas.tolist()} px, max |map| "
          f"{diff.max():.3f} there, {outside:.2e} elsewhere")


# the combination test runs the CLI 8 times: two captions per image keep it quick
FEW_PROMPTS = ["general_prompts=[]", 'categories.hazelnut.prompts=[["crack. hole.", "hazelnut"]]', "out_size=64"]


@pytest.mark.parametrize("combo", BACKEND_COMBINATIONS, ids=["-".join(c) for c in BACKEND_COMBINATIONS])
def test_saa_predict_every_combination(tiny_models, tiny_hf, tmp_path, combo):
    from saa.cli import main

    img = SAMPLES / "hazelnut_crack.jpg"
    out = tmp_path / "out"
    args = ["predict", "--config", str(REPO / "configs" / "mvtec.yaml"), "--category", "hazelnut",
            "--out", str(out), "--panels", "none", str(img)]
    for s in backend_overrides(tiny_models, tiny_hf, *combo, folders=combo[1] == "transformers") + FEW_PROMPTS:
        args += ["--set", s]
    assert main(args) == 0
    m = np.load(out / f"{img.stem}.npy")
    assert m.shape == (64, 64) and np.isfinite(m).all() and m.min() >= 0
    info = json.loads((out / f"{img.stem}.json").read_text())
    assert info["category"] == "hazelnut"
    assert info["candidates"]  # the detector ran and proposed boxes over the threshold
    assert all(c["caption"] in ("hazelnut.", "crack. hole.") for c in info["candidates"])
