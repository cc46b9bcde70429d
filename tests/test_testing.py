"""saa.testing: tiny random-weight model files that the real loaders read."""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from saa.testing import (TinyModels, build_tiny_models, dino_input, load_tiny_sam, synthetic_image,
                         tiny_config_overrides)

from tests.conftest import REALDATA

CHECKPOINTS = ("grounding_checkpoint", "sam_checkpoint", "saliency_checkpoint")


def sha(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bottle_rgb() -> np.ndarray:
    from PIL import Image
    hits = sorted(REALDATA.glob("mvtec_ad__*/bottle/test/broken_large/000.png"))
    if not hits:
        pytest.skip(f"real bottle image not found under {REALDATA}")
    return np.array(Image.open(hits[0]).convert("RGB"))


@pytest.fixture(scope="module")
def dino(tiny_models):
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    args = SLConfig.fromfile(tiny_models.grounding_config)
    args.device = "cpu"
    with contextlib.redirect_stdout(io.StringIO()):
        model = build_model(args)
    state = torch.load(tiny_models.grounding_checkpoint, map_location="cpu", weights_only=True)
    assert set(state) == {"model"}
    model.load_state_dict(state["model"], strict=True)
    return model.eval()


def test_files_exist_and_manifest(tiny_models: TinyModels):
    for p in tiny_models.files():
        assert Path(p).is_absolute() and Path(p).is_file() and Path(p).stat().st_size > 0
    te = Path(tiny_models.text_encoder)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (te / name).is_file()
    cfg = Path(tiny_models.grounding_config).read_text()
    assert f"text_encoder_type = {str(te)!r}" in cfg and "enc_layers = 1" in cfg
    m = json.loads(Path(tiny_models.manifest).read_text())
    assert m["seed"] == 0 and "torch" in m["versions"]
    root = Path(tiny_models.root)
    for rel, digest in m["sha256"].items():
        assert sha(root / rel) == digest
    assert {os.path.relpath(getattr(tiny_models, k), root) for k in CHECKPOINTS} <= set(m["sha256"])


def test_overrides(tiny_models):
    ov = dict(s.split("=", 1) for s in tiny_config_overrides(tiny_models))
    assert ov == {
        "models.grounding.config": tiny_models.grounding_config,
        "models.grounding.checkpoint": tiny_models.grounding_checkpoint,
        "models.grounding.text_encoder": tiny_models.text_encoder,
        "models.sam.checkpoint": tiny_models.sam_checkpoint,
        "models.saliency.backbone": "resnet18",
        "models.saliency.checkpoint": tiny_models.saliency_checkpoint,
    }


def test_reuse_without_rebuild(tiny_models):
    files = tiny_models.files() + [str(p) for p in Path(tiny_models.text_encoder).iterdir()]
    before = {p: os.stat(p).st_mtime_ns for p in files}
    again = build_tiny_models(tiny_models.root, seed=0)
    assert again == tiny_models
    assert {p: os.stat(p).st_mtime_ns for p in files} == before


def test_deterministic_per_seed(tiny_models, tmp_path):
    same = build_tiny_models(tmp_path / "same", seed=0)
    other = build_tiny_models(tmp_path / "other", seed=1)
    for k in CHECKPOINTS:
        assert sha(getattr(same, k)) == sha(getattr(tiny_models, k)), k
        assert sha(getattr(other, k)) != sha(getattr(tiny_models, k)), k
    te = "model.safetensors"
    assert sha(Path(same.text_encoder) / te) == sha(Path(tiny_models.text_encoder) / te)


def test_vocabulary_has_no_unknown_words(tiny_models):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_models.text_encoder)
    captions = ["defect on metal_nut.", "broken part. contamination. white broken.", "chewinggum.",
                "printed_circuit_board,.", "yellow paper on pcb.", "a zebra-striped thing? (x/y): 42;",
                "black hole. blow hole. break. crack. fray. uneven."]
    for c in captions:
        ids = tok(c)["input_ids"]
        assert tok.unk_token_id not in ids, c
    assert len(tok("defect on bottle.")["input_ids"]) == 6  # whole words, not characters


def _dino_scores(model, rgb, caption):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(dino_input(rgb)[None], captions=[caption])
    return out["pred_logits"][0].sigmoid().max(dim=1).values, out["pred_boxes"][0]


def test_grounding_boxes_calibrated(dino):
    rgb = bottle_rgb()
    for caption in ("defect on bottle.", "bottle,."):
        score, boxes = _dino_scores(dino, rgb, caption)
        keep = score > 0.1
        assert 3 <= int(keep.sum()) <= 40, (caption, int(keep.sum()))
        area = boxes[keep, 2] * boxes[keep, 3]
        assert (area < 0.3).sum() >= 2
        assert ((boxes >= 0) & (boxes <= 1)).all()
    # the synthetic calibration image itself gives about the target count
    score, _ = _dino_scores(dino, synthetic_image(), "defect on bottle.")
    assert 5 <= int((score > 0.1).sum()) <= 30


def test_sam_masks_calibrated(tiny_models):
    from segment_anything import SamPredictor
    rgb = bottle_rgb()
    h, w = rgb.shape[:2]
    pred = SamPredictor(load_tiny_sam(tiny_models))
    pred.set_image(rgb)
    boxes = torch.tensor([[100, 100, 400, 400], [500, 200, 800, 600], [300, 500, 500, 800],
                          [50, 600, 250, 880]], dtype=torch.float32)
    with torch.no_grad():
        masks, _, _ = pred.predict_torch(None, None, boxes=pred.transform.apply_boxes_torch(boxes, (h, w)),
                                         multimask_output=False)
    masks = masks[:, 0]
    assert masks.shape == (4, h, w)
    frac = masks.float().mean(dim=(1, 2))
    assert (frac > 0.001).all() and (frac < 0.5).all(), frac
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not torch.equal(masks[i], masks[j])


def test_saliency_backbone_features(tiny_models):
    import timm
    model = timm.create_model(tiny_models.saliency_backbone, pretrained=False, features_only=True,
                              out_indices=(1, 2, 3))
    sd = torch.load(tiny_models.saliency_checkpoint, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing
    x = torch.from_numpy(synthetic_image(256)).permute(2, 0, 1).float()[None] / 255
    with torch.no_grad():
        feats = model.eval()(x)
    for f in feats:
        assert torch.isfinite(f).all()
        assert f.std() > 1e-3 and f.abs().max() < 1e4
