"""``saa predict``: anomaly maps for a few images of one category."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import add_config_args, overrides_of

log = logging.getLogger("saa.predict")


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="anomaly maps for image files",
        description="Run the pipeline on image files of one category and write, per image, "
                    "<stem>.npy (map at out_size, float32), <stem>_saliency.npy (saliency at the image size), "
                    "<stem>.json (every candidate region and why it was kept or dropped), <stem>_overlay.png and "
                    "<stem>_panels.png (the --panels side by side). With cross-image saliency (--preset improved) "
                    "the images given are each other's references: give several images of the category.")
    add_config_args(p)
    p.add_argument("--category", required=True, help="category key of the config (e.g. bottle)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--panels", default="image,anomaly_map,saliency,boxes", metavar="LIST",
                   help="panels of <stem>_panels.png, comma-separated: image, anomaly_map, saliency, boxes "
                        "(kept regions green, dropped grey/red) or all; 'none' writes no panel picture")
    p.add_argument("images", nargs="+", metavar="IMG", help="image files")
    p.add_argument("--method", choices=["full", "lite"], default="full",
                   help="full: SAA+; lite: no foundation models — the images given are scored against each "
                        "other with EfficientNet-Lite0 features (give several images of one category)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_config
    from ..errors import SaaError
    from ..pipeline import SAAPipeline
    from ..visualize import parse_panels

    panels = None
    if args.panels.strip().lower() != "none":
        try:
            panels = parse_panels(args.panels)
        except ValueError as e:
            raise SaaError(f"--panels: {e}") from None
    cfg = load_config(args.config, overrides_of(args))
    cfg.category(args.category)  # fail early on an unknown category
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.method == "lite":
        return _run_lite(args, cfg, out)
    pipe = SAAPipeline(cfg).load_models()
    stems: set[str] = set()
    failed = []
    with tempfile.TemporaryDirectory(prefix="saa_cross_") as tmp:
        paths, bank = list(args.images), None
        if pipe.cross_image:  # pass 1: the images given are each other's "others"
            paths, bank = _cross_image_pass(pipe, args.images, Path(tmp), failed)
        for i, path in enumerate(paths):
            rgb = _read_or_skip(path, failed)
            if rgb is None:
                continue
            stem = _unique_stem(path, stems)
            pred = pipe.predict(rgb, args.category, others=bank, index=i if bank is not None else None)
            _write_prediction(out, stem, path, rgb, pred, panels)
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(map(str, failed))}")
        return 1
    return 0


def _read_or_skip(path, failed: list):
    """The RGB image, or None after logging why it cannot be read (``path`` then joins ``failed``)."""
    from ..errors import ImageReadError
    from ..image_io import read_rgb

    try:
        return read_rgb(path)
    except ImageReadError as e:
        log.error("%s (skipped)", e)
        failed.append(path)
        return None


def _unique_stem(path, stems: set) -> str:
    """The file stem of ``path``, made unique among ``stems`` (two inputs with the same stem both
    keep their results), and added to them."""
    stem = Path(path).stem
    if stem in stems:
        stem = f"{stem}_{len(stems)}"
    stems.add(stem)
    return stem


def _cross_image_pass(pipe, images, folder: Path, failed: list):
    """Pass 1 of cross-image saliency over the readable ``images``: (their paths, the bank; None
    with fewer than two images: the pipeline then notes that it used single-image saliency)."""
    from ..cross_bank import CrossImageBank, FeatureStore

    store, ok = FeatureStore(folder), []
    for path in images:
        rgb = _read_or_skip(path, failed)
        if rgb is None:
            continue
        store.put(str(len(ok)), pipe.saliency_features(rgb))
        ok.append(path)
    if len(ok) < 2:
        return ok, None
    return ok, CrossImageBank.from_store(store, [str(i) for i in range(len(ok))], **pipe.cross_image_settings())


def _write_prediction(out: Path, stem: str, path, rgb, pred, panels) -> None:
    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text
    from ..visualize import prediction_overlay, prediction_panels

    atomic_save_npy(out / f"{stem}.npy", pred.anomaly_map.astype(np.float32))
    atomic_save_npy(out / f"{stem}_saliency.npy", pred.saliency.astype(np.float32))
    info = pred.regions_dict()
    info["image"] = str(path)
    atomic_write_text(out / f"{stem}.json", json.dumps(info, indent=1))
    atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred))
    if panels:
        atomic_save_png(out / f"{stem}_panels.png", prediction_panels(rgb, pred, panels=panels))
    print(f"{path}: score {pred.score:.4f}, {len(pred.kept)} region(s) kept of "
          f"{len(pred.defects)} candidates -> {out / stem}.npy")


def _run_lite(args, cfg, out: Path) -> int:
    """Lite mode: all given images scored together (each against the others), no DINO/SAM."""
    import cv2

    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text
    from ..lite import LitePipeline
    from ..models.checkpoints import resolve_device
    from ..visualize import heat_overlay

    images, stems, failed = [], set(), []
    for path in args.images:
        rgb = _read_or_skip(path, failed)
        if rgb is not None:
            images.append((path, rgb))
    lite = LitePipeline(device=str(resolve_device(str(cfg.models.device))))
    maps = lite.predict_category([im for _, im in images]) if len(images) > 1 else \
        [lite.predict(im) for _, im in images]
    for (path, rgb), m in zip(images, maps):
        stem = _unique_stem(path, stems)
        size = int(cfg.out_size)
        atomic_save_npy(out / f"{stem}.npy", cv2.resize(m, (size, size)).astype(np.float32))
        atomic_save_npy(out / f"{stem}_saliency.npy", m.astype(np.float32))
        atomic_write_text(out / f"{stem}.json", json.dumps(
            {"method": "lite", "image": str(path), "category": args.category, "score": float(m.max()),
             "note": "lite method (our addition): cross-image EfficientNet-Lite0 saliency, no Grounding DINO/SAM"},
            indent=1))
        atomic_save_png(out / f"{stem}_overlay.png", heat_overlay(rgb, m, vmax=float(max(x.max() for x in maps))))
        print(f"{path}: lite score {float(m.max()):.4f} -> {out / stem}.npy")
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(map(str, failed))}")
        return 1
    return 0
