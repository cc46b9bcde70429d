"""Memory and time of cross-image saliency (saa.saliency.bank) at a realistic size, random features.

Writes a FeatureStore of N random unit feature grids (default: 167 images -- the largest MVTec AD
test category -- x 1792 channels x 64 x 64, what wide_resnet50_2 stages 1-3 give at 256), then, in a
fresh process, loads the bank from disk and scores a few images, reporting the peak resident
memory (ru_maxrss) above the process's resident memory before scoring (torch imported, bank
opened) and the seconds per scored image::

    python scripts/bench_cross_bank.py                       # 167 x 1792 x 64 x 64, max_others 32
    python scripts/bench_cross_bank.py --max-others 0        # against all 166 others
    python scripts/bench_cross_bank.py --n 40 --queries 1    # smaller / quicker

The store needs ``4 * C * h * w`` bytes per image on disk (29 MiB here; --dir chooses where).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(args) -> None:
    import torch

    from saa.saliency.bank import FeatureStore

    store = FeatureStore(args.dir, "bench")
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(args.n):
        if store.has(str(i)):
            continue
        f = torch.randn(args.channels, args.grid, args.grid, generator=g)
        store.put(str(i), torch.nn.functional.normalize(f, dim=0))
    print(f"store: {args.n} x {args.channels} x {args.grid} x {args.grid} in {args.dir} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)


def score(args) -> dict:
    import torch

    from saa.saliency.bank import CrossImageBank, FeatureStore

    torch.set_num_threads(args.threads)
    store = FeatureStore(args.dir, "bench")
    bank = CrossImageBank.from_store(store, [str(i) for i in range(args.n)], k=args.k,
                                     max_others=args.max_others or None, subset=args.subset)
    base = _current_rss_mib()
    times = []
    for i in range(args.queries):
        t0 = time.perf_counter()
        s = bank.scores(i)
        times.append(time.perf_counter() - t0)
        assert s.shape == (args.grid, args.grid)
    return {"n": args.n, "channels": args.channels, "grid": args.grid, "k": args.k,
            "others_per_image": len(bank.others(0)), "threads": args.threads,
            "baseline_rss_mib": round(base, 1), "peak_rss_mib": round(_rss_mib(), 1),
            "peak_above_baseline_mib": round(_rss_mib() - base, 1),
            "seconds_per_image": [round(t, 2) for t in times],
            "store_mib_per_image": round(store.path("0").stat().st_size / 2**20, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=167, help="images in the category")
    p.add_argument("--channels", type=int, default=1792)
    p.add_argument("--grid", type=int, default=64, help="feature grid side")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--max-others", type=int, default=32, help="0 = all others")
    p.add_argument("--subset", default="similar", choices=["similar", "spread"])
    p.add_argument("--queries", type=int, default=2, help="images scored")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", default=None, help="store folder (default: a temporary one, deleted)")
    p.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.score_only:
        print(json.dumps(score(args)))
        return 0
    with tempfile.TemporaryDirectory(prefix="saa_bench_cross_") as tmp:
        if args.dir is None:
            args.dir = tmp
        build(args)
        cmd = [sys.executable, __file__, "--score-only"] + [a for a in (argv if argv is not None else sys.argv[1:])
                                                            if a != "--score-only"]
        if "--dir" not in cmd:
            cmd += ["--dir", str(args.dir)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             cwd=str(Path(__file__).resolve().parents[1]))
        result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
