"""torchrun: images sharded across 2 processes (gloo), rank 0 evaluates; metrics equal 1 process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from saa.testing import tiny_config_overrides

from test_evaluator import FAST, make_mvtec

REPO = Path(__file__).resolve().parents[1]


def _args(data: Path, out: Path, tiny_models) -> list[str]:
    args = [str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out), "--no-progress"]
    for s in tiny_config_overrides(tiny_models) + FAST:
        args += ["--set", s]
    return args


def test_two_processes_give_the_metrics_of_one(tmp_path, tiny_models):
    data = make_mvtec(tmp_path / "data")
    # one thread per process in both runs, so each image is computed with the same arithmetic
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SAA_DIST_BACKEND="gloo")
    one = tmp_path / "one"
    r = subprocess.run([sys.executable] + _args(data, one, tiny_models), env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]

    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", "29533"] + _args(data, two, tiny_models)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "rank 1/2: computed 1 images" in r.stdout  # images 0 and 2 on rank 0, image 1 on rank 1
    got = json.loads((two / "metrics.json").read_text())
    want = json.loads((one / "metrics.json").read_text())
    assert got["totals"]["computed"] == 0 and got["totals"]["images"] == 3  # rank 0 reused all shards
    assert got["categories"]["bottle"]["metrics"] == want["categories"]["bottle"]["metrics"]
    assert got["mean"] == want["mean"]
    assert len(list((two / "bottle" / "maps").glob("*.npz"))) == 3
