"""``saa predict`` (saa.commands.predict): a decompression bomb among the images is skipped in one line
and the others processed; lite's panels, and panels a method cannot draw refused before anything is
written."""
from __future__ import annotations

import json

import pytest

from saa.cli import main

from tests.conftest import REPO

MVTEC = REPO / "configs" / "mvtec.yaml"


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


def test_predict_skips_a_bomb_and_processes_the_others(tmp_path, bomb_png, make_mvtec, run_cli):
    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))[:2]
    bomb = bomb_png(tmp_path / "bomb.png")
    out = tmp_path / "out"
    r = run_cli("predict", "--config", MVTEC, "--category", "bottle", "--method", "lite", "--out", out,
                imgs[0], bomb, imgs[1], "--set", f"models.weights_dir={tmp_path}/none", "--panels", "none")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "bomb.png" in r.stderr and "over the limit of 100 Mpx" in r.stderr
    assert "Traceback" not in r.stderr and "cv2.error" not in r.stderr
    assert len(list(out.glob("*.json"))) == 2 and not list(out.glob("bomb*"))
    # the limit from the command line
    r = run_cli("--max-pixels", "1000", "predict", "--config", MVTEC, "--category", "bottle", "--method", "lite",
                "--out", tmp_path / "out2", imgs[0], "--set", f"models.weights_dir={tmp_path}/none")
    assert r.returncode == 1 and "over the limit of 1000 pixels" in r.stderr, r.stderr[-2000:]


def test_predict_lite_writes_panels_and_refuses_panels_it_cannot_draw(tmp_path, make_mvtec, no_weights):
    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))
    base = ["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite"]
    base += [a for s in no_weights(tmp_path) for a in ("--set", s)]
    out = tmp_path / "out"
    assert main(base + ["--out", str(out), *imgs]) == 0
    assert len(list(out.glob("*_panels.png"))) == len(imgs)
    info = json.loads(sorted(out.glob("*.json"))[0].read_text())
    assert info["method"] == "lite" and "candidates" not in info and info["saliency_branch"] == "cross"
    assert main(base + ["--out", str(tmp_path / "all"), "--panels", "all", *imgs]) == 0
    assert main(base + ["--out", str(tmp_path / "boxes"), "--panels", "boxes", *imgs]) == 1
    assert not (tmp_path / "boxes").exists()  # refused before anything was written
