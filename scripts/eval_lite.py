#!/usr/bin/env python
"""Lite mode (cross-image saliency, no detector/segmenter) on the real images in shared/realdata.

Sets: MVTec bottle (31 images, 21 masks), MTD (492 images), the 3 VisA pcb samples (all defective:
no image AUROC), the 3 Intel hazelnut-toy images. Per set, with the project's metrics
(:mod:`saa.metrics`): maps resized to 400 x 400 (bicubic; masks nearest), normalised jointly over
the set (SPEC section 5), image score = max of the map; pixel AUROC, image AUROC, pixel F1-max,
AUPRO (FPR <= 0.3). For bottle and MTD the authors' single-image saliency ("400 farthest",
0.5 (1 - cos), SPEC 3.6(a)) is scored on the SAME features (the lite feature grid of the same
resized images, before pooling; no smoothing, as the authors) in the same run.

Every set is run with the same settings (the :class:`saa.methods.lite.LiteSettings` defaults unless given
on the command line); each table row names the cross-image settings it used.

``--scale-test``: cross-image scoring of 100 images at 256 x 256 input (the 31 bottle images
repeated, cycled): time per image and peak RSS.

    python scripts/eval_lite.py --out lite.json [--scale-test] [--sets bottle,mtd]
    python scripts/eval_lite.py --sets "" --scale-test   # the scale test alone (peak RSS of it only)
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from saa.datasets import build_dataset
from saa.image_io import read_rgb
from saa.methods.lite import LitePipeline, LiteSettings
from saa.metrics import compute_all, normalize_maps
from saa.saliency import self_similarity_saliency
from saa.saliency.bank import CrossImageBank
from saa.saliency.cross import pool_features

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "realdata"
EVAL_SIZE = 400
METRICS = ("pixel_auroc", "image_auroc", "pixel_f1_max", "aupro")


def _jpeg_mask(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127


def load_set(name: str, root: Path):
    """-> list of (image RGB uint8, mask bool (H, W), label int)."""
    items = []
    if name in ("bottle", "mtd"):
        kind, sub, cat = ("mvtec", "mvtec_ad__doanthai161_Bottle-Anomaly-Detection", "bottle") if name == "bottle" \
            else ("mtd", "mtd__abin24_Magnetic-tile-defect-datasets", "mtd")
        ds = build_dataset(kind, root / sub)
        for s in ds.samples(cat):
            img = read_rgb(s.image_path)
            items.append((img, ds.load_mask(s, img.shape[:2]), int(s.label)))
    elif name == "visa_pcb":
        for d in sorted((root / "visa_pcb_samples__rezafarjad_industrial-pcb-anomaly-detection").glob("pcb*")):
            img = read_rgb(d / "defective.jpg")
            m = _jpeg_mask(d / "ground_truth.jpg")
            if m.shape != img.shape[:2]:
                m = cv2.resize(m.astype(np.uint8), img.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            items.append((img, m, 1))
    elif name == "hazelnut":
        d = root / "hazelnut_toy_docs__openvinotoolkit_anomalib" / "hazelnut_toy"
        img = read_rgb(d / "good.jpg")
        items.append((img, np.zeros(img.shape[:2], bool), 0))
        for t in ("colour", "crack"):
            img = read_rgb(d / f"{t}.jpg")
            items.append((img, _jpeg_mask(d / f"{t}_mask.jpg"), 1))
    else:
        raise SystemExit(f"unknown set {name!r}")
    return items


def evaluate(maps, items) -> dict:
    """SPEC section 5 on one set: 400 x 400, joint normalisation, image score = max."""
    m = np.stack([cv2.resize(np.asarray(a, np.float32), (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_CUBIC)
                  for a in maps])
    gt = np.stack([cv2.resize(it[1].astype(np.uint8), (EVAL_SIZE, EVAL_SIZE), interpolation=cv2.INTER_NEAREST) > 0
                   for it in items])
    m = normalize_maps(m)
    labels = np.array([it[2] for it in items])
    r = compute_all(labels, m.reshape(len(m), -1).max(axis=1), gt, m)
    return {k: r[k] for k in METRICS}


def score_grids(pipe: LitePipeline, feats) -> tuple[list, str]:
    """Pass 2 over a set's (un-pooled) features: each image's cross-image grid against the others
    (the bank lite uses in `saa run`), or the single-image grids when the set has one image."""
    bank = CrossImageBank.from_features([pool_features(f, pipe.pool) for f in feats], **pipe.bank_settings())
    if len(bank) < 2:
        return [self_similarity_saliency(f, n=pipe.single_n, neighbors="nearest") for f in feats], "single"
    return [bank.scores(i) for i in range(len(bank))], "cross"


def farthest_maps(feats, items):
    """Authors' single-image saliency (400 farthest, 0.5 (1 - cos)) on the same features."""
    out = []
    for f, it in zip(feats, items):
        g = self_similarity_saliency(f, n=400, neighbors="farthest")
        h, w = it[0].shape[:2]
        out.append(cv2.resize(g, (w, h)))
    return out


