"""One contract over every registered method: the built-in ones, SAA+'s reference-using preset, and
a plug-in written in one file (tests/support/plugin_method.py, registered here, and through an entry point
in the processes the tests start): its typed settings round-trip through config.yaml and `--set`,
every setting changes its fingerprint, predict returns a valid Prediction, a run resumes, and
torchrun gives the maps of one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

import plugin_method
from saa.config import ResolvedBehaviour, load_config
from saa.methods import available_methods, build_method
from saa.prediction import Prediction
from saa.run import evaluate_run
from saa.testing import tiny_config_overrides


from tests.conftest import BOTTLE, REPO, SUPPORT, free_port

MVTEC = REPO / "configs" / "mvtec.yaml"
SMALL = ["general_prompts=[]", "out_size=64", "dataset.options.eval_size=64"]

plugin_method.register()
#: (method, extra --set items): every registered method, and SAA+ with its reference images
CASES = [(name, []) for name in available_methods()] + [("saa", ["preset=improved"])]
IDS = [name + ("+" + ",".join(extra) if extra else "") for name, extra in CASES]


def test_the_cases_cover_every_registered_method():
    assert {"saa", "lite", plugin_method.NAME} <= {name for name, _ in CASES}
    assert set(available_methods()) <= {name for name, _ in CASES}


def _overrides(tiny_models, extra=()) -> list[str]:
    return tiny_config_overrides(tiny_models) + SMALL + list(extra)


def _method(tiny_models, name, extra=(), more=()):
    return build_method(load_config(MVTEC, _overrides(tiny_models, extra) + list(more)), name)


def _other_value(annotation, value):
    """Values of a settings field that differ from ``value`` (candidates; the caller validates)."""
    return [c for c in _candidates(annotation, value) if c != value or type(c) is not type(value)]


def _candidates(annotation, value):
    tp = annotation
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return [a for a in args if a != value]
    if origin is typing.Union:
        return [c for a in args if a is not type(None) for c in _candidates(a, value)] + [None]
    if isinstance(value, bool) or tp is bool:
        return [not value]
    if isinstance(value, int) or tp is int:
        v = int(value or 0)
        return [v + 1, v * 2, v - 1, 64]
    if isinstance(value, float) or tp is float:
        v = float(value or 0)
        return [v * 0.5, v + 0.25, 0.5, 2.0]
    if isinstance(value, str):
        return [value + "_x"]
    if isinstance(value, list):
        return [value + [max(value) + 1], value[:-1]]
    raise AssertionError(f"no other value for {annotation!r}")


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_settings_round_trip_through_config_yaml(tiny_models, tmp_path, name, extra):
    m = _method(tiny_models, name, extra)
    text = m.resolved_config().to_yaml()
    if type(m.settings).model_fields:
        assert name in yaml.safe_load(text)["method_options"]  # every setting recorded, defaults included
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    again = build_method(load_config(path), name)
    assert again.settings == m.settings
    assert again.fingerprint("bottle") == m.fingerprint("bottle")


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_every_setting_changes_the_fingerprint(tiny_models, name, extra):
    m = _method(tiny_models, name, extra)
    base = m.fingerprint("bottle")
    changed = []
    for field, info in type(m.settings).model_fields.items():
        value = getattr(m.settings, field)
        for other in _other_value(info.annotation, value):
            try:
                type(m.settings).model_validate({**m.settings.model_dump(), field: other})
            except ValueError:
                continue
            item = f"method_options.{name}.{field}={json.dumps(other)}"
            m2 = _method(tiny_models, name, extra, [item])
            assert getattr(m2.settings, field) == other, item  # --set reached the typed setting
            assert m2.fingerprint("bottle") != base, f"{item} does not change the fingerprint"
            changed.append(field)
            break
        else:
            raise AssertionError(f"{name}: no valid other value found for setting {field!r}")
    assert changed == list(type(m.settings).model_fields)
    assert _method(tiny_models, name, extra, ["out_size=48"]).fingerprint("bottle") != base
    if name == "saa":  # SAA+'s settings are the behaviour switches of its preset (and the models, prompts)
        behaviour = m.config.resolved_behaviour()
        for field, info in ResolvedBehaviour.model_fields.items():
            if field.startswith("cross_image_") and not behaviour.cross_image_saliency:
                continue  # they change nothing while cross-image saliency is off
            value = getattr(behaviour, field)
            for other in _other_value(info.annotation, value):
                try:
                    ResolvedBehaviour.model_validate({**behaviour.model_dump(), field: other})
                except ValueError:
                    continue
                m2 = _method(tiny_models, name, extra, [f"behaviour.{field}={json.dumps(other)}"])
                assert m2.fingerprint("bottle") != base, f"behaviour.{field}={other}"
                break


def _images(n=3, side=96):
    import cv2

    from saa.image_io import read_rgb

    rels = ("good/000.png", "broken_large/000.png", "contamination/000.png")[:n]
    return [cv2.resize(read_rgb(BOTTLE / "test" / r), (side, side), interpolation=cv2.INTER_AREA) for r in rels]


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_predict_returns_a_valid_prediction(tiny_models, name, extra):
    m = _method(tiny_models, name, extra)
    images = _images()
    bank = m.bank_from_features([m.reference_features(im) for im in images]) if m.needs_references else None
    for i, rgb in enumerate(images):
        pred = m.predict(rgb, "bottle", bank=bank, index=i if bank is not None else None)
        assert isinstance(pred, Prediction) and pred.method == name
        assert pred.anomaly_map.shape == (64, 64) and pred.anomaly_map.dtype == np.float32
        assert pred.anomaly_map_full.shape == rgb.shape[:2]
        assert np.isfinite(pred.anomaly_map).all() and np.isfinite(pred.score)
        assert pred.method_label == m.label
    assert set(m.describe()) >= {"name", "label", "preset", "settings", "summary"}


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_a_run_resumes(tiny_models, tmp_path, name, extra, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    cfg = load_config(MVTEC, _overrides(tiny_models, extra) + [f"method={name}"])
    out = tmp_path / "out"
    first = evaluate_run(cfg, out, data_root=data, progress=False, print_table=False)
    assert first["method"] == name and first["totals"]["computed"] == 3
    maps = {p.name: np.load(p)["map"] for p in (out / "bottle" / "maps").glob("*.npz")}
    again = evaluate_run(load_config(out / "config.yaml"), out, progress=False, print_table=False)
    assert (again["totals"]["computed"], again["totals"]["reused"]) == (0, 3)
    assert again["categories"]["bottle"]["metrics"] == first["categories"]["bottle"]["metrics"]
    assert all(np.array_equal(np.load(out / "bottle" / "maps" / k)["map"], v) for k, v in maps.items())


@pytest.mark.parametrize("name", sorted({n for n, _ in CASES}))
def test_torchrun_gives_the_maps_of_one_process(tiny_models, tmp_path, name, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    plugins = plugin_method.install_entry_point(tmp_path / "site")
    # one thread per process in both runs, so each image is computed with the same arithmetic
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SAA_DIST_BACKEND="gloo")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (REPO, SUPPORT, plugins) if p) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    def args(out: Path) -> list[str]:
        a = [str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out), "--no-progress",
             "--method", name]
        return a + [x for s in _overrides(tiny_models) for x in ("--set", s)]

    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable] + args(one), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", free_port()] + args(two), env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "rank 1/2: computed 1 images" in r.stdout  # images 0 and 2 on rank 0, image 1 on rank 1
    assert "3 images (3 computed by 2 processes, 0 reused)" in r.stdout, r.stdout
    a, b = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    assert b["method"] == name and b["world_size"] == 2 and b["totals"]["computed_by_all_processes"] == 3
    assert b["totals"]["computed"] == 0 and b["totals"]["images"] == 3  # rank 0 reused all shards
    assert a["categories"]["bottle"]["metrics"] == b["categories"]["bottle"]["metrics"] and a["mean"] == b["mean"]
    ma = {p.name: np.load(p)["map"] for p in (one / "bottle" / "maps").glob("*.npz")}
    mb = {p.name: np.load(p)["map"] for p in (two / "bottle" / "maps").glob("*.npz")}
    assert len(ma) == 3 and ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert not (two / "bottle" / "cross_features").exists()
