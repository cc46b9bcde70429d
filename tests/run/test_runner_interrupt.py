"""A benchmark run killed with SIGKILL mid-way resumes, recomputes nothing done, and ends with the
metrics of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from saa.testing import tiny_config_overrides


from tests.conftest import FAST, REPO


def _cmd(data: Path, out: Path, tiny_models) -> list[str]:
    cmd = [sys.executable, str(REPO / "run_MVTec.py"), "--data-root", str(data), "--out", str(out), "--no-progress"]
    for s in tiny_config_overrides(tiny_models) + FAST:
        cmd += ["--set", s]
    return cmd


def _maps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "bottle" / "maps").glob("*.npz")}


def test_sigkill_then_resume_gives_identical_metrics(tmp_path, tiny_models, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    # uninterrupted reference
    ref = tmp_path / "ref"
    r = subprocess.run(_cmd(data, ref, tiny_models), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    n_images = len(_maps(ref))
    assert n_images == 3

    # killed as soon as the first per-image result is on disk
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, out, tiny_models), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not _maps(out) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _maps(out)
    assert 1 <= len(done) < n_images, "the kill should land mid-run"
    assert not (out / "metrics.json").exists()
    # no half-written files left visible under a final name
    for p in (out / "bottle" / "maps").iterdir():
        assert not p.name.endswith(".tmp") or p.name.startswith(".")

    r = subprocess.run(_cmd(data, out, tiny_models), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = _maps(out)
    assert {k: after[k] for k in done} == done, "results from before the kill were recomputed"
    assert len(after) == n_images
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((ref / "metrics.json").read_text())
    assert got["categories"]["bottle"]["metrics"] == want["categories"]["bottle"]["metrics"]
    assert got["mean"] == want["mean"]


def test_unreadable_image_stops_the_run_and_keeps_results(tmp_path, tiny_models, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    # sorted after broken_large/000 and contamination/000: the run reaches it last
    bad = data / "bottle" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    r = subprocess.run(_cmd(data, out, tiny_models), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    assert "truncated" in r.stderr or "not a readable image" in r.stderr
    kept = _maps(out)
    assert len(kept) >= 1 and not (out / "metrics.json").exists()
