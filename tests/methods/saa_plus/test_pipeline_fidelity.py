"""Step-by-step comparison with the authors' implementation (../shared/fidelity/).

The reference holds the authors' outputs on fixed random-weight model files for three real images.
Floating-point results of the big networks differ in the last bits between CPUs (MKL/oneDNN pick
different kernels), and the random detector amplifies such bits for a few queries. So every stage is
checked on the reference's OWN inputs to that stage:

1. preprocessing (detector input tensor, token ids) — exact;
2. the detector on this CPU agrees with the reference outputs for nearly all queries;
3. regularisation replayed on the reference detector outputs: which boxes pass score/area/phrase
   filters, their scores and phrases, object area, defect area limit, pixel boxes — exact;
4. SAM masks of those boxes — equal up to a few boundary pixels;
5. saliency map — within 1e-4;
6. re-scoring, top-K selection and the fused anomaly map — within 1e-4 of the reference.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saa.config import load_config
from saa.models.grounding import DetectorOutput, GroundingDetector, normalize_caption
from saa.methods.saa_plus import SAAPipeline

from tests.conftest import REPO, SHARED

FID = SHARED / "fidelity"
REF = FID / "reference"

CASES = [
    ("mvtec_bottle/000_broken_large_000", "mvtec.yaml", "bottle",
     "mvtec_ad__*/bottle/test/broken_large/000.png"),
    ("mvtec_bottle/001_good_000", "mvtec.yaml", "bottle", "mvtec_ad__*/bottle/test/good/000.png"),
    ("visa_public_candle/000_visa_candle_candle", "visa_public.yaml", "candle", None),
]


@pytest.fixture(scope="session")
def fidelity_models(tmp_path_factory):
    assert FID.is_dir(), f"the fidelity kit is missing: {FID}"
    out = tmp_path_factory.mktemp("fidelity_ckpt")
    # through saa.models.compat: the kit drives the package's BERT wrapper, which needs saa's
    # shim under transformers 5 (a no-op under transformers 4)
    subprocess.run([sys.executable, "-m", "saa.models.compat", str(FID / "make_checkpoints.py"), str(out), "--seed", "0",
                    "--vocab", str(FID / "vocab.txt"), "--dino-logit-bias", "4.787512335209755"],
                   check=True, capture_output=True)
    # under transformers 5 the kit's BertTokenizerFast(vocab_file=...) writes a 5-token tokenizer
    # (vocab.txt itself is right and checked below): rebuild the tokenizer files from vocab.txt
    from saa.testing import write_bert_tokenizer

    write_bert_tokenizer(out / "bert")
    expected = json.loads((FID / "expected_sha256.json").read_text())["sha256"]
    from saa.models.checkpoints import sha256_file

    # SAM, saliency backbone and the text encoder must be byte-identical to the reference's files
    for name in ["sam_small.pth", "wide_resnet50_2_random.pth", "bert/model.safetensors", "bert/vocab.txt"]:
        assert sha256_file(out / name) == expected[name], name
    return out


def overrides(ck: Path) -> list[str]:
    return [f"models.grounding.config={ck}/GroundingDINO_SwinT_OGC_tiny.py",
            f"models.grounding.checkpoint={ck}/groundingdino_random.pth",
            f"models.grounding.text_encoder={ck}/bert",
            f"models.sam.checkpoint={ck}/sam_small.pth",
            f"models.saliency.checkpoint={ck}/wide_resnet50_2_random.pth",
            "models.device=cpu"]


def image_of(case) -> Path:
    prefix, _, _, pattern = case
    if pattern is None:
        return REF / "visa_public_candle" / "candle.JPG"
    hits = sorted((SHARED / "realdata").glob(pattern))
    assert hits, pattern
    return hits[0]


def object_max_area(prefix: str) -> float:
    _, cfg_name, category, _ = next(c for c in CASES if c[0] == prefix)
    return load_config(REPO / "configs" / cfg_name).category(category).object_max_area


class ReplayDetector:
    """Stands in for Grounding DINO: returns the reference's raw outputs, call by call."""

    def __init__(self, prefix: str, tokenizer):
        self.raw = np.load(REF / f"{prefix}_dino_raw.npz")
        self.calls = json.loads((REF / f"{prefix}_intermediates.json").read_text())["dino_calls"]
        self.tokenizer = tokenizer
        self.n = 0

    def set_image(self, rgb):
        self.n = 0

    def reset_image(self):
        pass

    def detect(self, caption: str) -> DetectorOutput:
        call = self.calls[self.n]
        assert normalize_caption(caption) == call["caption_used"], (caption, call["caption_used"])
        probs = np.zeros((900, 256), np.float32)
        p = self.raw[f"call{self.n}_token_probs"]
        probs[:, :p.shape[1]] = p
        boxes = torch.from_numpy(self.raw[f"call{self.n}_boxes_cxcywh"].astype(np.float32))
        self.n += 1
        return DetectorOutput(call["caption_used"], call["input_ids"], boxes, torch.from_numpy(probs))

    phrase = GroundingDetector.phrase


