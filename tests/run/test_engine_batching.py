"""``saa run --batch-size B`` (``models.batch_size``): the image-level models run on B images at once,
the images are decoded in worker processes, and the maps are those of one image at a time.

Images of two sizes (160 x 160 and 192 x 128) go through every batched model: the detector backbone
batches the two 192 x 128 images together and the other alone (nothing is padded), SAM's encoder and
the saliency CNN take all three (each image resized and padded as on its own), lite's CNN groups
them by input shape."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from saa.cli import main as cli_main
from saa.config import load_config
from saa.datasets import build_dataset
from saa.errors import ConfigError, ImageReadError, ImageTooLargeError
from saa.image_io import read_rgb, set_max_pixels
from saa.methods import build_method
from saa.results import ResultStore
from saa.run import engine
from saa.testing import tiny_config_overrides

from tests.conftest import make_mvtec

from tests.conftest import REPO  # noqa: E402
MVTEC = REPO / "configs" / "mvtec.yaml"
SMALL = ["general_prompts=[]", "out_size=64", "dataset.options.eval_size=64"]
OTHER_SIZE = (192, 128)  # width, height


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory) -> Path:
    """The tiny MVTec tree of test_evaluator with two of its three images (and masks) at 192 x 128."""
    root = make_mvtec(tmp_path_factory.mktemp("two_sizes"))
    for rel in ("broken_large/000", "contamination/000"):
        img = root / "bottle" / "test" / f"{rel}.png"
        cv2.imwrite(str(img), cv2.resize(cv2.imread(str(img)), OTHER_SIZE, interpolation=cv2.INTER_AREA))
        mask = root / "bottle" / "ground_truth" / f"{rel}_mask.png"
        m = cv2.resize(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), OTHER_SIZE, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(mask), m)
    shapes = {read_rgb(p).shape for p in (root / "bottle" / "test").rglob("*.png")}
    assert shapes == {(160, 160, 3), (128, 192, 3)}
    return root


def _maps(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p)["map"] for p in sorted((out / "bottle" / "maps").glob("*.npz"))}


def _run(method, data: Path, out: Path, **kw):
    ds = build_dataset("mvtec", str(data))
    return engine.run_category(method, ds, "bottle", ResultStore(out), progress=False, resume=False, **kw)


def test_saa_batch_of_three_equals_one_at_a_time(tiny_models, two_sizes, tmp_path):
    """B = 3 through `saa run --batch-size 3` against B = 1 through the engine: the same maps
    (within 1e-6; on the CPU they are bit-identical). Two objects per image, so the multi-object
    saliency's CNN input is batched too (at 512 x 512 instead of 1024 x 1024: a cheaper test)."""
    extra = ["categories.bottle.n_objects=2", "behaviour.multi_object_size=512"]
    cfg = load_config(MVTEC, tiny_config_overrides(tiny_models) + SMALL + extra)
    one = _run(build_method(cfg), two_sizes, tmp_path / "one", batch_size=1)
    assert one.batch_size == 1 and one.computed == 3

    out = tmp_path / "three"
    args = ["run", str(MVTEC), "--data-root", str(two_sizes), "--out", str(out), "--no-progress", "--batch-size", "3"]
    rc = cli_main(args + [x for s in tiny_config_overrides(tiny_models) + SMALL + extra for x in ("--set", s)])
    assert rc == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["models"]["batch_size"] == 3
    a, b = _maps(tmp_path / "one"), _maps(out)
    assert len(a) == 3 and a.keys() == b.keys()
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert diff <= 1e-6, diff
    regions = [json.loads(p.read_text()) for p in sorted((out / "bottle" / "maps").glob("*.json"))]
    assert len(regions) == 3 and all(r["saliency_branch"] == "multi" for r in regions)
    # the batch size is no part of the fingerprint: a B = 1 run resumes every map of the B = 3 run
    again = engine.run_category(build_method(cfg), build_dataset("mvtec", str(two_sizes)), "bottle",
                                ResultStore(out), progress=False, batch_size=1)
    assert again.reused == 3 and again.computed == 0


