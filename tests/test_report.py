"""The HTML report of a run (saa.report, `saa report`, and the hook at the end of evaluate_run); a
corrupt metrics.json is one line."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from saa.cli import main
from saa.config import load_config
from saa.run import evaluate_run
from saa.testing import tiny_config_overrides

from tests.conftest import BOTTLE, REPO


SIDE = 128

#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


# two categories of the mvtec config, both filled with real bottle images (the report does not care)
TREE = {"bottle": ["good/000", "broken_large/000", "contamination/000"],
        "screw": ["good/002", "broken_small/000"]}


def _tree(root: Path) -> Path:
    for cat, rels in TREE.items():
        for rel in rels:
            im = cv2.resize(cv2.imread(str(BOTTLE / "test" / f"{rel}.png")), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            dst = root / cat / "test" / f"{rel}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(dst), im)
            if not rel.startswith("good"):
                m = cv2.imread(str(BOTTLE / "ground_truth" / f"{rel}_mask.png"), cv2.IMREAD_GRAYSCALE)
                m = cv2.resize(np.where(m > 127, 255, 0).astype(np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
                dst = root / cat / "ground_truth" / f"{rel}_mask.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(dst), m)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_models):
    if not BOTTLE.is_dir():
        pytest.skip(f"real images not found: {BOTTLE}")
    base = tmp_path_factory.mktemp("report")
    data = _tree(base / "data")
    cfg = load_config(REPO / "configs" / "mvtec.yaml", tiny_config_overrides(tiny_models) + ["general_prompts=[]"])
    out = base / "run"
    evaluate_run(cfg, out, data_root=data, progress=False, print_table=False)
    return out


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_report_written_by_the_run(run_dir):
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # every category row and the mean row of the metrics table
    for cat in TREE:
        assert f'id="row-{cat}"' in html and f'id="cat-{cat}"' in html
    assert 'class="mean"' in html
    # curves: one figure per category, pixel-level (the masks are re-read through config.yaml)
    assert html.count("ROC and PR curves of") == len(TREE)
    assert "image-level curves only" not in html
    # galleries: normal and anomalous images of each category
    assert html.count("Highest-scoring normal images") == len(TREE)
    assert html.count("Lowest-scoring anomalous images") == len(TREE)
    for key in ("good/000", "broken_large/000", "good/002", "broken_small/000"):
        assert key in html
    # everything embedded, nothing fetched: no http(s) resource, no script
    imgs = _imgs(html)
    assert len(imgs) >= len(TREE) + sum(len(v) for v in TREE.values())
    assert all(len(b) > 200 for b in imgs)
    assert not re.search(r'(src|href)="https?:', html) and "<script" not in html
    # config, versions, timings
    for word in ("Configuration", "Versions", "torch", "python", "Timings", "preset"):
        assert word in html


def test_saa_report_command_and_moved_dataset(run_dir, tmp_path, capsys):
    # a copy of the run whose dataset is gone: image-level curves, labelled so
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    text = (moved / "config.yaml").read_text()
    (moved / "config.yaml").write_text(re.sub(r"(?m)^(\s*root:).*$", r"\1 /nonexistent/mvtec", text, count=1))
    out = tmp_path / "r.html"
    assert main(["-q", "report", str(moved), "--out", str(out), "--gallery", "2"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "image-level curves only" in html
    assert html.count("ROC and PR curves of") == len(TREE)
    assert str(out) in capsys.readouterr().out


def test_report_of_a_non_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "metrics.json" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b'{"categories": {"bottle": ', b"[1, 2]", b"\xff\xfe garbage",
                                     b'{"categories": {"bottle": 3}}', b'{"eval_size": "big"}'])
def test_report_on_a_corrupt_metrics_json(tmp_path, content, run_cli):
    (tmp_path / "metrics.json").write_bytes(content)
    r = run_cli("report", tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"saa: error: {tmp_path / 'metrics.json'}: ") and "saa run" in r.stderr
