#!/usr/bin/env python
"""Benchmark of the pixel metrics: saa.metrics (one shared sort) vs scikit-learn.

For N pixels of a realistic SAA-like category (400x400 float32 maps, mostly zeros with blobs, ~2 %
anomalous pixels) it measures, each method in its own subprocess so that the numbers are separate:

* wall time of pixel AUROC + AP + F1-max (ours: ``saa.metrics.pixel_metrics``; scikit-learn:
  ``roc_auc_score`` + ``average_precision_score`` + ``precision_recall_curve`` -> max F1),
* peak memory: ``tracemalloc`` peak of what the computation allocated (NumPy reports its buffers to
  tracemalloc) and the process's peak RSS (``ru_maxrss``, includes the input data),

and the maximum absolute difference of the three values.

    python scripts/bench_metrics.py --pixels 20000000 --out bench.json
    python scripts/bench_metrics.py --methods ours,ours:cuda,sklearn   # with a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

SIDE = 400


def make_data(n_pixels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool (N,400,400), maps float32 (N,400,400)) with about n_pixels pixels in total."""
    import cv2

    n_img = max(1, round(n_pixels / (SIDE * SIDE)))
    rng = np.random.default_rng(seed)
    masks = np.empty((n_img, SIDE, SIDE), dtype=bool)
    maps = np.empty((n_img, SIDE, SIDE), dtype=np.float32)
    grid = 25
    for i in range(n_img):
        peaks = rng.random((grid, grid)).astype(np.float32)
        peaks[peaks < 0.985] = 0.0
        gt = cv2.resize(peaks, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
        masks[i] = gt > 0.3
        # the map sees most true defects (weaker or stronger) plus a few false blobs
        seen = peaks * rng.uniform(0.2, 1.0, size=peaks.shape).astype(np.float32)
        seen[rng.random(peaks.shape) < 0.3] = 0.0
        false = rng.random((grid, grid)).astype(np.float32)
        false[false < 0.99] = 0.0
        small = np.maximum(seen, 0.6 * false)
        maps[i] = np.clip(cv2.resize(small, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC), 0.0, None)
    return masks, maps


def run_ours(masks, maps, device=None) -> dict:
    from saa.metrics import pixel_metrics

    m = pixel_metrics(masks, maps, device)
    return {"auroc": m["auroc"], "ap": m["ap"], "f1_max": m["f1_max"]}


def run_sklearn(masks, maps) -> dict:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    y = masks.reshape(-1)
    s = maps.reshape(-1)
    auroc = roc_auc_score(y, s)
    ap = average_precision_score(y, s)
    p, r, _ = precision_recall_curve(y, s)
    denom = p + r
    f1 = np.where(denom > 0, 2 * p * r / np.where(denom > 0, denom, 1), 0.0)
    return {"auroc": float(auroc), "ap": float(ap), "f1_max": float(f1.max())}


def child(method: str, n_pixels: int, seed: int) -> None:
    masks, maps = make_data(n_pixels, seed)
    if method.startswith("ours"):
        import saa.metrics  # noqa: F401  (import cost not timed)

        device = method.split(":", 1)[1] if ":" in method else None  # "ours:cuda": the sort on the GPU
        if device:
            import torch

            torch.zeros(1, device=device)  # initialise the device outside the timing

        def fn(a, b):
            return run_ours(a, b, device)
    else:
        import sklearn.metrics  # noqa: F401

        fn = run_sklearn
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    values = fn(masks, maps)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "method": method,
        "pixels": int(maps.size),
        "positive_fraction": float(masks.mean()),
        "zero_fraction": float((maps == 0).mean()),
        "distinct_scores": int(np.unique(maps).size) if maps.size <= 30_000_000 else None,
        "seconds": seconds,
        "tracemalloc_peak_mib": peak / 2**20,
        "input_mib": (masks.nbytes + maps.nbytes) / 2**20,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": rss_peak / 1024,
        "values": values,
    }))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=100_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    ap.add_argument("--methods", default="ours,sklearn",
                    help="comma-separated: ours, ours:cuda (the sort with torch on the GPU), sklearn")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.pixels, args.seed)
        return 0
    results = {}
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    for method in args.methods.split(","):
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", method, "--pixels", str(args.pixels),
             "--seed", str(args.seed)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            results[method] = {"error": proc.stderr[-2000:], "returncode": proc.returncode}
            continue
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[method]
        print(f"{method:8s} {r['pixels']:>12,d} px  {r['seconds']:8.2f} s  tracemalloc peak "
              f"{r['tracemalloc_peak_mib']:9.1f} MiB  RSS peak {r['rss_peak_mib']:9.1f} MiB "
              f"(input {r['input_mib']:.0f} MiB)  {r['values']}", flush=True)
    if "values" in results.get("ours", {}) and "values" in results.get("sklearn", {}):
        diff = max(abs(results["ours"]["values"][k] - results["sklearn"]["values"][k]) for k in ("auroc", "ap", "f1_max"))
        results["max_abs_diff"] = diff
        results["speedup"] = results["sklearn"]["seconds"] / results["ours"]["seconds"]
        results["memory_ratio_tracemalloc"] = (
            results["sklearn"]["tracemalloc_peak_mib"] / max(results["ours"]["tracemalloc_peak_mib"], 1e-9)
        )
        print(f"max |ours - sklearn| = {diff:.3g}; speed-up x{results['speedup']:.1f}; "
              f"tracemalloc peak ratio x{results['memory_ratio_tracemalloc']:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
