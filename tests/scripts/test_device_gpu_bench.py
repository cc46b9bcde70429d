"""The prepared GPU comparison (scripts/device_gpu_bench.sh) end to end in its CPU dry run: the tiny
models, 2 real bottle images, every part but the authors' code (which builds SAM ViT-H): model files,
saa fp32 B = 1 and B = 2, bf16 (CPU autocast) at B = 2, with their differences to a stand-in for
the authors' maps, the CUDA tests (collected and skipped here), and the summary, so the command the
GPU run uses cannot rot."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REALDATA, REPO  # noqa: E402
BOTTLE_GLOB = "mvtec_ad__*/bottle/test/*/*.png"


def test_device_bench_dry_run(tiny_models, tmp_path):
    images = sorted(REALDATA.glob(BOTTLE_GLOB))
    if not images:
        pytest.skip("real bottle images missing")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny").symlink_to(tiny_models.root, target_is_directory=True)  # the session's tiny models
    # a stand-in for the authors' maps: zeros, so each schedule's difference to them is its largest value
    reference = tmp_path / "authors_maps.npz"
    np.savez_compressed(reference, **{f"{p.parent.name}/{p.name}": np.zeros((400, 400), np.float32) for p in images})
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, OUT=str(out), SAA_GPU_WORK=str(work), SAA_BENCH_CACHE=str(cache),
               SAA_AUTHORS_MAPS=str(reference), PYTHONPATH=str(REPO))
    r = subprocess.run(["bash", str(REPO / "scripts/device_gpu_bench.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    files = sorted(p.name for p in out.iterdir())
    assert files == ["checkpoints.json", "cuda_tests.txt", "log.txt", "saa.json", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    parts = summary["parts"]
    assert parts["checkpoints"]["rc"] == 0 and parts["saa"]["rc"] == 0 and parts["cuda_tests"]["rc"] == 0
    assert "dry run" in parts["authors"]["skipped"]
    assert not any(p.get("timed_out") for p in parts.values())

    files_json = json.loads((out / "checkpoints.json").read_text())["files"]
    assert Path(files_json["sam_checkpoint"]).is_file() and Path(files_json["grounding_config"]).is_file()

    saa = json.loads((out / "saa.json").read_text())
    assert len(saa["image_files"]) == 2 and saa["device"] == "cpu"
    assert {"saa", "saa_b2", "saa_bf16_b2"} <= saa.keys() and "saa_bf16" not in saa
    assert saa["saa_b2"]["batch_size"] == 2 and saa["saa_b2"]["max_abs_map_diff_vs_main"] <= 1e-6
    assert saa["saa_bf16_b2"]["max_abs_map_diff_vs_main"] > 0  # autocast runs on the CPU
    for key in ("saa", "saa_b2", "saa_bf16_b2"):
        d = saa[key]["max_abs_map_diff_vs_reference"]
        assert np.isfinite(d) and d > 0 and saa[key]["images_per_s"] > 0

    rows = {row["key"]: row for row in summary["rows"]}
    assert {"saa", "saa_b2", "saa_bf16_b2"} == rows.keys()
    assert rows["saa_b2"]["run"] == "saa fp32 B=2" and rows["saa_bf16_b2"]["run"] == "saa bf16 B=2"
    tests = summary["cuda_tests"]
    assert tests["counts"].get("skipped", 0) >= 9 and not tests["counts"].get("passed") and not tests["failed"]
    assert any("needs a CUDA GPU" in s for s in tests["skip_reasons"])
    md = (out / "summary.md").read_text()
    assert "| saa fp32 B=2 |" in md and "skipped: dry run" in md
