#!/usr/bin/env python
"""Speed and memory of lite reference banks of 10 and 200 good images on the CPU.

References: the first 10 bottle ``train/good`` images, and 200 made of the 29 real ``train/good``
images under the 8 flips / quarter turns (there are 29 real ones here; the search cost depends on
the number of positions, not on where they come from). Queries: the 31 bottle test images (900 x
900 PNG, already decoded), each scored with :meth:`saa.bank.ReferenceBank.predict` exactly as a
user's query is (features of the query, the nearest search, the map at image and out_size).

``cpu_seconds_per_query``: the processor time the query used (all its threads): on a machine shared
with other jobs the wall time grows with the load, this much less. Per bank: build time (features, coreset; ``--build-threads``, default 1), the bank's kept positions
and their size; per torch thread count (``--threads``): seconds per query (mean and max over the queries after one warm-up) split into the
query's features, the search (``scores_for``) and the rest, and the growth of the peak resident
memory during the queries. ``--all-positions``: also the 200-image bank without a coreset (every
position searched; a few queries only). The JSON records the machine, its load average and the date.

    python scripts/bench_bank.py --out bench_bank.json [--threads 1,2] [--all-positions]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saa.bank import build_bank  # noqa: E402
from saa.config import load_config  # noqa: E402
from saa.datasets import build_dataset  # noqa: E402
from saa.image_io import atomic_save_png, read_rgb  # noqa: E402
from saa.run import make_method  # noqa: E402

BOTTLE = REPO.parent / "shared" / "realdata" / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def references(train, tmp: Path, n: int) -> list[Path]:
    if n <= len(train):
        return train[:n]
    out = []
    for t in range(8):
        for p in train:
            im = read_rgb(p)
            if t & 4:
                im = im[:, ::-1]
            q = tmp / f"aug{t}_{p.stem}.png"
            atomic_save_png(q, np.ascontiguousarray(np.rot90(im, t & 3)))
            out.append(q)
            if len(out) == n:
                return out
    return out


def query_times(method, bank, queries, limit=None) -> dict:
    qs = queries if limit is None else queries[:limit]
    bank.predict(method, qs[0][1], "bottle")  # warm-up
    before = peak_mib()
    total, feats, search, cpu = [], [], [], []
    for path, rgb in qs:
        t0 = time.perf_counter()
        f = method.reference_features(rgb)
        t1 = time.perf_counter()
        bank.scores_for(f)
        t2 = time.perf_counter()
        c2 = time.process_time()
        bank.predict(method, rgb, "bottle", path=path)
        cpu.append(time.process_time() - c2)
        t3 = time.perf_counter()
        feats.append(t1 - t0)
        search.append(t2 - t1)
        total.append(t3 - t2)
    return {"queries": len(qs), "seconds_per_query": round(float(np.mean(total)), 4),
            "seconds_per_query_max": round(float(np.max(total)), 4),
            "cpu_seconds_per_query": round(float(np.mean(cpu)), 4),
            "seconds_features": round(float(np.mean(feats)), 4), "seconds_search": round(float(np.mean(search)), 4),
            "seconds_rest": round(float(np.mean(total) - np.mean(feats) - np.mean(search)), 4),
            "peak_rss_growth_mib": round(peak_mib() - before, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure (default 1,2)")
    ap.add_argument("--sizes", default="10,200", help="bank sizes (images)")
    ap.add_argument("--build-threads", dest="build_threads", type=int, default=1, help="torch threads of the builds")
    ap.add_argument("--all-positions", action="store_true", help="also the 200 bank with every position (5 queries)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    method = make_method(load_config(REPO / "configs" / "mvtec.yaml", ["method=lite"])).load()
    ds = build_dataset("mvtec", BOTTLE)
    train = [s.image_path for s in ds.train_samples("bottle")]
    queries = [(s.image_path, read_rgb(s.image_path)) for s in ds.samples("bottle")]
    res = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                       "torch": torch.__version__, "load_average_start": list(os.getloadavg())},
           "method": method.label, "query_images": "31 bottle test images, 900 x 900", "runs": []}
    with tempfile.TemporaryDirectory(prefix="saa_bench_bank_") as tmpname:
        tmp = Path(tmpname)
        variants = [(int(n), None) for n in args.sizes.split(",")]
        if args.all_positions:
            variants.append((200, 0))
        for n, mp in variants:
            refs = references(train, tmp, n)
            torch.set_num_threads(args.build_threads)
            folder = tmp / f"bank_{n}_{mp}"
            t = time.perf_counter()
            kw = {} if mp is None else {"max_positions": mp}
            bank = build_bank(method, "bottle", refs, folder, **kw)
            build = time.perf_counter() - t
            sc = bank.manifest.scoring
            built = {"references": len(bank), "positions_total": sc.positions_total,
                     "positions_kept": sc.positions_kept, "build_threads": args.build_threads,
                     "coreset_seconds": sc.coreset.seconds if sc.coreset else 0.0, "build_seconds": round(build, 2),
                     "bank_positions_mib": round((folder / "positions.npy").stat().st_size / 2 ** 20, 2),
                     "bank_folder_mib": round(sum(p.stat().st_size for p in folder.iterdir()) / 2 ** 20, 2)}
            for th in [int(t) for t in args.threads.split(",")]:
                torch.set_num_threads(th)
                entry = dict(built, threads=th)
                entry.update(query_times(method, bank, queries, 5 if mp == 0 else None))
                entry["load_average"] = list(os.getloadavg())
                res["runs"].append(entry)
                print(json.dumps(entry), flush=True)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
