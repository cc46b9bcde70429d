#!/usr/bin/env python
"""Few-shot lite (a reference bank of k good images) against today's transductive lite (the test
images scored against each other, as `saa run --method lite` does), on the real images of
shared/realdata. Everything goes through the public code paths: the bank is built with
:func:`saa.bank.build_bank` and queried with :meth:`ReferenceBank.predict`; the transductive rows use
``method.bank_from_features`` + ``method.predict(..., index=i)`` like the run engine; metrics are
those of `saa run` (:func:`saa.evaluation.category_maps_and_scale` at eval size 400, then
:func:`saa.evaluation.category_evaluation`; image score = max of the normalised map).

Sets:

* ``bottle``: MVTec bottle, 31 test images (10 good, 21 defective), references from ``train/good``
  named by the SAA+ authors' seed lists (``shared/fewshot/seeds_mvtec/bottle``), k = 1, 5, 10 and
  seed runs 0-2 (mean and spread), the same references scored with lite's transductive rule
  (``per_image``) instead of the bank's nearest search, plus all 29 training images with coresets
  of ``--positions`` positions (0: every position kept);
* ``mtd``: magnetic tiles; the references are 10 of the 100 good ``MT_Free`` images (run r: the
  ``r``-th, ``r + 10``-th, ... in name order, r = 0-2); evaluated on the 462 images no run uses as a
  reference (70 good, 392 defective), the transductive row on the same 462;
* ``--augmented``: bottle against 200 references made of the 29 training images under the 8
  flips / quarter turns, with the same ``--positions`` (slow: about 2 s per query with all).

``--method improved-tiny``: the ``improved`` preset (SAA+ with cross-image saliency) with the tiny
random-weight models of :mod:`saa.testing` (built in a temporary folder; ``general_prompts=[]``):
it shows that the bank machinery works for that method end to end, NOT its accuracy (the models
are untrained). Only the bottle rows of the transductive run and k = 1, 5, 10 (seed runs 0-2); a
query costs about 5 s on one core (the detector's 800-pixel input), so ``--test-images N`` takes N
evenly spaced test images (of the 31, in key order) to keep the run to minutes.

    python scripts/eval_fewshot.py --out fewshot.json [--sets bottle,mtd] [--augmented] [--threads 1]
        [--positions 4096,10240,16384,0]
    python scripts/eval_fewshot.py --method improved-tiny --sets bottle --test-images 10 --out improved.json
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saa.bank import DEFAULT_MAX_POSITIONS, build_bank  # noqa: E402
from saa.config import load_config  # noqa: E402
from saa.datasets import build_dataset, select_k_shot  # noqa: E402
from saa.evaluation import category_evaluation, category_maps_and_scale, resize_masks  # noqa: E402
from saa.image_io import read_rgb  # noqa: E402
from saa.run import make_method  # noqa: E402

REAL = REPO.parent / "shared" / "realdata"
SEEDS = REPO.parent / "shared" / "fewshot" / "seeds_mvtec"
BOTTLE = REAL / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection"
MTD = REAL / "mtd__abin24_Magnetic-tile-defect-datasets"
EVAL = 400
KEYS = ("pixel_auroc", "image_auroc", "pixel_f1_max", "aupro")


def evenly(samples: list, n: int) -> list:
    """``n`` evenly spaced samples (all when ``n`` is 0 or at least their number)."""
    if not n or n >= len(samples):
        return list(samples)
    return [samples[(i * len(samples)) // n] for i in range(n)]


def build_method(name: str, tmp: Path):
    """``lite``, or ``improved-tiny``: the improved preset on saa.testing's tiny random-weight models."""
    if name == "lite":
        return make_method(load_config(REPO / "configs" / "mvtec.yaml", ["method=lite"]))
    from saa.testing import build_tiny_models, tiny_config_overrides

    models = build_tiny_models(tmp / "tiny_models", seed=0)
    return make_method(load_config(REPO / "configs" / "mvtec.yaml",
                                   tiny_config_overrides(models) + ["preset=improved", "general_prompts=[]"]))


