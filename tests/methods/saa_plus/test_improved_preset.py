"""The `improved` preset (ours): paper switches + cross-image saliency (saa.saliency.bank), in the
pipeline, `saa predict`, `saa run` (resume, fingerprints) and under torchrun."""
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

from saa.config import CROSS_IMAGE_KEYS, PRESETS, config_from_dict, load_config, register_preset
from saa.errors import ConfigError
from saa.methods.saa_plus import SAAPipeline, config_fingerprint
from saa.run import evaluate_run
from saa.saliency.bank import CrossImageBank
from saa.testing import tiny_config_overrides

from tests.conftest import BOTTLE, PCB, REPO, free_port


MVTEC = REPO / "configs" / "mvtec.yaml"


SIDE = 128


# small and quick: no general prompts, small maps
FAST = ["general_prompts=[]", "out_size=64", "dataset.options.eval_size=64"]


def minimal(**extra):
    return {"categories": {"bottle": {"object": "bottle,", "n_objects": 1, "k_mask": 5, "area_ratio": 0.3}},
            **extra}


def error_of(fn, *a, **k) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*a, **k)
    return str(e.value)


def unit_features(n, c=8, shape=(5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(c, *shape, generator=g), dim=0) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# configuration


def test_improved_preset_is_paper_plus_cross_image():
    paper = config_from_dict(minimal(preset="paper")).resolved_behaviour().model_dump()
    improved = config_from_dict(minimal(preset="improved")).resolved_behaviour().model_dump()
    for key, value in paper.items():
        if key not in CROSS_IMAGE_KEYS:
            assert improved[key] == value, key
    assert (improved["sam_color_order"], improved["saliency_color_order"]) == ("rgb", "rgb")
    assert improved["saliency_neighbors"] == "nearest" and improved["area_rule"] == "masks"
    assert (improved["rescore_gamma"], improved["fusion_delta"]) == (1.0, 0.0)
    assert improved["cross_image_saliency"] is True
    assert improved["cross_image_combine"] == "geomean"
    assert (improved["cross_image_k"], improved["cross_image_max_others"], improved["cross_image_subset"]) == \
        (1, 32, "similar")
    # official and paper: cross-image saliency off
    assert paper["cross_image_saliency"] is False
    assert config_from_dict(minimal()).resolved_behaviour().cross_image_saliency is False


def test_cross_image_switches_override_and_validate():
    cfg = load_config(MVTEC, ["preset=improved", "behaviour.cross_image_k=3", "behaviour.cross_image_max_others=0",
                              "behaviour.cross_image_combine=cross", "behaviour.cross_image_subset=spread"])
    b = cfg.resolved_behaviour()
    assert (b.cross_image_k, b.cross_image_max_others, b.cross_image_combine, b.cross_image_subset) == \
        (3, 0, "cross", "spread")
    assert load_config(MVTEC, ["behaviour.cross_image_saliency=true"]).resolved_behaviour().cross_image_saliency
    msg = error_of(config_from_dict, minimal(behaviour={
        "cross_image_saliency": "yes please", "cross_image_combine": "average", "cross_image_k": 0,
        "cross_image_max_others": -1, "cross_image_subset": "random"}))
    assert "behaviour.cross_image_saliency: must be true or false" in msg
    assert "behaviour.cross_image_combine" in msg and "'geomean'" in msg and "'product'" in msg
    assert "behaviour.cross_image_k: must be at least 1" in msg
    assert "behaviour.cross_image_max_others: must be at least 0" in msg
    assert "behaviour.cross_image_subset" in msg and "'spread'" in msg
    msg = error_of(config_from_dict, minimal(preset="improvd"))
    assert "did you mean `improved`?" in msg


def test_presets_registered_without_cross_keys_keep_it_off():
    try:
        register_preset("old_style", {k: v for k, v in PRESETS["paper"].items() if k not in CROSS_IMAGE_KEYS})
        assert config_from_dict(minimal(preset="old_style")).resolved_behaviour().cross_image_saliency is False
    finally:
        PRESETS.pop("old_style", None)


def test_fingerprint_covers_cross_image_settings_only_when_on():
    fp = config_fingerprint
    imp = load_config(MVTEC, ["preset=improved"])
    base = fp(imp, "bottle")
    assert base != fp(load_config(MVTEC, ["preset=paper"]), "bottle")
    for override in ("behaviour.cross_image_k=2", "behaviour.cross_image_max_others=8",
                     "behaviour.cross_image_combine=mean", "behaviour.cross_image_subset=spread"):
        assert fp(load_config(MVTEC, ["preset=improved", override]), "bottle") != base, override
    # the other images of the category are part of a cross-image map
    assert fp(imp, "bottle", ["good/000", "bad/001"]) != fp(imp, "bottle", ["good/000", "bad/002"])
    assert fp(imp, "bottle", ["a", "b"]) == fp(imp, "bottle", ["b", "a"])
    # off (official, paper): the cross-image keys and the image set change nothing
    for preset in ("official", "paper"):
        cfg = load_config(MVTEC, [f"preset={preset}"])
        want = fp(cfg, "bottle")
        assert fp(load_config(MVTEC, [f"preset={preset}", "behaviour.cross_image_k=5"]), "bottle") == want
        assert fp(cfg, "bottle", ["good/000"]) == want


# ---------------------------------------------------------------------------------------------
# the pipeline with the tiny models


def _image(path: Path, side: int = SIDE) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)[:, :, ::-1])


