"""The CUDA paths with the tiny models, on a GPU (marker ``cuda``; collected everywhere, skipped with
the reason where no CUDA device exists): ``saa predict``, ``saa run`` with resume and batches, lite,
every ``models.precision``, batch sizes, the metrics' CUDA sort, and torchrun (two processes on one
GPU over gloo; one process per GPU over nccl where there are two GPUs).

Run them on a GPU machine: ``python -m pytest -m cuda tests/test_cuda.py`` (part of
``scripts/device_gpu_bench.sh``). Nothing here reads ``../shared``: the images are the repository's
``assets/samples`` and a synthetic one, so the tests run on a machine that only has the checkout.
On the GPU the arithmetic differs from the CPU's in the last bits and the random-weight detector can
amplify that, so CUDA maps are compared with CPU maps loosely and with each other (batch sizes,
processes) tightly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from saa.cli import main as cli_main
from saa.config import load_config
from saa.image_io import read_rgb
from saa.methods.saa_plus import SAAPipeline
from saa.testing import synthetic_image, tiny_config_overrides

from tests.conftest import REPO, free_port  # noqa: E402
MVTEC = REPO / "configs" / "mvtec.yaml"
SAMPLES = REPO / "assets" / "samples"
SMALL = ["general_prompts=[]", "out_size=64", "dataset.options.eval_size=64"]
NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False); run on a GPU machine: bash scripts/device_gpu_bench.sh"

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]


def _square_mask(shape, box) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny MVTec tree from the repository's own images: two sizes, masks drawn by hand."""
    root = tmp_path_factory.mktemp("cuda_mvtec") / "bottle"
    good = cv2.cvtColor(synthetic_image(160), cv2.COLOR_RGB2BGR)
    items = {"good/000.png": (good, None),
             "broken_large/000.png": (cv2.resize(cv2.imread(str(SAMPLES / "bottle_broken_large_000.jpg")), (160, 160)),
                                      (40, 40, 90, 100)),
             "contamination/000.png": (cv2.resize(cv2.imread(str(SAMPLES / "bottle_contamination_000.jpg")),
                                                  (192, 128)), (30, 60, 70, 120))}
    for rel, (img, box) in items.items():
        path = root / "test" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), img)
        if box is not None:
            mask = root / "ground_truth" / rel.replace(".png", "_mask.png")
            mask.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(mask), _square_mask(img.shape[:2], box))
    return root.parent


def _images(data: Path) -> list[np.ndarray]:
    return [read_rgb(p) for p in sorted((data / "bottle" / "test").rglob("*.png"))]


def _overrides(tiny_models, *extra) -> list[str]:
    return tiny_config_overrides(tiny_models) + SMALL + list(extra)


def _sets(overrides) -> list[str]:
    return [x for s in overrides for x in ("--set", s)]


def _maps(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p)["map"] for p in sorted((out / "bottle" / "maps").glob("*.npz"))}


def _maxdiff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _assert_same_maps(a: list, b: list) -> None:
    """The maps of a batch and of one image at a time on a GPU: another batch shape may get other
    kernels, whose last bits can flip a SAM mask pixel whose logit is within float noise of 0, so
    a few pixels may differ; a mix-up of images would move the mean and many pixels."""
    assert len(a) == len(b) and a
    d = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b)])
    assert float(d.mean()) <= 1e-5 and float((d > 1e-4).mean()) <= 1e-3, (float(d.max()), float(d.mean()))