def metrics(ds, samples, maps, sizes) -> dict:
    norm, scores, _, _ = category_maps_and_scale(maps, EVAL)
    masks = resize_masks([ds.load_mask(s, hw) for s, hw in zip(samples, sizes)], EVAL)
    m, _ = category_evaluation([s.label for s in samples], scores, masks, norm)
    return {k: round(m[k], 2) for k in KEYS}


#: the raw maps of the last transductive run (key -> map): the bank rows say how far theirs are from them
LAST_MAPS: dict = {}


def map_change(samples, maps) -> dict:
    """How far ``maps`` are from the transductive run's raw maps of the same images: mean and max
    |difference|, and the mean |difference| over the mean |transductive map| (relative)."""
    if not LAST_MAPS:
        return {}
    d = [np.abs(m - LAST_MAPS[s.key]) for s, m in zip(samples, maps)]
    base = float(np.mean([np.abs(LAST_MAPS[s.key]).mean() for s in samples])) or 1.0
    mean = float(np.mean([x.mean() for x in d]))
    return {"mean_abs": round(mean, 6), "max_abs": round(float(max(x.max() for x in d)), 6),
            "relative": round(mean / base, 4)}


def transductive(method, ds, cat, samples) -> tuple[dict, float]:
    t = time.perf_counter()
    rgbs = [read_rgb(s.image_path) for s in samples]
    bank = method.bank_from_features([method.reference_features(im) for im in rgbs])
    maps = [method.predict(im, cat, bank=bank, index=i).anomaly_map for i, im in enumerate(rgbs)]
    dt = (time.perf_counter() - t) / len(samples)
    LAST_MAPS.clear()
    LAST_MAPS.update({s.key: np.asarray(m, dtype=np.float32) for s, m in zip(samples, maps)})
    return metrics(ds, samples, maps, [im.shape[:2] for im in rgbs]), dt


def with_bank(method, ds, cat, samples, refs, tmp: Path, **build) -> tuple[dict, float, dict]:
    folder = tmp / f"bank{len(list(tmp.iterdir()))}"
    t = time.perf_counter()
    bank = build_bank(method, cat, refs, folder, **build)
    tb = time.perf_counter() - t
    maps, sizes = [], []
    t = time.perf_counter()
    for s in samples:
        rgb = read_rgb(s.image_path)
        maps.append(bank.predict(method, rgb, cat, path=s.image_path).anomaly_map)
        sizes.append(rgb.shape[:2])
    dt = (time.perf_counter() - t) / len(samples)
    sc = bank.manifest.scoring
    info = {"references": len(bank), "positions_kept": sc.positions_kept, "positions_total": sc.positions_total,
            "build_seconds": round(tb, 2), "query_seconds": round(dt, 4),
            "map_change_vs_transductive": map_change(samples, maps)}
    return metrics(ds, samples, maps, sizes), dt, info


def with_rule(method, ds, cat, samples, refs) -> dict:
    """The references as lite's own bank (its transductive rule: per_image, <= 32 others), queries outside it."""
    bank = method.bank_from_features([method.reference_features(read_rgb(p)) for p in refs])
    maps, sizes = [], []
    for s in samples:
        rgb = read_rgb(s.image_path)
        maps.append(method.predict(rgb, cat, bank=bank, index=None).anomaly_map)
        sizes.append(rgb.shape[:2])
    return metrics(ds, samples, maps, sizes)


def summarise(runs: list[dict]) -> dict:
    return {k: {"mean": round(float(np.mean([r[k] for r in runs])), 2), "std": round(float(np.std([r[k] for r in runs])), 2)}
            for k in KEYS}