BOTTLE_IMAGES = ("good/000.png", "broken_large/000.png", "contamination/000.png")


def _bank(pipe, images):
    """Pass 1 of cross-image saliency over ``images``: a bank of their saliency features in memory."""
    return CrossImageBank.from_features([pipe.saliency_features(im) for im in images], **pipe.cross_image_settings())


@pytest.fixture(scope="module")
def improved(tiny_models):
    return SAAPipeline(load_config(MVTEC, tiny_config_overrides(tiny_models) + FAST + ["preset=improved"]))


def test_prediction_with_a_bank_combines_the_saliency(improved):
    images = [_image(BOTTLE / "test" / p) for p in BOTTLE_IMAGES]
    bank = _bank(improved, images)
    assert len(bank) == 3 and bank.features(0).shape[-2:] == (64, 64)  # single_object_size 256 -> 64 x 64
    # pass 1 gives what the single-object saliency sees: the RGB image at 256 x 256
    want = improved.extractor(cv2.resize(images[1], (256, 256)), 256)[0]
    torch.testing.assert_close(bank.features(1), want, rtol=0, atol=0)

    # a bank of one image: nothing to compare with -> the single-image saliency alone, with a note
    alone = improved.predict(images[1], "bottle", others=_bank(improved, images[1:2]), index=0)
    assert alone.saliency_branch == "single"
    assert any("cross-image saliency needs other images" in n and "the bank holds 1 image(s)" in n
               for n in alone.notes)
    # the single-object saliency takes the bank's features of the image: the CNN does not run again
    calls = []
    cnn = improved.extractor

    class Counting:
        def __call__(self, *a, **k):
            calls.append(a[1])
            return cnn(*a, **k)

        def __getattr__(self, name):
            return getattr(cnn, name)

    improved._extractor = Counting()
    try:
        crossed = improved.predict(images[1], "bottle", others=bank, index=1, trace=True)
        assert calls == []
        plain = improved.predict(images[1], "bottle")  # no bank: the CNN runs, with a note
        assert calls == [256]
    finally:
        improved._extractor = cnn
    np.testing.assert_array_equal(crossed.trace["saliency_single"], plain.saliency)
    assert crossed.saliency_branch == "single+cross(geomean)"
    assert not any("cross-image" in n for n in crossed.notes)
    # by hand: geometric mean of the single-image saliency and the bilinearly resized cross-image grid
    cross = cv2.resize(bank.scores(1), (SIDE, SIDE))
    np.testing.assert_array_equal(crossed.trace["saliency_cross"], cross)
    np.testing.assert_array_equal(crossed.trace["saliency_single"], alone.saliency)
    np.testing.assert_allclose(crossed.saliency, np.sqrt(alone.saliency * np.maximum(cross, 0)), rtol=1e-6, atol=1e-7)
    # the re-scoring saw another saliency map, so the regions' scores and the map differ
    assert [c.rescored for c in crossed.defects if c.rescored is not None] != \
        [c.rescored for c in alone.defects if c.rescored is not None]
    assert not np.array_equal(crossed.anomaly_map, alone.anomaly_map)