def test_saa_pass_one_features_of_a_batch(tiny_models, two_sizes):
    """The improved preset's pass-1 features (saliency CNN) of a batch equal those of one image at a time."""
    cfg = load_config(MVTEC, tiny_config_overrides(tiny_models) + SMALL + ["preset=improved"])
    method = build_method(cfg)
    assert method.needs_references
    images = [read_rgb(p) for p in sorted((two_sizes / "bottle" / "test").rglob("*.png"))]
    one = [method.reference_features(im) for im in images]
    many = method.reference_features_batch(images)
    assert len(many) == 3 and all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(one, many))
    assert max(float((a - b).abs().max()) for a, b in zip(one, many)) <= 1e-6


def test_lite_batch_of_three_equals_one_at_a_time(two_sizes, tmp_path):
    """lite: pass 1 (its CNN) on batches grouped by input shape; maps equal to B = 1."""
    cfg = load_config(MVTEC, SMALL + ["method=lite"])
    one = _run(build_method(cfg), two_sizes, tmp_path / "one", batch_size=1)
    three = _run(build_method(cfg), two_sizes, tmp_path / "three", batch_size=3)
    assert one.features_computed == three.features_computed == 3 and three.computed == 3
    a, b = _maps(tmp_path / "one"), _maps(tmp_path / "three")
    assert len(a) == 3 and a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6


def test_images_are_decoded_in_worker_processes(two_sizes, tmp_path, monkeypatch):
    """Every image read of a run (lite: pass 1 and pass 2) happens in a decoding worker process:
    the run's count of decodes per process id has none from this process, and the main process's
    reader is never called."""
    in_main = []
    real = engine.read_rgb
    monkeypatch.setattr(engine, "read_rgb", lambda path: in_main.append(path) or real(path))
    monkeypatch.delenv(engine.WORKERS_ENV, raising=False)
    cfg = load_config(MVTEC, SMALL + ["method=lite"])
    run = _run(build_method(cfg), two_sizes, tmp_path / "out", batch_size=2)
    assert run.workers >= 1 and run.computed == 3 and run.features_computed == 3
    assert sum(run.decoders.values()) == 6  # 3 images in pass 1, 3 in pass 2
    assert os.getpid() not in run.decoders and in_main == []
    # with SAA_DECODE_WORKERS=0 a thread of this process decodes (the main process's reader)
    monkeypatch.setenv(engine.WORKERS_ENV, "0")
    run = _run(build_method(cfg), two_sizes, tmp_path / "thread", batch_size=2)
    assert run.workers == 0 and run.decoders == {os.getpid(): 6} and len(in_main) == 6


def test_decode_errors_come_in_order_after_the_images_before(two_sizes, tmp_path):
    """An unreadable image raises its own one-line error (naming the file) in the consumer, after
    the images before it were handed out; worker processes and the in-process thread alike."""
    good = sorted((two_sizes / "bottle" / "test").rglob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[0].read_bytes()[:100])
    paths = [str(good[0]), str(good[1]), str(bad), str(good[2])]
    for workers in (2, 0):
        got = []
        with pytest.raises(ImageReadError) as e:
            for batch in engine.decoded_batches(paths, 3, workers):
                got.append([k for k, _ in batch])
        assert got == [[0, 1]], (workers, got)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_pixel_limit_applies_in_the_workers(two_sizes):
    paths = [str(p) for p in sorted((two_sizes / "bottle" / "test").rglob("*.png"))]
    set_max_pixels(1000)
    try:
        with pytest.raises(ImageTooLargeError, match="over the limit"):
            list(engine.decoded_batches(paths, 2, 1))
    finally:
        set_max_pixels(None)


def test_batch_size_must_be_positive(tiny_models, two_sizes, tmp_path, capsys, monkeypatch):
    rc = cli_main(["run", str(MVTEC), "--data-root", str(two_sizes), "--out", str(tmp_path / "o"), "--no-progress",
                   "--batch-size", "0"] + [x for s in tiny_config_overrides(tiny_models) for x in ("--set", s)])
    err = capsys.readouterr().err
    assert rc != 0 and "batch_size" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("saa: error")]) == 1
    monkeypatch.setenv(engine.WORKERS_ENV, "two")
    with pytest.raises(ConfigError, match="SAA_DECODE_WORKERS"):
        engine.decode_workers(1)
    monkeypatch.setenv(engine.WORKERS_ENV, "0")
    assert engine.decode_workers(8) == 0
    monkeypatch.delenv(engine.WORKERS_ENV)
    cores = len(os.sched_getaffinity(0))
    assert [engine.decode_workers(b) for b in (1, 2, 8)] == [1, min(2, cores), min(4, cores)]


