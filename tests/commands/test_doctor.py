"""``saa doctor`` (versions, device, which model files are found where; loads no model) and
``saa --version``."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

import saa
from saa.cli import main

from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _own_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAA_SETTINGS", str(tmp_path / "settings.json"))
    monkeypatch.delenv("SAA_WEIGHTS_DIR", raising=False)


def test_version_matches_pyproject(capsys):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert saa.__version__ == version
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"saa {version}"
    r = subprocess.run([sys.executable, "-m", "saa", "--version"], capture_output=True, text=True, timeout=120,
                       cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == f"saa {version}"


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any model load fails the test."""
    import saa.models.factory as factory
    import saa.methods.saa_plus.pipeline as pipeline

    def refuse(*a, **k):
        raise AssertionError("saa doctor loaded a model")

    monkeypatch.setattr(factory, "build_detector", refuse)
    monkeypatch.setattr(factory, "build_refiner", refuse)
    monkeypatch.setattr(pipeline.SAAPipeline, "load_models", refuse)


def test_doctor_all_found(tiny_models, no_model_loading, capsys):
    from saa.testing import tiny_config_overrides

    ov = [a for o in tiny_config_overrides(tiny_models) for a in ("--set", o)]
    assert main(["doctor", *ov]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"saa {saa.__version__}")
    for word in ("python 3.", "  torch: ", "  transformers: ", "  timm: ", "device: ", "settings file: ",
                 "not written yet", "model files are looked up in, in this order:", "1. "):
        assert word in out, word
    assert f"this clone (where this saa package sits): {REPO}" in out
    assert "  weights folder " not in out  # nothing recorded in this test's settings file
    assert f"found    {tiny_models.sam_checkpoint}" in out
    assert f"found    {tiny_models.text_encoder}" in out
    assert "every model file of the full method is found" in out


def test_doctor_missing_files_exit_3(tmp_path, no_model_loading, capsys):
    empty = tmp_path / "empty"
    assert main(["doctor", "--config", str(REPO / "configs" / "visa_public.yaml"),
                 "--set", f"models.weights_dir={empty}"]) == 3
    out = capsys.readouterr().out
    assert f"config: {REPO / 'configs' / 'visa_public.yaml'}" in out
    assert f"1. {empty}  [models.weights_dir; no such folder]" in out
    for name in ("groundingdino_swint_ogc.pth", "bert-base-uncased", "sam_vit_h_4b8939.pth", "wide_resnet50_2.pth"):
        assert f"MISSING  {empty / name}" in out
    assert "4 model files missing" in out and "bash install.sh" in out and "--method lite" in out


def test_doctor_bad_config_is_one_line(tmp_path, capsys):
    assert main(["doctor", "--config", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "not found" in err and "Traceback" not in err
