#!/usr/bin/env python
"""Record the time and memory of a ``scripts/benchmark.py`` run (its ``--out`` JSON) in
``saa/measurements.json``, where the README and ``saa doctor`` take their full-method figures from.

    python scripts/benchmark.py --models realsize --sam vit_b --images 5 --threads 2 --out bench.json
    python scripts/record_benchmark.py bench.json --name saa_vit_b_cpu \\
        --command "python scripts/benchmark.py --models realsize --sam vit_b --images 5 --threads 2"
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from measure_lite import machine  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, help="the --out JSON of scripts/benchmark.py")
    ap.add_argument("--name", required=True, help="the record's name, e.g. saa_vit_b_cpu")
    ap.add_argument("--command", required=True, help="the benchmark command that wrote BENCH")
    args = ap.parse_args(argv)
    bench = json.loads(args.bench.read_text())
    run = bench["saa"]
    entry = {
        "what": f"SAA+ ({bench.get('models', '?')} random-weight models, SAM {bench.get('sam', '?')}) on "
                f"{run['images']} real bottle images, {bench.get('device', 'cpu')}",
        "images": run["images"],
        "seconds_per_image": round(run["seconds"] / run["images"], 3),
        "peak_rss_gb": round(run["peak_rss_mb"] * 2**20 / 1e9, 2),
        "threads": bench.get("threads"),
        "command": args.command,
        "script": f"python scripts/record_benchmark.py BENCH.json --name {args.name} --command '...'",
        "machine": machine(),
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    path = REPO / "saa" / "measurements.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[args.name] = entry
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(json.dumps({args.name: entry}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