def test_transformers_backends_set_images_equal_set_image(tiny_models):
    """The transformers Grounding DINO and SAM / SAM-HQ / SAM 2 refiners: after ``set_images`` of
    images of two sizes, ``use_image(j)`` gives the outputs of ``set_image`` of image j."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("the transformers backends need transformers>=5")
    import torch

    from saa.models.hf_grounding import HFGroundingDetector
    from saa.models.hf_sam import HFBoxRefiner
    from saa.testing import build_tiny_hf_models

    hf = build_tiny_hf_models(tiny_models)
    sample = read_rgb(REPO / "assets" / "samples" / "bottle_broken_large_000.jpg")
    other = read_rgb(REPO / "assets" / "samples" / "bottle_contamination_000.jpg")
    images = [cv2.resize(sample, (160, 160)), cv2.resize(other, (192, 128)), cv2.resize(other, (160, 160))]

    det = HFGroundingDetector(tiny_models.grounding_config, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    one = []
    for im in images:
        det.set_image(im)
        one.append(det.detect_many(["defect on bottle."]))
    det.set_images(images)
    for j in (2, 0, 1):
        det.use_image(j)
        for a, b in zip(one[j], det.detect_many(["defect on bottle."])):
            assert float((a.boxes - b.boxes).abs().max()) <= 1e-6 and float((a.token_probs - b.token_probs).abs().max()) <= 1e-6
    det.reset_image()

    for variant, path in (("sam", tiny_models.sam_checkpoint), ("sam_hq", hf.sam_hq), ("sam2", hf.sam2)):
        ref = HFBoxRefiner(path, variant=variant)
        boxes = [torch.tensor([[10.0, 12.0, 90.0, 100.0], [40.0, 30.0, 150.0, 120.0]])] * 3
        single = []
        for im, bx in zip(images, boxes):
            ref.set_image(im)
            single.append((ref.low_res_logits(bx), ref.masks(bx)))
        ref.set_images(images)
        for j in (1, 2, 0):
            ref.use_image(j)
            low, masks = ref.low_res_logits(boxes[j]), ref.masks(boxes[j])
            assert masks.shape == (2, *images[j].shape[:2]), variant
            assert float((low - single[j][0]).abs().max()) <= 1e-5, variant
            assert np.array_equal(masks, single[j][1]), variant
        ref.reset_image()


def test_decode_workers_never_run_the_main_script_again(tmp_path, make_mvtec):
    """The decoding workers import only saa: a user's script without an `if __name__ == "__main__"`
    guard runs once (not once more per worker), and a run from `python -` (stdin) works."""
    import os
    import subprocess
    import sys

    data = make_mvtec(tmp_path / "data")
    marker = tmp_path / "ran.txt"
    script = tmp_path / "my_script.py"
    script.write_text(
        "import pathlib\n"
        f"with pathlib.Path({str(marker)!r}).open('a') as f:\n"
        "    f.write('x')\n"
        "from saa.config import load_config\n"
        "from saa.run import evaluate_run\n"
        f"cfg = load_config({str(REPO / 'configs' / 'mvtec.yaml')!r}, ['method=lite', 'out_size=64', "
        "'dataset.options.eval_size=64', 'models.batch_size=2'])\n"
        f"r = evaluate_run(cfg, {str(tmp_path / 'out')!r}, data_root={str(data)!r}, progress=False, print_table=False)\n"
        "print('images', r['totals']['images'])\n", encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("SAA_DECODE_WORKERS", None)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0 and "images 3" in r.stdout, r.stderr[-3000:]
    assert marker.read_text() == "x"  # the script's top level ran once
    (tmp_path / "out").rename(tmp_path / "out1")
    r = subprocess.run([sys.executable, "-"], input=script.read_text(), env=env, capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0 and "images 3" in r.stdout, r.stderr[-3000:]