def test_method_is_pass_one_then_pass_two(improved):
    from saa.methods.saa_plus import SaaMethod

    images = [_image(BOTTLE / "test" / p) for p in BOTTLE_IMAGES[:2]]
    method = SaaMethod(improved.config, pipeline=improved)
    assert method.needs_references
    refs = method.bank_from_features([method.reference_features(im) for im in images])
    many = [method.predict(im, "bottle", bank=refs, index=i) for i, im in enumerate(images)]
    bank = _bank(improved, images)
    for i, (got, im) in enumerate(zip(many, images)):
        assert got.saliency_branch == "single+cross(geomean)"
        np.testing.assert_array_equal(got.anomaly_map, improved.predict(im, "bottle", others=bank, index=i).anomaly_map)


def test_paper_pipeline_refuses_a_bank(tiny_models):
    paper = SAAPipeline(load_config(MVTEC, tiny_config_overrides(tiny_models) + FAST + ["preset=paper"]))
    bank = CrossImageBank.from_features(unit_features(2))
    with pytest.raises(ValueError, match="cross_image_saliency"):
        paper.predict(np.zeros((32, 32, 3), np.uint8), "bottle", others=bank, index=0)


def test_multi_object_category_combines_on_the_whole_image(tiny_models, improved):
    cfg = load_config(REPO / "configs" / "visa_public.yaml",
                      tiny_config_overrides(tiny_models) + FAST + ["preset=improved"])
    pipe = SAAPipeline(cfg, detector=improved.detector, refiner=improved.refiner, extractor=improved.extractor)
    assert cfg.category("candle").n_objects > 1
    images = [_image(PCB / "pcb1" / "defective.jpg"), _image(PCB / "pcb2" / "defective.jpg")]
    bank = _bank(pipe, images)
    pred = pipe.predict(images[0], "candle", others=bank, index=0, trace=True)
    assert pred.saliency_branch.endswith("+cross(geomean)")
    assert pred.saliency_branch.split("+")[0] in ("single", "multi")
    cross = cv2.resize(bank.scores(0), (SIDE, SIDE))
    np.testing.assert_array_equal(pred.trace["saliency_cross"], cross)
    np.testing.assert_allclose(pred.saliency, np.sqrt(np.asarray(pred.trace["saliency_single"], np.float32)
                                                      * np.maximum(cross, 0)), rtol=1e-6, atol=1e-7)


def test_cli_predict_uses_the_images_as_each_others_others(tiny_models, tmp_path):
    from saa.cli import main

    paths = []
    for rel in BOTTLE_IMAGES[:2]:
        p = tmp_path / rel.replace("/", "_")
        cv2.imwrite(str(p), _image(BOTTLE / "test" / rel)[:, :, ::-1])
        paths.append(str(p))
    out = tmp_path / "out"
    argv = ["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--out", str(out), "--panels", "none",
            "--preset", "improved", *paths]
    for s in tiny_config_overrides(tiny_models) + FAST:
        argv += ["--set", s]
    assert main(argv) == 0
    for p in paths:
        info = json.loads((out / (Path(p).stem + ".json")).read_text())
        assert info["saliency_branch"] == "single+cross(geomean)", info["notes"]
        assert np.load(out / (Path(p).stem + ".npy")).shape == (64, 64)


# ---------------------------------------------------------------------------------------------
# saa run: two passes, resume, torchrun


class NoModel:
    """Stands in for a model that must not be used."""

    def __getattr__(self, name):
        raise AssertionError(f"a model was used ({name})")

    def __call__(self, *a, **k):
        raise AssertionError("a model was used")


