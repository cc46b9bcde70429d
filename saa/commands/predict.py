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
        "predict", help="anomaly maps (and OK / DEFECT verdicts) for image files or folders",
        description="Run a method on images of one category and write, per image, "
                    "<stem>.npy (map at out_size, float32, raw), <stem>_saliency.npy (saliency at the image size, "
                    "when the method has one), <stem>.json (the method, the score, the verdict, every candidate "
                    "region and why it was kept or dropped), <stem>_overlay.png and <stem>_panels.png (the --panels "
                    "side by side, every image of the call on ONE colour scale, with a colour bar and the score), and "
                    "predictions.csv (one row per image). With --thresholds-from RUN_DIR (a labelled `saa run` of "
                    "the category) the maps are put on that run's normalised scale and each image gets OK / DEFECT "
                    "and its predicted defect outline. A method that compares images (--method lite, --preset "
                    "improved) scores the images given against each other: give several images of the category.")
    add_config_args(p)
    p.add_argument("--category", required=True, help="category key of the config (e.g. bottle)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--panels", default=None, metavar="LIST",
                   help="panels of <stem>_panels.png, comma-separated: image, anomaly_map, saliency, boxes "
                        "(kept regions green, dropped grey/red) or all (every panel the method can draw); "
                        "'none' writes no panel picture (default: image,anomaly_map,saliency,boxes, or what the "
                        "method has of them)")
    p.add_argument("--thresholds-from", dest="thresholds_from", default=None, metavar="RUN_DIR",
                   help="take the image and pixel thresholds (and the normalisation) of this category from "
                        "RUN_DIR/metrics.json, written by a labelled `saa run` with the same method and settings; "
                        "prints OK / DEFECT per image")
    p.add_argument("--threshold", type=float, default=None, metavar="X",
                   help="image threshold by hand: DEFECT when the score >= X. With --thresholds-from it replaces "
                        "the run's image threshold (normalised scale of the run); alone it applies to the raw score "
                        "the method gives (the 'raw score' printed)")
    p.add_argument("--accept-weak-decision", dest="accept_weak_decision", action="store_true",
                   help="use the thresholds of --thresholds-from even when the run marked its decision weak (all "
                        "one verdict, or image AUROC no better than chance or under 60 on its own images)")
    p.add_argument("--save-masks", dest="save_masks", action="store_true",
                   help="also write <stem>_mask.png, the predicted defect pixels (0/255, image size); needs the "
                        "pixel threshold of --thresholds-from")
    p.add_argument("images", nargs="+", metavar="IMG",
                   help="image files, folders (their images, sorted by name, not recursive) or glob patterns "
                        "(quote them, e.g. 'parts/*.png'; ** recurses)")
    add_method_arg(p)
    p.set_defaults(func=run)


