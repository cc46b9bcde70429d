"""scripts/bench_authors.py, the GPU comparison's harness around the authors' code, on a stand-in
snapshot with the authors' layout and interface (``SAA.Model``, the prompt tables, ``ModelINet``
building its CNN with ``timm.create_model(..., pretrained=True)``, an uncompiled Grounding DINO whose
``MultiScaleDeformableAttnFunction`` needs ``_C``). The real code is not in this repository; this
checks the harness itself: the paths it imports from, its two patches, the prompts it sets, the maps
and results it writes, and an image the code fails on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.conftest import REPO  # noqa: E402

MS_DEFORM = '''
import torch
try:
    from groundingdino import _C
except ImportError:
    pass

def multi_scale_deformable_attn_pytorch(value, value_spatial_shapes, sampling_locations, attention_weights):
    return value * 0 + 1.0  # the stand-in's PyTorch path

class MultiScaleDeformableAttnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, shapes, level_start, loc, attn, step):
        return _C.ms_deform_attn_forward(value, shapes, level_start, loc, attn, step)  # NameError: not compiled
'''

GET_TOKENLIZER = '''
from transformers import BertModel

def get_pretrained_language_model(text_encoder_type):  # the authors' copy: hub names only
    if text_encoder_type == "bert-base-uncased":
        return BertModel.from_pretrained(text_encoder_type)
    raise ValueError("Unknown text_encoder_type {}".format(text_encoder_type))
'''

MODELINET = '''
import timm
import torch

class ModelINet(torch.nn.Module):
    def __init__(self, device, backbone_name="resnet18", out_indices=(1, 2)):
        super().__init__()
        self.backbone = timm.create_model(model_name=backbone_name, pretrained=True, checkpoint_path="",
                                          features_only=True, out_indices=out_indices)
'''

MODEL = '''
import numpy as np
import torch
from groundingdino.models.GroundingDINO.ms_deform_attn import MultiScaleDeformableAttnFunction
from groundingdino.util import get_tokenlizer
from .modelinet import ModelINet

class Model(torch.nn.Module):
    def __init__(self, dino_config_file, dino_checkpoint, sam_checkpoint, box_threshold, text_threshold,
                 out_size=256, device="cuda"):
        super().__init__()
        self.files = (dino_config_file, dino_checkpoint, sam_checkpoint)
        self.out_size, self.device = out_size, device
        config = {}
        exec(open(dino_config_file).read(), config)  # as the authors' SLConfig reads it
        self.bert = get_tokenlizer.get_pretrained_language_model(config["text_encoder_type"])
        self.visual_saliency_extractor = ModelINet(device=device)

    def set_ensemble_text_prompts(self, prompts, verbose=False):
        self.defect_prompt_list = [p[0] for p in prompts]

    def set_property_text_prompts(self, sentence, verbose=False):
        self.object_prompt = sentence.split(" ")[7]

    def forward(self, image):
        if image.mean() > 250:
            raise IndexError("no object box survived")
        attn = MultiScaleDeformableAttnFunction.apply(torch.zeros(2), None, None, None, None, 64)
        w = float(self.visual_saliency_extractor.backbone.conv1.weight.abs().sum())
        value = float(image.mean()) / 255.0 * float(attn.sum()) * len(self.defect_prompt_list) + w
        return np.full((self.out_size, self.out_size), value), {"similarity_map": None}
'''

INIT = '''
from .model import Model

def build_general_prompts(category):
    return [["defect.", category], ["flaw.", category]]

manul_prompts = {"mvtec": {"bottle": [["crack.", "bottle"]]}}
property_prompts = {"mvtec": {"bottle": "the image of bottle have 1 dissimilar bottle, with a maximum of 5 anomaly. "
                                         "The anomaly would not exceed 0.3 object area. "}}
'''


def _snapshot(root: Path) -> Path:
    files = {"SAA/__init__.py": INIT, "SAA/model.py": MODEL, "SAA/modelinet.py": MODELINET,
             "GroundingDINO/groundingdino/__init__.py": "",
             "GroundingDINO/groundingdino/models/__init__.py": "",
             "GroundingDINO/groundingdino/models/GroundingDINO/__init__.py": "",
             "GroundingDINO/groundingdino/models/GroundingDINO/ms_deform_attn.py": MS_DEFORM,
             "GroundingDINO/groundingdino/util/__init__.py": "",
             "GroundingDINO/groundingdino/util/get_tokenlizer.py": GET_TOKENLIZER,
             "SAM/segment_anything/__init__.py": ""}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_harness_on_a_stand_in_snapshot(tmp_path, tiny_models):
    import cv2
    import timm

    snap = _snapshot(tmp_path / "snapshot")
    torch.manual_seed(0)
    cnn = timm.create_model("resnet18", pretrained=False)
    torch.save(cnn.state_dict(), tmp_path / "resnet18.pth")
    # the model files' BERT is a local folder (as benchmark.py --build-only writes it), which the
    # authors' copy refuses (hub names only): the harness loads it from the folder
    (tmp_path / "cfg.py").write_text(f"text_encoder_type = {str(tiny_models.text_encoder)!r}\n")
    files = {"grounding_config": str(tmp_path / "cfg.py"), "grounding_checkpoint": "dino.pth", "text_encoder": "bert",
             "sam_checkpoint": "sam.pth", "saliency_checkpoint": str(tmp_path / "resnet18.pth")}
    (tmp_path / "files.json").write_text(json.dumps({"files": files}))
    images = []
    for kind, value in (("good", 100), ("crack", 50), ("white", 255)):
        p = tmp_path / "bottle" / "test" / kind / "000.png"
        p.parent.mkdir(parents=True)
        cv2.imwrite(str(p), np.full((32, 48, 3), value, np.uint8))
        images.append(str(p))
    out, maps = tmp_path / "authors.json", tmp_path / "maps.npz"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "scripts/bench_authors.py"), "--snapshot", str(snap), "--files",
                        str(tmp_path / "files.json"), "--images", *images, "--device", "cpu", "--out-size", "16",
                        "--out", str(out), "--maps", str(maps)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["images"] == 3 and res["images_per_s"] > 0 and res["captions_per_image"] == 4
    assert list(res["failed_images"]) == ["white/000.png"] and "no object box" in res["failed_images"]["white/000.png"]
    notes = " ".join(res["notes"])
    assert "PyTorch path" in notes and "pretrained=False" in notes
    assert f"text encoder loaded from the folder {tiny_models.text_encoder}" in notes
    with np.load(maps) as z:
        assert sorted(z.files) == ["crack/000.png", "good/000.png"]
        w = float(cnn.conv1.weight.detach().abs().sum())  # the random file was loaded, not timm's initialisation
        # the patched deformable attention (the PyTorch path: ones) and the 3 captions set as the prompts
        np.testing.assert_allclose(z["good/000.png"], np.full((16, 16), 100 / 255 * 2 * 3 + w), rtol=1e-6)
        assert z["crack/000.png"].shape == (16, 16) and z["crack/000.png"].dtype == np.float64