def make_bottle_tree(root: Path) -> Path:
    for rel in BOTTLE_IMAGES:
        dst = root / "bottle" / "test" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), _image(BOTTLE / "test" / rel)[:, :, ::-1])
        if not rel.startswith("good"):
            m = cv2.imread(str(BOTTLE / "ground_truth" / rel.replace(".png", "_mask.png")), cv2.IMREAD_GRAYSCALE)
            mdst = root / "bottle" / "ground_truth" / rel.replace(".png", "_mask.png")
            mdst.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mdst), cv2.resize(m, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST))
    return root


def _run_args(data: Path, out: Path, tiny_models) -> list[str]:
    args = [str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out), "--no-progress",
            "--preset", "improved"]
    for s in tiny_config_overrides(tiny_models) + FAST:
        args += ["--set", s]
    return args


def test_saa_run_improved_one_and_two_processes_and_resume(tmp_path, tiny_models, improved):
    """`saa run` (run_MVTec.py) with --preset improved: the two passes, metrics, the features folder
    removed, 2 torchrun processes = 1 process, then resume (nothing recomputed, no model used) and a
    lost map recomputed against the features of the whole category."""
    data = make_bottle_tree(tmp_path / "data")
    # one thread per process in both runs, so each image is computed with the same arithmetic
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SAA_DIST_BACKEND="gloo")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    one = tmp_path / "one"
    r = subprocess.run([sys.executable] + _run_args(data, one, tiny_models), env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads((one / "metrics.json").read_text())
    assert first["preset"] == "improved" and first["totals"]["computed"] == 3
    info = first["categories"]["bottle"]
    assert all(v is not None and 0 <= v <= 100 for v in info["metrics"].values())
    assert info["seconds"]["cross_features"] > 0
    assert not (one / "bottle" / "cross_features").exists()  # pass-1 features deleted once all maps exist
    for p in sorted((one / "bottle" / "maps").glob("*.json")):
        regions = json.loads(p.read_text())
        assert regions["saliency_branch"] == "single+cross(geomean)", regions["notes"]
    cfg = load_config(one / "config.yaml")
    assert cfg.preset == "improved"

    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", free_port()] + _run_args(data, two, tiny_models)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "rank 1/2: computed 1 images" in r.stdout
    got = json.loads((two / "metrics.json").read_text())
    assert got["totals"]["computed"] == 0 and got["totals"]["images"] == 3  # rank 0 reused all shards
    assert got["categories"]["bottle"]["metrics"] == info["metrics"]
    for p in sorted((one / "bottle" / "maps").glob("*.npz")):
        with np.load(p) as a, np.load(two / "bottle" / "maps" / p.name) as b:
            np.testing.assert_array_equal(a["map"], b["map"])
    assert not (two / "bottle" / "cross_features").exists()

    # resumed: nothing computed, no model used (not even the saliency CNN of pass 1), same numbers
    maps = sorted((one / "bottle" / "maps").glob("*.npz"))
    before = {p.name: p.stat().st_mtime_ns for p in maps}
    untouchable = SAAPipeline(cfg, detector=NoModel(), refiner=NoModel(), extractor=NoModel())
    second = evaluate_run(cfg, one, progress=False, print_table=False, pipeline=untouchable)
    assert second["totals"]["computed"] == 0 and second["categories"]["bottle"]["metrics"] == info["metrics"]
    assert {p.name: p.stat().st_mtime_ns for p in maps} == before

    # one map lost: pass 1 runs again over the whole category, and the map comes back
    lost = one / "bottle" / "maps" / "broken_large__000.npz"
    with np.load(lost) as z:
        want = z["map"].copy()
    lost.unlink()
    third = evaluate_run(cfg, one, progress=False, print_table=False, pipeline=improved)
    assert third["totals"]["computed"] == 1 and third["categories"]["bottle"]["seconds"]["cross_features"] > 0
    with np.load(lost) as z:  # this process may use other thread counts than the subprocess: rounding only
        np.testing.assert_allclose(z["map"], want, rtol=1e-4, atol=1e-6)
    assert not (one / "bottle" / "cross_features").exists()
