"""scripts/benchmark.py --saliency-only on the tiny models: the saliency steps it times give the
same values as their straightforward versions, and the JSON it writes has every timing it quotes."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import REALDATA, REPO


def _load_script():
    spec = importlib.util.spec_from_file_location("saa_benchmark_script", REPO / "scripts/benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_saliency_only_outputs_match(tmp_path, capsys):
    glob = str(REALDATA / "mvtec_ad__*/bottle/test/*/*.png")
    if not list(REALDATA.glob("mvtec_ad__*/bottle/test/*/*.png")):
        pytest.skip("real bottle images missing")
    bench = _load_script()
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()  # --threads would change it for the rest of the test session
    rc = bench.main(["--models", "tiny", "--saliency-only", "--repeat", "1", "--images", "1",
                     "--cache", str(tmp_path / "cache"), "--image-glob", glob, "--out", str(out)])
    assert torch.get_num_threads() == threads
    assert rc == 0
    res = json.loads(out.read_text())["saliency"]
    single, multi = res["single"], res["multi"]
    assert single["grid"] == [64, 64] and single["n"] == 400
    assert single["selection_max_abs_diff"] < 1e-6 and single["scoring_max_abs_diff"] < 1e-6
    for key in ("selection_sort_s", "selection_topk_s", "scoring_sort_s", "scoring_topk_s"):
        assert single[key] > 0
    assert multi["grid"] == [256, 256] and multi["objects"] == 3 and multi["object_positions"] > 1000
    assert multi["max_abs_diff"] < 1e-6 and multi["loops_s"] > 0 and multi["vectorised_s"] > 0
    assert '"saliency"' in capsys.readouterr().out


def test_compare_precision_reports_diffs_and_metrics(tmp_path):
    """--compare-precision reruns the saa schedule at other precisions with the same models and
    reports the map and metric differences. On the CPU tf32 is plain fp32 (the same maps and
    metrics) and bf16 is autocast (SAAPipeline._precision), so its maps differ; on CUDA the same
    code reports the real differences."""
    if not list(REALDATA.glob("mvtec_ad__*/bottle/test/*/*.png")):
        pytest.skip("real bottle images missing")
    bench = _load_script()
    out = tmp_path / "bench.json"
    rc = bench.main(["--models", "tiny", "--images", "2", "--compare-precision", "tf32,bf16", "--no-warmup",
                     "--set", "general_prompts=[]", "--cache", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["image_files"]) == 2 and res["overrides"] == ["general_prompts=[]"]
    main_m, tf32, bf16 = res["saa"]["metrics"], res["saa_tf32"], res["saa_bf16"]
    assert main_m is not None and 0.0 <= main_m["pixel_auroc"] <= 100.0
    assert tf32["max_abs_map_diff_vs_main"] == 0.0
    assert tf32["metrics"]["pixel_auroc"] == main_m["pixel_auroc"]
    assert all(v == 0.0 for k, v in tf32["metric_diff_vs_main"].items() if k != "image_auroc")
    assert bf16["max_abs_map_diff_vs_main"] > 0.0 and set(bf16["metric_diff_vs_main"]) == set(main_m)
    assert bf16["images_per_s"] > 0 and bf16["speedup_vs_main"] > 0