@pytest.fixture(scope="session")
def detector(fidelity_models):
    ck = fidelity_models
    return GroundingDetector(ck / "GroundingDINO_SwinT_OGC_tiny.py", ck / "groundingdino_random.pth", ck / "bert")


@pytest.fixture(scope="session")
def replayed(fidelity_models, detector):
    """Pipeline runs with the reference detector outputs, real SAM and saliency (one per case)."""
    results = {}
    pipes = {}
    for case in CASES:
        prefix, cfg_name, category, _ = case
        if cfg_name not in pipes:
            cfg = load_config(REPO / "configs" / cfg_name, overrides(fidelity_models))
            pipes[cfg_name] = SAAPipeline(cfg)
        pipe = pipes[cfg_name]
        pipe._detector = ReplayDetector(prefix, detector.tokenizer)
        pred = pipe.predict(image_of(case), category, trace=True)
        inter = json.loads((REF / f"{prefix}_intermediates.json").read_text())
        results[prefix] = (pred, inter)
    return results


@pytest.mark.parametrize("case", CASES, ids=[c[0].split("/")[1] for c in CASES])
def test_preprocessing_and_tokens(case, detector):
    prefix = case[0]
    from saa.image_io import read_rgb

    inter = json.loads((REF / f"{prefix}_intermediates.json").read_text())
    x = detector.preprocess(read_rgb(image_of(case)))
    call0 = inter["dino_calls"][0]
    assert list(x.shape) == call0["dino_input_shape"]
    assert float(x.double().sum()) == pytest.approx(call0["dino_input_sum"], rel=1e-9, abs=1e-6)
    assert float(x.double().abs().sum()) == pytest.approx(call0["dino_input_abs_sum"], rel=1e-9)
    for call in inter["dino_calls"]:
        assert normalize_caption(call["caption_in"]) == call["caption_used"]
        assert detector.tokenize(call["caption_used"]) == call["input_ids"]


def test_detector_matches_reference_numerics(detector):
    """Our detector (features computed once, reused per caption) on this CPU vs the reference."""
    from saa.image_io import read_rgb

    case = CASES[0]
    raw = np.load(REF / f"{case[0]}_dino_raw.npz")
    calls = json.loads((REF / f"{case[0]}_intermediates.json").read_text())["dino_calls"]
    detector.set_image(read_rgb(image_of(case)))
    for j, call in enumerate(calls):
        out = detector.detect(call["caption_in"])
        ref_p = raw[f"call{j}_token_probs"]
        diff = np.abs(out.token_probs[:, :ref_p.shape[1]].numpy() - ref_p).max(axis=1)
        bdiff = np.abs(out.boxes.numpy() - raw[f"call{j}_boxes_cxcywh"]).max(axis=1)
        # last-bit CPU differences are amplified for a few queries only
        assert np.median(diff) < 1e-5 and np.median(bdiff) < 1e-5, call["caption_used"]
        assert (diff < 1e-4).mean() > 0.95, call["caption_used"]
        assert float(out.token_probs[:, len(out.input_ids):].abs().max()) == 0.0
    detector.reset_image()


