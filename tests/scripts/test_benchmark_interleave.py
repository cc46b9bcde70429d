"""scripts/benchmark.py --baseline --exact --interleave on the tiny models: the schedules run image by image
in turn, the baseline makes every full-size mask and the object masks (saa makes none for a
single-object category with the box rule), the maps agree, and the per-stage table is printed."""
from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REALDATA, REPO


def test_interleaved_baseline_and_stage_table(tmp_path, capsys):
    if not list(REALDATA.glob("mvtec_ad__*/bottle/test/*/*.png")):
        pytest.skip("real bottle images missing")
    spec = importlib.util.spec_from_file_location("saa_benchmark_script", REPO / "scripts/benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    rc = bench.main(["--models", "tiny", "--image-files", "mvtec_ad__*/bottle/test/broken_large/000.png",
                     "mvtec_ad__*/bottle/test/good/000.png", "--baseline", "--exact", "--interleave", "--repeat", "1",
                     "--no-saliency-steps",  # the saliency-steps timing has its own test (test_benchmark.py)
                     "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["image_files"]) == 2 and res["saa"]["interleaved"] and res["baseline"]["interleaved"]
    assert res["saa"]["images"] == res["baseline"]["images"] == 2
    saa, base = res["saa"]["stage_seconds"], res["baseline"]["stage_seconds"]
    assert saa["sam_object"] < base["sam_object"] and base["sam_object"] > 0
    # the exact detector kernels: the baseline's maps (statistics without full-size masks included);
    # the fast kernels only round differently
    assert res["max_abs_map_diff_exact"] <= 1e-4 and res["max_abs_map_diff"] < 0.05
    assert res["speedup"] > 0 and res["speedup_exact"] > 0 and res["saa_exact"]["interleaved"]
    err = capsys.readouterr().err
    table = err[err.index("s per image"):].splitlines()
    assert table[0].split()[3:] == ["saa", "saa_exact", "baseline"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in table[1:] if line.strip()}
    assert rows["sam_object"][0] < 0.01 and rows["sam_object"][2] > 0 and len(rows["sam_defect"]) == 3
    # the printed rate is the recorded one at the precision it was printed with (4 decimals)
    printed = next(line for line in table if line.startswith("images/s")).split()[1]
    assert printed == f"{res['saa']['images_per_s']:.4f}"
