"""scripts/benchmark.py --saliency-only on the tiny models: the saliency steps it times give the
same values as their straightforward versions, and the JSON it writes has every timing it quotes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BOTTLE = REPO.parent / "shared/realdata"


def _load_script():
    spec = importlib.util.spec_from_file_location("saa_benchmark_script", REPO / "scripts/benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_saliency_only_outputs_match(tmp_path, capsys):
    glob = str(BOTTLE / "mvtec_ad__*/bottle/test/*/*.png")
    if not list(BOTTLE.glob("mvtec_ad__*/bottle/test/*/*.png")):
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