@pytest.mark.parametrize("prefix", [c[0] for c in CASES], ids=[c[0].split("/")[1] for c in CASES])
def test_regularisation_replayed_exactly(prefix, replayed):
    pred, inter = replayed[prefix]
    for k, sup in enumerate(inter["bbox_suppression"]):
        stage, pi = ("object", 0) if k == 0 else ("defect", k - 1)
        cands = [c for c in pred.candidates if c.stage == stage and c.prompt_index == pi]
        assert len(cands) == sup["n_pass_score"]
        passed = [c for c in cands if c.dropped != "area"]
        assert len(passed) == sup["n_pass_score_and_area"]
        assert [c.query for c in passed] == sup["candidate_query_indices"]
        assert [c.phrase for c in passed] == sup["candidate_phrases"]
        kept = [c for c in passed if c.dropped != "phrase"]
        assert [c.query for c in kept] == sup["kept_query_indices"]
        assert len(passed) - len(kept) == sup["n_dropped_by_phrase_filter"]
        assert [c.score for c in kept] == sup["kept_scores"]
        np.testing.assert_array_equal(np.array([c.box_cxcywh for c in kept], np.float32).reshape(-1, 4),
                                      np.array(sup["kept_boxes_cxcywh"], np.float32).reshape(-1, 4))
        limit = pred.defect_max_area if stage == "defect" else object_max_area(prefix)
        assert np.float32(sup["max_area"]) == np.float32(limit)
    assert pred.object_area == inter["proposals"][0]["returned_max_box_area"]
    assert pred.defect_max_area == inter["defect_max_area"]
    # pixel boxes handed to SAM
    for stage, rr in zip(["object", "defect"], inter["region_refine"]):
        boxes = [c.box_xyxy for c in pred.candidates if c.stage == stage and c.dropped in (None, "top_k")]
        np.testing.assert_allclose(np.array(boxes), np.array(rr["boxes_xyxy_pixels"]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("prefix", [c[0] for c in CASES], ids=[c[0].split("/")[1] for c in CASES])
def test_sam_masks_match(prefix, replayed):
    pred, inter = replayed[prefix]
    for masks, rr in zip([pred.trace["object_masks"], pred.trace["defect_masks"]], inter["region_refine"]):
        assert list(masks.shape[1:]) == [rr["H"], rr["W"]]
        ours = masks.reshape(len(masks), -1).sum(axis=1)
        ref = np.array(rr["mask_areas"])
        assert len(ours) == len(ref)
        # equal up to a few boundary pixels (logits within float noise of 0)
        assert np.all(np.abs(ours - ref) <= np.maximum(30, 1e-3 * ref)), (ours, ref)


@pytest.mark.parametrize("prefix", [c[0] for c in CASES], ids=[c[0].split("/")[1] for c in CASES])
def test_saliency_matches(prefix, replayed):
    pred, inter = replayed[prefix]
    ref = np.load(REF / f"{prefix}_saliency.npy")
    assert pred.saliency.shape == ref.shape
    assert pred.saliency_branch == ("multi" if inter["saliency"]["branch"] == "multi_instance" else "single")
    assert np.abs(pred.saliency - ref).max() <= 1e-4


@pytest.mark.parametrize("prefix", [c[0] for c in CASES], ids=[c[0].split("/")[1] for c in CASES])
def test_rescore_topk_and_map(prefix, replayed):
    pred, inter = replayed[prefix]
    rs = inter["rescore"]
    defects = [c for c in pred.defects if c.dropped in (None, "top_k")]
    assert [c.score for c in defects] == rs["input_scores"]
    np.testing.assert_allclose([c.rescored for c in defects], rs["rescored"], rtol=2e-4)
    cp = inter["confidence_prompting"]
    assert pred.trace["topk"].tolist() == cp["topk_indices_in_selection_order"]
    np.testing.assert_allclose(pred.trace["rescored"][pred.trace["topk"]], cp["topk_scores"], rtol=2e-4)
    ref = np.load(REF / f"{prefix}_anomaly_map.npy")
    assert pred.anomaly_map.shape == ref.shape and pred.anomaly_map.dtype == np.float32
    diff = np.abs(pred.anomaly_map - ref)
    # measured here: max |diff| 3e-8 on all three cases (the kept masks are identical)
    assert diff.max() <= 1e-4, (diff.max(), (diff > 1e-4).mean())
    print(f"{prefix}: map max|diff| {diff.max():.2e}, pixels > 1e-4: {(diff > 1e-4).mean():.4%}")
    assert pred.anomaly_map.max() == pytest.approx(cp["map_max"], rel=2e-3)