def test_predict_on_cuda(tiny_models, data, tmp_path):
    """`saa predict --device cuda`: every model on the GPU, the outputs written, the map close to the
    CPU's (the same random models, other arithmetic)."""
    cfg = load_config(MVTEC, _overrides(tiny_models, "models.device=cuda"))
    pipe = SAAPipeline(cfg).load_models()
    assert next(pipe.detector.model.parameters()).is_cuda and next(pipe.refiner.model.parameters()).is_cuda
    assert next(pipe.extractor.model.parameters()).is_cuda
    image = _images(data)[0]
    gpu = pipe.predict(image, "bottle")
    cpu = SAAPipeline(load_config(MVTEC, _overrides(tiny_models))).predict(image, "bottle")
    for m in (gpu.anomaly_map, gpu.saliency):
        assert m.dtype == np.float32 and np.isfinite(m).all()
    assert float(np.abs(gpu.saliency - cpu.saliency).max()) < 1e-3
    assert float(np.abs(gpu.anomaly_map - cpu.anomaly_map).mean()) < 0.05

    path = next((data / "bottle" / "test" / "broken_large").glob("*.png"))
    rc = cli_main(["predict", "--config", str(MVTEC), "--category", "bottle", "--device", "cuda", "--out",
                   str(tmp_path / "pred"), "--panels", "none", str(path)] + _sets(_overrides(tiny_models)))
    assert rc == 0
    got = json.loads((tmp_path / "pred" / f"{path.stem}.json").read_text())
    assert np.isfinite(got["score"]) and np.load(tmp_path / "pred" / f"{path.stem}.npy").shape == (64, 64)


def test_run_with_batches_and_resume_on_cuda(tiny_models, data, tmp_path):
    """`saa run --device cuda --batch-size 3`, then again: every map reused; and the maps of B = 1."""
    out = tmp_path / "run"
    args = ["run", str(MVTEC), "--data-root", str(data), "--out", str(out), "--device", "cuda", "--no-progress"]
    assert cli_main(args + ["--batch-size", "3"] + _sets(_overrides(tiny_models))) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["device"] == "cuda" and first["totals"]["computed"] == 3
    maps = {p.name: p.stat().st_mtime_ns for p in (out / "bottle" / "maps").glob("*.npz")}
    assert cli_main(args + ["--batch-size", "3"] + _sets(_overrides(tiny_models))) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["totals"]["reused"] == 3 and again["totals"]["computed"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "bottle" / "maps").glob("*.npz")} == maps
    assert again["categories"]["bottle"]["metrics"] == first["categories"]["bottle"]["metrics"]

    one = tmp_path / "one"
    assert cli_main(["run", str(MVTEC), "--data-root", str(data), "--out", str(one), "--device", "cuda",
                     "--no-progress", "--batch-size", "1"] + _sets(_overrides(tiny_models))) == 0
    a, b = _maps(one), _maps(out)
    assert a.keys() == b.keys()
    _assert_same_maps([a[k] for k in a], [b[k] for k in a])


def test_lite_on_cuda(tiny_models, data, tmp_path):
    """lite on the GPU (with the tiny CNN as its backbone), B = 1 and B = 3."""
    lite = ["method=lite", "method_options.lite.backbone=resnet18",
            f"method_options.lite.checkpoint={tiny_models.saliency_checkpoint}"]
    outs = {}
    for b in (1, 3):
        outs[b] = tmp_path / f"b{b}"
        rc = cli_main(["run", str(MVTEC), "--data-root", str(data), "--out", str(outs[b]), "--device", "cuda",
                       "--no-progress", "--batch-size", str(b)] + _sets(SMALL + lite))
        assert rc == 0
    res = json.loads((outs[3] / "metrics.json").read_text())
    assert res["method"] == "lite" and res["device"] == "cuda" and res["totals"]["computed"] == 3
    assert _maxdiff(_maps(outs[1]), _maps(outs[3])) <= 1e-4


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_every_precision_on_cuda(tiny_models, data, precision):
    """Each precision predicts valid float32 maps; autocast (bf16, fp16) runs SAM's encoder and the
    CNN in that dtype, fp32 / tf32 in float32; a batch equals one image at a time."""
    pipe = SAAPipeline(load_config(MVTEC, _overrides(tiny_models, "models.device=cuda",
                                                     f"models.precision={precision}"))).load_models()
    seen = set()  # a linear layer of SAM's encoder (its layer norms compute in float32 under autocast)
    pipe.refiner.model.image_encoder.blocks[-1].mlp.lin2.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    images = _images(data)
    batch = pipe.predict_batch(images, "bottle")
    one = pipe.predict(images[2], "bottle")
    want = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen == {want}
    assert torch.backends.cuda.matmul.allow_tf32 == (precision == "tf32")
    for pred in batch + [one]:
        assert pred.anomaly_map.dtype == np.float32 and np.isfinite(pred.anomaly_map).all()
        assert np.isfinite(pred.saliency).all() and np.isfinite(pred.score)
    if want == torch.float32:
        _assert_same_maps([batch[2].anomaly_map], [one.anomaly_map])
    else:  # half precision: batch shapes round differently
        assert float(np.abs(batch[2].anomaly_map - one.anomaly_map).mean()) <= 1e-2