def augmented_refs(paths, tmp: Path, n: int = 200) -> list[Path]:
    from saa.image_io import atomic_save_png

    out = []
    for t in range(8):
        for p in paths:
            im = read_rgb(p)
            if t & 4:
                im = im[:, ::-1]
            im = np.ascontiguousarray(np.rot90(im, t & 3))
            q = tmp / f"aug{t}_{p.stem}.png"
            atomic_save_png(q, im)
            out.append(q)
            if len(out) == n:
                return out
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bottle,mtd")
    ap.add_argument("--augmented", action="store_true", help="also bottle against 200 flipped / turned references")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--positions", default=f"{DEFAULT_MAX_POSITIONS},0",
                    help="max_positions of the banks of all references (0 = every position; default: the default, 0)")
    ap.add_argument("--method", choices=("lite", "improved-tiny"), default="lite",
                    help="lite (default), or the improved preset on saa.testing's tiny random models (machinery only)")
    ap.add_argument("--test-images", type=int, default=0,
                    help="bottle: only this many evenly spaced test images (default 0: all 31)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    tiny = args.method == "improved-tiny"
    keep = tempfile.TemporaryDirectory(prefix="saa_fewshot_models_")
    method = build_method(args.method, Path(keep.name))
    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                             "torch_threads": torch.get_num_threads()},
                 "method": method.label, "tiny_random_models": tiny, "eval_size": EVAL, "rows": []}
    rows = res["rows"]

    def row(set_name, what, m, extra=None):
        rows.append({"set": set_name, "what": what, "metrics": m, **(extra or {})})
        shown = "  ".join(f"{k} {m[k]['mean']:6.2f} +- {m[k]['std']:4.2f}" if isinstance(m[k], dict) else
                          f"{k} {m[k]:6.2f}" for k in KEYS)
        print(f"{set_name:7s} {what:44s} {shown}", flush=True)

    with tempfile.TemporaryDirectory(prefix="saa_fewshot_") as tmpname:
        tmp = Path(tmpname)
        if "bottle" in args.sets.split(","):
            ds = build_dataset("mvtec", BOTTLE)
            test, train = evenly(ds.samples("bottle"), args.test_images), ds.train_samples("bottle")
            res["bottle_test_images"] = [s.key for s in test]
            m, dt = transductive(method, ds, "bottle", test)
            row("bottle", f"transductive {args.method} ({len(test)} test images)", m,
                {"seconds_per_image": round(dt, 3)})
            for k in (1, 5, 10):
                runs, infos = [], []
                for run in (0, 1, 2):
                    sel = select_k_shot(train, SEEDS, k, run, "bottle")
                    mm, _, info = with_bank(method, ds, "bottle", test, [s.image_path for s in sel.samples], tmp)
                    runs.append(mm)
                    infos.append(dict(info, run=run, ids=list(sel.ids), metrics=mm))
                row("bottle", f"bank k={k} (seed runs 0-2)", summarise(runs), {"runs": infos})
                if k > 1 and not tiny:  # the same references with lite's transductive rule (per_image, <= 32 others)
                    runs = []
                    for run in (0, 1, 2):
                        sel = select_k_shot(train, SEEDS, k, run, "bottle")
                        runs.append(with_rule(method, ds, "bottle", test, [s.image_path for s in sel.samples]))
                    row("bottle", f"k={k}, lite's per_image rule instead", summarise(runs))
            sizes = [int(v) for v in args.positions.split(",")] if not tiny else []
            groups = [("all 29 train", [s.image_path for s in train])] if not tiny else []
            if args.augmented and not tiny:
                groups.append(("200 augmented", augmented_refs([s.image_path for s in train], tmp)))
            for name, refs in groups:
                for mp in sizes:
                    what = "every position" if mp == 0 else f"coreset {mp}" + (" (default)" if mp == DEFAULT_MAX_POSITIONS else "")
                    mm, _, info = with_bank(method, ds, "bottle", test, refs, tmp, max_positions=mp)
                    row("bottle", f"bank {name}, {what}", mm, info)
        if "mtd" in args.sets.split(",") and not tiny:
            ds = build_dataset("mtd", MTD)
            allx = ds.samples("mtd")
            free = [s for s in allx if s.label == 0]
            used = {s.image_path for r in range(3) for s in free[r::10][:10]}
            test = [s for s in allx if s.image_path not in used]
            m, dt = transductive(method, ds, "mtd", test)
            row("mtd", f"transductive lite ({len(test)} images)", m, {"seconds_per_image": round(dt, 3)})
            runs, infos = [], []
            for r in range(3):
                refs = [s.image_path for s in free[r::10][:10]]
                mm, _, info = with_bank(method, ds, "mtd", test, refs, tmp)
                runs.append(mm)
                infos.append(dict(info, run=r, references=[p.name for p in refs], metrics=mm))
            row("mtd", "bank 10 MT_Free (runs 0-2)", summarise(runs), {"runs": infos})
    keep.cleanup()
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
