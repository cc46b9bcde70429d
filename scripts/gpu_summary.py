#!/usr/bin/env python
"""The summary of ``scripts/device_gpu_bench.sh`` from what its parts have written so far:
``OUT/summary.json`` and ``OUT/summary.md`` (rewritten after every part, so a run cut short still
says what it measured and which part stopped).

    python scripts/gpu_summary.py --out OUT --work WORK [--mode gpu|dry]

Rows of the table: the authors' code, then every saa schedule of ``saa.json`` (images/s, the ratio
to the authors' code, peak GPU memory, the largest map difference to the authors' maps, to saa's
straightforward schedule and to saa fp32 B = 1).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PARTS = ("checkpoints", "authors", "saa", "cuda_tests")
LABELS = {  # schedule key of saa.json -> what it is
    "baseline": "saa, the authors' schedule (straightforward)",
    "saa": "saa fp32 B=1",
    "saa_exact": "saa fp32 B=1, the authors' detector kernels (exact)",
}


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def label_of(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    m = re.fullmatch(r"saa(?:_(fp32|tf32|bf16|fp16))?(?:_b(\d+))?", key)
    if m:
        return f"saa {m.group(1) or 'fp32'} B={m.group(2) or 1}"
    return key


def rows_of(authors, saa) -> list[dict]:
    rows = []
    base_ips = authors.get("images_per_s") if authors else None
    if base_ips:
        rows.append({"run": "authors' code (SAA-plus @23acbd9)", "key": "authors", "images_per_s": base_ips,
                     "vs_authors": 1.0 if base_ips else None, "peak_gpu_mb": authors.get("peak_cuda_mb"),
                     "diff_vs_authors": 0.0, "diff_vs_straightforward": None, "diff_vs_b1": None})
    for key, r in (saa or {}).items():
        if not (isinstance(r, dict) and "images_per_s" in r):
            continue
        ips = r["images_per_s"]
        rows.append({"run": label_of(key), "key": key, "images_per_s": ips,
                     "vs_authors": ips / base_ips if base_ips else None, "peak_gpu_mb": r.get("peak_cuda_mb"),
                     "diff_vs_authors": r.get("max_abs_map_diff_vs_reference"),
                     "diff_vs_straightforward": 0.0 if key == "baseline" else r.get("max_abs_map_diff_vs_baseline"),
                     "diff_vs_b1": 0.0 if key == "saa" else r.get("max_abs_map_diff_vs_main")})
    return rows


def cuda_tests_of(path: Path) -> dict:
    """The pytest summary line of the CUDA tests, and the skip reasons."""
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text)}
    skips = sorted(set(re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", text)))
    failed = re.findall(r"^FAILED (\S+)", text, flags=re.M)
    return {"counts": counts, "skip_reasons": skips, "failed": failed}


def fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(summary: dict) -> str:
    lines = [f"# GPU comparison ({summary['mode']})", ""]
    env = summary.get("env") or {}
    if env:
        lines += [", ".join(f"{k} {v}" for k, v in env.items() if v), ""]
    lines += ["| part | status | seconds (limit) |", "|---|---|---|"]
    for name in PARTS:
        p = summary["parts"].get(name)
        if p is None:
            status, secs = "not run", ""
        elif "skipped" in p:
            status, secs = f"skipped: {p['skipped']}", ""
        else:
            status = "time limit" if p.get("timed_out") else ("ok" if p.get("rc") == 0 else f"exit {p.get('rc')}")
            secs = f"{p.get('seconds')} ({p.get('limit_s')})"
        lines.append(f"| {name} | {status} | {secs} |")
    lines += ["", "| run | images/s | vs authors | peak GPU MB | max map diff vs authors | vs straightforward "
                  "| vs saa fp32 B=1 |", "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        ratio = "–" if r["vs_authors"] is None else f"{r['vs_authors']:.2f}x"
        lines.append(f"| {r['run']} | {fmt(r['images_per_s'], '.3f')} | {ratio} | "
                     f"{fmt(r['peak_gpu_mb'], '.0f')} | {fmt(r['diff_vs_authors'], '.3g')} | "
                     f"{fmt(r['diff_vs_straightforward'], '.3g')} | {fmt(r['diff_vs_b1'], '.3g')} |")
    for note in summary.get("notes", []):
        lines.append(f"- {note}")
    t = summary.get("cuda_tests") or {}
    if t:
        lines += ["", f"CUDA tests: {t.get('counts')}" + (f"; failed: {', '.join(t['failed'])}" if t.get("failed") else "")]
        lines += [f"- skipped: {s}" for s in t.get("skip_reasons", [])]
    return "\n".join(lines) + "\n"


def build(out: Path, work: Path, mode: str) -> dict:
    parts = {name: _read(work / f"part_{name}.json") for name in PARTS}
    authors, saa = _read(out / "authors.json"), _read(out / "saa.json")
    notes = []
    if authors:
        notes += [f"authors: {n}" for n in authors.get("notes", [])]
        if authors.get("error"):
            notes.append(f"authors: failed: {authors['error']}")
    if saa and saa.get("reference_maps_note"):
        notes.append(f"saa against the authors' maps: {saa['reference_maps_note']}")
    summary = {"mode": mode, "env": _read(work / "env.json"), "parts": {k: v for k, v in parts.items() if v},
               "rows": rows_of(authors, saa), "notes": notes, "cuda_tests": cuda_tests_of(out / "cuda_tests.txt"),
               "checkpoints": _read(out / "checkpoints.json")}
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mode", default="gpu")
    args = ap.parse_args(argv)
    out = Path(args.out)
    summary = build(out, Path(args.work), args.mode)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