def expand_images(items) -> list[str]:
    """Image files from the command line: a file as given; a folder: its image files (suffixes of
    :data:`saa.samples.IMAGE_SUFFIXES`), sorted by name, not recursive; a pattern with ``*``, ``?``
    or ``[``: the image files it matches, sorted (``**`` recurses). A folder or pattern with no image,
    or a path that does not exist, is a one-line :class:`SaaError`. Duplicates are kept once."""
    import glob

    from ..errors import SaaError
    from ..samples import IMAGE_SUFFIXES

    def is_image(p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES

    out: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted((str(p) for p in path.iterdir() if is_image(p)), key=lambda q: Path(q).name)
            if not found:
                raise SaaError(f"{path}: folder has no image file ({', '.join(IMAGE_SUFFIXES)}; sub-folders are "
                               "not searched: pass 'DIR/**/*.png' for those)")
        elif path.exists() or not glob.has_magic(text):
            found = [text]  # a file (or a missing one: its read error names it)
        else:
            found = sorted(p for p in glob.glob(text, recursive=True) if is_image(Path(p)))
            if not found:
                raise SaaError(f"{text}: no image file matches this pattern")
        out += [f for f in found if f not in out]
    return out


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


def _decision(args, cfg, method):
    """The thresholds of this call (None: no verdict), checked against the method and its settings."""
    from ..verdict import Decision, load_decision

    decision = None
    if args.thresholds_from:
        decision = load_decision(args.thresholds_from, args.category,
                                 accept_weak=args.accept_weak_decision or args.threshold is not None)
        decision.check_method(method.name, method.fingerprint(args.category, None), int(cfg.out_size))
    if args.threshold is not None:
        if not np.isfinite(args.threshold):
            from ..errors import SaaError

            raise SaaError(f"--threshold must be a finite number, got {args.threshold}")
        decision = (decision.with_image_threshold(args.threshold, f"--threshold {args.threshold:g} ({decision.source})")
                    if decision is not None else Decision(float(args.threshold), source=f"--threshold {args.threshold:g}"))
    if args.save_masks and (decision is None or decision.pixel_threshold is None):
        from ..errors import SaaError

        raise SaaError("--save-masks needs a pixel threshold: pass --thresholds-from RUN_DIR (a labelled run of the "
                       "category with ground-truth masks)")
    if decision is not None and decision.image_threshold is None:
        from ..errors import SaaError

        raise SaaError(f"{decision.source}: no image threshold recorded (the category has no defective image); "
                       "pass --threshold X")
    return decision


def run(args) -> int:
    from ..config import load_config
    from ..run import make_method
    from ..samples import require_model_files

    cfg = load_config(args.config, overrides_of(args))
    cfg.category(args.category)  # fail early on an unknown category
    method = make_method(cfg)
    decision = _decision(args, cfg, method)  # a run of another method or settings: say so first
    require_model_files(method)  # every missing model file at once, before any model loads
    panels = choose_panels(args.panels, method)
    images = expand_images(args.images)
    method.load()  # a missing model file is reported before any image is read
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed: list = []
    stems: set[str] = set()
    done: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="saa_refs_") as tmp:
        paths, bank = list(images), None
        if method.needs_references:  # pass 1: the images given are each other's references
            paths, bank = reference_pass(method, images, Path(tmp), failed)
        for i, path in enumerate(paths):
            rgb = _read_or_skip(path, failed)
            if rgb is None:
                continue
            stem = unique_stem(path, stems)
            pred = method.predict(rgb, args.category, bank=bank, index=i if bank is not None else None)
            write_prediction(out, stem, path, rgb, pred, None)
            amap = np.asarray(pred.anomaly_map)
            done.append({"path": path, "stem": stem, "pred": _light(pred), "hw": rgb.shape[:2],
                         "range": (float(amap.min()), float(amap.max())) if amap.size else (0.0, 0.0)})
    if done:
        if decision is not None and decision.normalisation is not None and method.needs_references:
            print(f"note: method {method.name} scores each image against the other images given ({len(done)} here); "
                  "the run's thresholds were set on the run's own image set, so the verdicts hold when these "
                  "images are scored among a set like it (many images of the category, mostly normal)")
        rows = decide_and_draw(out, done, decision, panels, args.save_masks)
        write_predictions_csv(out / "predictions.csv", rows)
        print(f"predictions: {out / 'predictions.csv'}")
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(map(str, failed))}")
        return 1
    return 0


def _light(pred):
    """``pred`` without its image-size arrays (they are on disk); keeps what the pictures need."""
    import dataclasses

    return dataclasses.replace(pred, anomaly_map_full=np.zeros((0, 0), np.float32), saliency=None, object_masks=None,
                               kept_masks=None, trace={})


