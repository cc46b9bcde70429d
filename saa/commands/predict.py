"""``saa predict``: anomaly maps for a few images of one category, with any registered method."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import add_config_args, add_method_arg, overrides_of

log = logging.getLogger("saa.predict")

DEFAULT_PANELS = ("image", "anomaly_map", "saliency", "boxes")


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="anomaly maps for image files",
        description="Run a method on image files of one category and write, per image, "
                    "<stem>.npy (map at out_size, float32), <stem>_saliency.npy (saliency at the image size, "
                    "when the method has one), <stem>.json (the method, the score, every candidate region and why "
                    "it was kept or dropped), <stem>_overlay.png and <stem>_panels.png (the --panels side by side). "
                    "A method that compares images (--method lite, --preset improved) scores the images given "
                    "against each other: give several images of the category.")
    add_config_args(p)
    p.add_argument("--category", required=True, help="category key of the config (e.g. bottle)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--panels", default=None, metavar="LIST",
                   help="panels of <stem>_panels.png, comma-separated: image, anomaly_map, saliency, boxes "
                        "(kept regions green, dropped grey/red) or all (every panel the method can draw); "
                        "'none' writes no panel picture (default: image,anomaly_map,saliency,boxes, or what the "
                        "method has of them)")
    p.add_argument("images", nargs="+", metavar="IMG", help="image files")
    add_method_arg(p)
    p.set_defaults(func=run)


def choose_panels(spec, method) -> tuple[str, ...] | None:
    """The panels to draw for ``method`` (None: no panel picture); a :class:`SaaError` for a panel
    the method cannot draw."""
    from ..errors import SaaError
    from ..visualize import parse_panels

    if spec is None:
        return tuple(k for k in DEFAULT_PANELS if k in method.panels)
    if spec.strip().lower() == "none":
        return None
    if spec.strip().lower() == "all":
        return tuple(k for k in method.panels if k != "ground_truth")
    try:
        panels = parse_panels(spec)
    except ValueError as e:
        raise SaaError(f"--panels: {e}") from None
    bad = [k for k in panels if k not in method.panels or k == "ground_truth"]
    if bad:
        raise SaaError(f"--panels: method {method.name} cannot draw {', '.join(bad)} "
                       f"(it has {', '.join(k for k in method.panels if k != 'ground_truth')})")
    return panels


def run(args) -> int:
    from ..config import load_config
    from ..run import make_method
    from ..samples import require_model_files

    cfg = load_config(args.config, overrides_of(args))
    cfg.category(args.category)  # fail early on an unknown category
    method = make_method(cfg)
    require_model_files(method)  # every missing model file at once, before any model loads
    panels = choose_panels(args.panels, method)
    method.load()  # a missing model file is reported before any image is read
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list = []
    stems: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="saa_refs_") as tmp:
        paths, bank = list(args.images), None
        if method.needs_references:  # pass 1: the images given are each other's references
            paths, bank = reference_pass(method, args.images, Path(tmp), failed)
        for i, path in enumerate(paths):
            rgb = _read_or_skip(path, failed)
            if rgb is None:
                continue
            stem = unique_stem(path, stems)
            pred = method.predict(rgb, args.category, bank=bank, index=i if bank is not None else None)
            write_prediction(out, stem, path, rgb, pred, panels)
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
        if path not in failed:
            failed.append(path)
        return None


def unique_stem(path, stems: set) -> str:
    """The file stem of ``path``, made unique among ``stems`` (two inputs with the same stem both
    keep their results), and added to them."""
    from ..image_io import safe_file_name

    base = Path(path).stem
    stem, n = safe_file_name(base, reserve=16), 1  # room for "_saliency.npy" and a counter
    while stem in stems:
        stem = safe_file_name(f"{base}_{n}", reserve=16)
        n += 1
    stems.add(stem)
    return stem


def reference_pass(method, images, folder: Path, failed: list):
    """Pass 1 over the readable ``images``: (their paths, the bank of their features; None with
    fewer than two images: the method then notes that it had nothing to compare with)."""
    from ..saliency.bank import FeatureStore

    store, ok = FeatureStore(folder), []
    for path in images:
        rgb = _read_or_skip(path, failed)
        if rgb is None:
            continue
        store.put(str(len(ok)), method.reference_features(rgb))
        ok.append(path)
    if len(ok) < 2:
        return ok, None
    return ok, method.bank_from_store(store, [str(i) for i in range(len(ok))])


def write_prediction(out: Path, stem: str, path, rgb, pred, panels) -> None:
    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text
    from ..visualize import prediction_overlay, prediction_panels

    atomic_save_npy(out / f"{stem}.npy", pred.anomaly_map.astype(np.float32))
    if pred.saliency is not None:
        atomic_save_npy(out / f"{stem}_saliency.npy", pred.saliency.astype(np.float32))
    info = pred.regions_dict()
    info["image"] = str(path)
    atomic_write_text(out / f"{stem}.json", json.dumps(info, indent=1))
    atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred))
    if panels:
        atomic_save_png(out / f"{stem}_panels.png", prediction_panels(rgb, pred, panels=panels))
    print(f"{path}: {pred.summary()} -> {out / stem}.npy")
    for n in pred.notes:
        print(f"  note: {n}")
