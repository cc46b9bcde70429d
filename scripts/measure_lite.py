#!/usr/bin/env python
"""Time and memory of the lite method as a user runs it (``saa run CONFIG --method lite``), on the
real images in ../shared/realdata: MVTec bottle (31 images, 900 x 900) and MTD (492 images of
varied sizes). Each run is a fresh process, timed from start to exit; its peak resident memory is
read from the operating system; the seconds per image are the run's own feature and scoring time
(model loading and metrics excluded) divided by the number of images, and the wall time per image
(everything included) is given beside it.

    python scripts/measure_lite.py                 # print the figures
    python scripts/measure_lite.py --write         # and record them in saa/measurements.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "realdata"
SETS = {
    "bottle": ("configs/mvtec.yaml", "mvtec_ad__doanthai161_Bottle-Anomaly-Detection", "lite_bottle"),
    "mtd": ("configs/mtd.yaml", "mtd__abin24_Magnetic-tile-defect-datasets", "lite_mtd"),
}
#: runs the command and prints its peak RSS (KiB): the only child of this wrapper is the run
_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
         "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); sys.exit(r)")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def measure(name: str, root: Path, threads: int) -> dict:
    config, sub, key = SETS[name]
    data = root / sub
    if not data.is_dir():
        raise SystemExit(f"{data} not found (../shared/realdata beside the repository)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "saa", "-q", "run", config, "--method", "lite", "--data-root", str(data),
               "--out", str(out), "--no-progress"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _WRAP, *cmd], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        rss_kib = int(r.stdout.rsplit("MAXRSS", 1)[1].split()[0])
        result = json.loads((out / "metrics.json").read_text())
    cats = result["categories"]
    images = sum(c["counts"]["images"] for c in cats.values())
    compute = sum(c["seconds"].get("cross_features", 0.0) + c["seconds"].get("predict", 0.0) for c in cats.values())
    return {
        key: {
            "what": f"saa run {config} --method lite on {images} real {name} images",
            "images": images,
            "seconds_per_image": round(compute / images, 3),
            "wall_seconds_per_image": round(wall / images, 3),
            "wall_seconds": round(wall, 1),
            "peak_rss_gb": round(rss_kib * 1024 / 1e9, 2),
            "threads": threads,
            "command": (f"OMP_NUM_THREADS={threads} saa run {config} --method lite "
                        f"--data-root ../shared/realdata/{sub}"),
            "script": "python scripts/measure_lite.py --write",
            "machine": machine(),
            "date": datetime.now(timezone.utc).date().isoformat(),
        }
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bottle,mtd")
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="record the figures in saa/measurements.json")
    args = ap.parse_args(argv)
    found: dict = {}
    for name in [s for s in args.sets.split(",") if s]:
        found.update(measure(name, args.root, args.threads))
    print(json.dumps(found, indent=1))
    if args.write:
        path = REPO / "saa" / "measurements.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(found)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