def decide_and_draw(out: Path, done: list[dict], decision, panels, save_masks: bool = False) -> list[dict]:
    """Scores on one scale, verdicts, pictures and masks for the images of one call; one printed
    line per image. Returns the rows of ``predictions.csv``.

    With a run's normalisation (``--thresholds-from``) the maps are put on the run's scale and the
    colour scale is that scale's [0, 1]; otherwise the colour scale is the joint [min, max] of the
    raw maps of the call and the score is the method's raw score."""
    from ..image_io import atomic_save_png, atomic_write_text, read_rgb
    from ..verdict import mask_png, predicted_mask
    from ..visualize import MapScale, prediction_overlay, prediction_panels

    norm = decision.normalisation if decision is not None else None
    if norm is not None:
        scale = MapScale(0.0, 1.0, "normalised")
    else:  # the joint range of the call's raw maps (each map is read again below, one at a time)
        scale = MapScale(min(d["range"][0] for d in done), max(d["range"][1] for d in done), "raw")
    rows = []
    for d in done:
        stem, pred, path = d["stem"], d["pred"], d["path"]
        raw_score = float(pred.score)
        shown, mask = np.load(out / f"{stem}.npy"), None
        if norm is not None:
            nm, sc = norm.apply([shown])
            shown, score = nm[0], float(sc[0])
            mask = predicted_mask(shown, decision.pixel_threshold, d["hw"])
        else:
            score = raw_score
        verdict = decision.verdict(score) if decision is not None else None
        threshold = decision.image_threshold if decision is not None else None
        info_path = out / f"{stem}.json"
        info = json.loads(info_path.read_text(encoding="utf-8"))
        info.update(raw_score=raw_score, score=score, scale=scale.label, verdict=verdict, image_threshold=threshold,
                    pixel_threshold=decision.pixel_threshold if decision is not None else None,
                    thresholds_from=decision.source if decision is not None else None)
        atomic_write_text(info_path, json.dumps(info, indent=1))
        if save_masks and mask is not None:
            atomic_save_png(out / f"{stem}_mask.png", mask_png(mask))
        rgb = read_rgb(path)
        sal_path = out / f"{stem}_saliency.npy"
        sal = np.load(sal_path) if sal_path.is_file() else None
        full = _full_map(shown, d["hw"])
        atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred, scale=scale, anomaly_map=full,
                                                                        defect_mask=mask))
        if panels:
            atomic_save_png(out / f"{stem}_panels.png", prediction_panels(
                rgb, pred, panels=panels, scale=scale, anomaly_map=full, score=score, verdict=verdict,
                threshold=threshold, defect_mask=mask, saliency=sal,
                pixel_threshold=decision.pixel_threshold if decision is not None else None))
        shown_thr = "" if threshold is None else (f" {'>=' if verdict == 'DEFECT' else '<'} threshold {threshold:.4g}")
        label = verdict or "-"
        print(f"{label:<7s} {scale.label} score {score:.4f}{shown_thr}  {path}")
        rows.append({"image": str(path), "stem": stem, "raw_score": repr(raw_score), "score": repr(score),
                     "scale": scale.label, "threshold": "" if threshold is None else repr(float(threshold)),
                     "verdict": verdict or ""})
    return rows


def _full_map(amap: np.ndarray, hw) -> np.ndarray:
    import cv2

    h, w = int(hw[0]), int(hw[1])
    a = np.asarray(amap, dtype=np.float32)
    return a if a.shape == (h, w) else cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)


def write_predictions_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from ..image_io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, ["image", "stem", "raw_score", "score", "scale", "threshold", "verdict"],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


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
    """The per-image files of one prediction: ``.npy`` maps and the ``.json``; with ``panels``
    also its pictures on its own scale (``saa predict`` draws them later, on the call's scale)."""
    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text
    from ..visualize import prediction_overlay, prediction_panels

    atomic_save_npy(out / f"{stem}.npy", pred.anomaly_map.astype(np.float32))
    if pred.saliency is not None:
        atomic_save_npy(out / f"{stem}_saliency.npy", pred.saliency.astype(np.float32))
    info = pred.regions_dict()
    info["image"] = str(path)
    atomic_write_text(out / f"{stem}.json", json.dumps(info, indent=1))
    if panels:
        atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred))
        atomic_save_png(out / f"{stem}_panels.png", prediction_panels(rgb, pred, panels=panels))
    print(f"{path}: {pred.summary()} -> {out / stem}.npy")
    for n in pred.notes:
        print(f"  note: {n}")
