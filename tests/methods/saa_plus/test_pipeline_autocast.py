"""``models.precision`` bf16 / fp16 autocast on the CPU: the pipeline's autocast branch (the one a GPU
runs) runs in the normal suite, so a dtype mistake (a bf16 tensor handed to numpy, a half-precision
feature grid mixed with float32 masks) fails here, without a GPU. fp32 and tf32 compute in float32
on the CPU (tf32 only changes CUDA matrix products)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from saa.config import load_config
from saa.image_io import read_rgb
from saa.methods.saa_plus import SAAPipeline
from saa.testing import tiny_config_overrides

from tests.conftest import BOTTLE

from tests.conftest import REPO  # noqa: E402
MVTEC = REPO / "configs" / "mvtec.yaml"
SMALL = ["general_prompts=[]", "out_size=64"]


def _pipe(tiny_models, precision: str) -> SAAPipeline:
    cfg = load_config(MVTEC, tiny_config_overrides(tiny_models) + SMALL + [f"models.precision={precision}"])
    return SAAPipeline(cfg)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        return _first_tensor(list(out.values()))
    tensors = getattr(out, "tensors", None)  # groundingdino's NestedTensor
    return tensors if isinstance(tensors, torch.Tensor) else None


def _record_dtypes(modules: dict) -> dict[str, set]:
    """Output dtypes of each module's forward calls, by name."""
    seen: dict[str, set] = {name: set() for name in modules}
    for name, module in modules.items():
        def hook(_m, _i, out, name=name):
            t = _first_tensor(out)
            if t is not None:
                seen[name].add(t.dtype)
        module.register_forward_hook(hook)
    return seen


@pytest.fixture(scope="module")
def images():
    paths = sorted(BOTTLE.glob("test/*/000.png"))[:2]
    assert len(paths) == 2
    a = cv2.resize(read_rgb(paths[0]), (160, 160), interpolation=cv2.INTER_AREA)
    b = cv2.resize(read_rgb(paths[1]), (192, 128), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(a), np.ascontiguousarray(b)]


def test_bf16_autocast_runs_every_model_in_bf16_on_the_cpu(tiny_models, images):
    pipe = _pipe(tiny_models, "bf16").load_models()
    # a linear layer of the Swin backbone's last block and of SAM's image encoder, the saliency
    # CNN's first convolution, SAM's decoder (their layer norms compute in float32 under autocast)
    swin = pipe.detector.model.backbone[0]
    seen = _record_dtypes({"detector": swin.layers[-1].blocks[-1].mlp.fc2,
                           "sam": pipe.refiner.model.image_encoder.blocks[-1].mlp.lin2,
                           "cnn": next(m for m in pipe.extractor.model.modules() if isinstance(m, torch.nn.Conv2d)),
                           "decoder": pipe.refiner.model.mask_decoder.output_upscaling[0]})
    batch = pipe.predict_batch(images, "bottle")
    one = pipe.predict(images[1], "bottle")
    assert seen["detector"] == {torch.bfloat16} and seen["sam"] == {torch.bfloat16}
    assert seen["cnn"] == {torch.bfloat16} and seen["decoder"] == {torch.bfloat16}
    for pred in batch + [one]:
        for m in (pred.anomaly_map, pred.anomaly_map_full, pred.saliency):
            assert m.dtype == np.float32 and np.isfinite(m).all()
        assert np.isfinite(pred.score)
        assert all(np.isfinite(c.score) for c in pred.candidates)
    assert batch[1].anomaly_map_full.shape == (128, 192)
    # the batch under autocast: the same maps as one image at a time under autocast
    assert float(np.abs(batch[1].anomaly_map - one.anomaly_map).max()) <= 1e-6
    assert float(np.abs(batch[1].saliency - one.saliency).max()) <= 1e-6


def test_fp32_and_tf32_compute_in_float32_on_the_cpu(tiny_models, images):
    fp32, tf32 = _pipe(tiny_models, "fp32"), _pipe(tiny_models, "tf32")
    seen = _record_dtypes({"cnn": fp32.extractor.model})
    a = fp32.saliency_features(images[0])
    tf32._extractor = fp32.extractor
    b = tf32.saliency_features(images[0])
    assert seen["cnn"] == {torch.float32}
    assert torch.equal(a, b)


def test_fp16_autocast_of_the_saliency_cnn_on_the_cpu(tiny_models, images):
    """fp16 autocast on the CPU (slow there; the CNN alone here): the CNN runs in float16 and the
    features come back as float32 on the CPU, close to fp32's."""
    fp32, fp16 = _pipe(tiny_models, "fp32"), _pipe(tiny_models, "fp16")
    fp16._extractor = fp32.extractor
    seen = _record_dtypes({"cnn": next(m for m in fp32.extractor.model.modules() if isinstance(m, torch.nn.Conv2d))})
    half = fp16.saliency_features_batch(images)
    assert seen["cnn"] == {torch.float16}
    full = [fp32.saliency_features(im) for im in images]
    for h, f in zip(half, full):
        assert h.dtype == torch.float32 and h.device.type == "cpu" and h.shape == f.shape
        assert 0 < float((h - f).abs().max()) < 0.05