def scale_test(pipe: LitePipeline, root: Path, n: int = 100) -> dict:
    base = [it[0] for it in load_set("bottle", root)]
    feats = [pipe.features(base[i % len(base)]) for i in range(n)]
    t = time.perf_counter()
    grids, _ = score_grids(pipe, feats)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB -> MiB (Linux)
    c, h, w = feats[0].shape
    th, tw = pipe.input_shape(*base[0].shape[:2])
    return {"images": n, "input": f"{th}x{tw}", "grid": f"{h}x{w}", "channels": c,
            "search_grid": "x".join(str(v) for v in grids[0].shape), "pool": pipe.pool,
            "others_per_image": n - 1 if pipe.max_others is None else min(pipe.max_others, n - 1),
            "seconds_total": dt, "seconds_per_image": dt / n, "peak_rss_mib": peak,
            "torch_threads": torch.get_num_threads()}


def fmt(v) -> str:
    return "   n/a" if v != v else f"{100 * v:6.2f}"


def _defaults() -> dict:
    return LiteSettings().model_dump()


def describe(pipe: LitePipeline) -> str:
    """The cross-image settings of a row, e.g. 'per_image 0.5, 32 others spread, pool 2'."""
    agg = f"per_image {pipe.fraction:g}" if pipe.aggregate == "per_image" else "nearest"
    others = "all others" if pipe.max_others is None else f"<={pipe.max_others} others {pipe.subset}"
    return f"{agg}, k {pipe.k}, {others}, pool {pipe.pool}"


def main(argv=None) -> int:
    d = _defaults()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--sets", default="bottle,mtd,visa_pcb,hazelnut")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--stages", default=",".join(str(s) for s in d["stages"]))
    ap.add_argument("--size", type=int, default=d["size"])
    ap.add_argument("--squash", action="store_true", help="resize to size x size (aspect not kept)")
    ap.add_argument("--pool", type=int, default=d["pool"])
    ap.add_argument("--k", type=int, default=d["k"])
    ap.add_argument("--aggregate", default=d["aggregate"], choices=["per_image", "nearest"])
    ap.add_argument("--fraction", type=float, default=d["fraction"])
    ap.add_argument("--smooth", type=float, default=d["smooth"], help="Gaussian sigma in input pixels")
    ap.add_argument("--max-others", type=int, default=d["max_others"], help="0 = all other images")
    ap.add_argument("--subset", default=d["subset"], choices=["spread", "similar"])
    ap.add_argument("--scale-test", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stages = tuple(int(s) for s in args.stages.split(","))
    pipe = LitePipeline(stages=stages, size=args.size, k=args.k, smooth=args.smooth,
                        max_others=args.max_others or None, subset=args.subset,
                        keep_aspect=not args.squash, pool=args.pool, aggregate=args.aggregate,
                        fraction=args.fraction)
    print(f"lite: efficientnet_lite0 stages {stages}, ~{args.size}^2 px input "
          f"({'squashed' if args.squash else 'aspect kept'}), pool {args.pool}, k {args.k}, {args.aggregate}"
          f"{f' {args.fraction:g}' if args.aggregate == 'per_image' else ''}, "
          f"{'all others' if not args.max_others else f'<= {args.max_others} others ({args.subset})'}, "
          f"smooth {args.smooth:g} px; "
          f"same settings for every set; torch threads {torch.get_num_threads()}")
    results: dict = {"config": vars(args) | {"root": str(args.root), "out": str(args.out)}, "sets": {}}
    rows = []
    for name in [s for s in args.sets.split(",") if s]:
        items = load_set(name, args.root)
        t0 = time.perf_counter()
        feats = [pipe.features(it[0]) for it in items]
        t1 = time.perf_counter()
        grids, branch = score_grids(pipe, feats)
        maps = [pipe.finish(g, it[0]) for g, it in zip(grids, items)]
        t2 = time.perf_counter()
        entry = {"images": len(items), "anomalous": sum(it[2] for it in items),
                 "max_others": pipe.max_others, "settings": describe(pipe), "branch": branch,
                 "seconds_features": t1 - t0, "seconds_scores": t2 - t1,
                 "lite": evaluate(maps, items)}
        label = f"lite ({branch}: {describe(pipe)})" if branch != "single" else "lite (single-image fallback)"
        rows.append((name, label, entry["lite"]))
        if name in ("bottle", "mtd"):
            t3 = time.perf_counter()
            entry["farthest400"] = evaluate(farthest_maps(feats, items), items)
            entry["seconds_farthest400"] = time.perf_counter() - t3
            rows.append((name, "single-image 400 farthest (authors), same features", entry["farthest400"]))
        results["sets"][name] = entry
        print(f"  {name}: {len(items)} images, features {t1 - t0:.1f}s, cross scores {t2 - t1:.1f}s", flush=True)

    if rows:
        width = max(len(m) for _, m, _ in rows)
        print(f"\n{'set':10s} {'method':{width}s} {'pixAUROC':>8s} {'imgAUROC':>8s} {'pixF1max':>8s} {'AUPRO':>8s}")
        for name, method, r in rows:
            print(f"{name:10s} {method:{width}s} " + " ".join(f"{fmt(r[k]):>8s}" for k in METRICS))

    if args.scale_test:
        st = scale_test(pipe, args.root)
        results["scale_test"] = st
        print(f"\nscale test: {st['images']} images at {st['input']} (grid {st['grid']}, {st['channels']} ch, "
              f"searched on {st['search_grid']} after pool {st['pool']}), "
              f"{st['others_per_image']} others each: {st['seconds_per_image']:.2f} s/image "
              f"({st['seconds_total']:.1f} s total, {st['torch_threads']} threads), peak RSS {st['peak_rss_mib']:.0f} MiB")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