def test_batch_sizes_on_cuda(tiny_models, data):
    """predict_batch of 1, 2 and 3 images (two sizes) on the GPU: the maps of one image at a time."""
    pipe = SAAPipeline(load_config(MVTEC, _overrides(tiny_models, "models.device=cuda"))).load_models()
    images = _images(data)
    one = [pipe.predict(im, "bottle").anomaly_map for im in images]
    for b in (2, 3):
        got = []
        for i in range(0, len(images), b):
            got += [p.anomaly_map for p in pipe.predict_batch(images[i:i + b], "bottle")]
        _assert_same_maps(one, got)
    peak = torch.cuda.max_memory_allocated()
    assert peak > 0


def test_metrics_sort_on_cuda():
    """compute_all(..., device="cuda") sorts the pixels on the GPU: the same metrics as the CPU sort."""
    from saa.metrics import compute_all

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 64, 64), bool)
    masks[1, 10:30, 10:30] = masks[3, 40:60, 5:25] = masks[4, 0:8, 0:64] = True
    maps = rng.random((6, 64, 64)).astype(np.float32) + 0.3 * masks
    labels = masks.reshape(6, -1).any(1).astype(int)
    scores = maps.reshape(6, -1).max(1)
    cpu = compute_all(labels, scores, masks, maps)
    gpu = compute_all(labels, scores, masks, maps, device="cuda")
    assert cpu.keys() == gpu.keys()
    for k in cpu:
        assert cpu[k] == pytest.approx(gpu[k], abs=1e-12, nan_ok=True), k


def _torchrun(tiny_models, data, out: Path, nproc: int, env_extra: dict, device: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    args = [str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out), "--no-progress",
            "--device", device] + _sets(_overrides(tiny_models))
    if nproc == 1:
        cmd = [sys.executable] + args
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", free_port()] + args
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r


def test_torchrun_two_processes_on_one_gpu(tiny_models, data, tmp_path):
    """torchrun with 2 processes sharing the GPU (gloo: nccl needs one GPU per process): the maps of one process."""
    _torchrun(tiny_models, data, tmp_path / "one", 1, {}, "cuda:0")
    r = _torchrun(tiny_models, data, tmp_path / "two", 2, {"SAA_DIST_BACKEND": "gloo"}, "cuda:0")
    assert "3 images (3 computed by 2 processes, 0 reused)" in r.stdout
    assert _maxdiff(_maps(tmp_path / "one"), _maps(tmp_path / "two")) <= 1e-6


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="torchrun with one process per GPU over nccl needs "
                                                           f"2 GPUs; this machine has {torch.cuda.device_count()}")
def test_torchrun_one_process_per_gpu_nccl(tiny_models, data, tmp_path):
    _torchrun(tiny_models, data, tmp_path / "one", 1, {}, "cuda")
    r = _torchrun(tiny_models, data, tmp_path / "two", 2, {}, "cuda")
    assert "3 images (3 computed by 2 processes, 0 reused)" in r.stdout
    a, b = _maps(tmp_path / "one"), _maps(tmp_path / "two")
    assert a.keys() == b.keys()
    _assert_same_maps([a[k] for k in a], [b[k] for k in a])
