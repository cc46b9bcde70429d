"""``saa demo``: the method on a few bundled real images, overlays + a small HTML report.

Runs the full SAA+ pipeline when the model files of the config exist, otherwise the lite method
(:mod:`saa.lite`: saliency-only maps from the packaged EfficientNet-Lite0, no detector, no SAM), and
says so in the console and in the report, with the missing files and ``bash install.sh``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..samples import (DEFAULT_CONFIG, REPO, SAMPLES_DIR, category_of_sample, choose_method,  # noqa: F401
                       default_config_path, lite_message, missing_model_files, sample_images)
from . import overrides_of

log = logging.getLogger("saa.demo")


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run on the bundled sample images, write overlays + an HTML report",
        description="Segment the real sample images in assets/samples/ (or --images) and write, per image, "
                    "<stem>_panels.png, <stem>_overlay.png and <stem>.npy, plus report.html, to --out. "
                    "Uses the full SAA+ pipeline when the config's model files exist; otherwise the lite "
                    "method (saliency only), and says so.")
    p.add_argument("--config", default=None, metavar="YAML", help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--device", default=None, help="shortcut for --set models.device=DEVICE")
    p.add_argument("--method", choices=("auto", "full", "lite"), default="auto",
                   help="full SAA+, lite (saliency only, no big model files) or auto (full if the files exist)")
    p.add_argument("--out", default="saa_demo", metavar="DIR", help="output folder (default ./saa_demo)")
    p.add_argument("--images", nargs="+", default=None, metavar="IMG",
                   help="other images (named <category>_*.ext, else --category)")
    p.add_argument("--category", default=None, help="category for images whose name does not start with one")
    p.add_argument("--thresholds-from", dest="thresholds_from", default=None, metavar="RUN_DIR",
                   help="verdicts (OK / DEFECT) and defect outlines from the thresholds a labelled `saa run` of the "
                        "same method recorded for each category (see saa predict --thresholds-from)")
    p.set_defaults(func=run)


def run(args) -> int:
    import cv2

    from ..config import load_config
    from ..errors import SaaError
    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text, read_rgb
    from ..report import esc, html_page, img_tag, versions_html
    from ..run import make_method
    from ..verdict import load_decision, predicted_mask
    from ..visualize import MapScale, prediction_overlay, prediction_panels

    cfg_path = Path(args.config) if args.config else default_config_path()
    cfg = load_config(cfg_path, overrides_of(args, with_method=False))
    missing = missing_model_files(cfg)
    method = choose_method(args.method, missing)
    images = [Path(p) for p in args.images] if args.images else sample_images()
    if not images:
        raise SaaError(f"no sample image found in {SAMPLES_DIR}")
    groups: dict[str, list[Path]] = {}
    for p in images:
        cat = category_of_sample(p, list(cfg.categories)) or args.category
        if cat is None:
            raise SaaError(f"{p}: cannot tell the category from the file name; name it <category>_... "
                           f"or pass --category (categories: {', '.join(cfg.categories)})")
        cfg.category(cat)
        groups.setdefault(cat, []).append(p)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meth = make_method(cfg.model_copy(update={"method": method}))

    notes = []
    if method == "lite":
        notes.append(lite_message(missing) if missing else
                     "LITE METHOD (chosen with --method lite): saliency-only anomaly maps, no regions.")
        print(notes[-1])
    else:
        print(f"{meth.label}, config {cfg_path}")

    decisions = {}
    if args.thresholds_from:  # checked before any model loads
        for cat in groups:
            d = load_decision(args.thresholds_from, cat, missing_ok=True)
            if d is None:
                notes.append(f"{cat}: no verdict (the run in {args.thresholds_from} has no category {cat})")
                print(notes[-1])
                continue
            d.check_method(meth.name, meth.fingerprint(cat, None), int(cfg.out_size))
            decisions[cat] = d
        if decisions and meth.needs_references:
            notes.append(f"method {meth.name} scores each image against the other images of its category given "
                         "here; the run's thresholds were set on the run's image set, so these verdicts hold only "
                         "for a set like it (see docs/verdicts.md, Limits)")
            print("note: " + notes[-1])
    sections = []
    meth.load()
    for cat, paths in groups.items():
        rgbs = [read_rgb(p) for p in paths]
        bank = None
        if meth.needs_references and len(rgbs) > 1:  # the category's images are each other's references
            bank = meth.bank_from_features([meth.reference_features(rgb) for rgb in rgbs])
        preds = [meth.predict(rgb, cat, bank=bank, index=i if bank is not None else None)
                 for i, rgb in enumerate(rgbs)]
        decision = decisions.get(cat)
        norm = decision.normalisation if decision is not None else None
        if norm is None:  # one colour scale for the category: the joint range of its raw maps
            scale = MapScale.of([pr.anomaly_map_full for pr in preds], "raw")
        else:
            scale = MapScale(0.0, 1.0, "normalised")
        sections.append(f"<h2>{esc(cat)}</h2><p class=\"small\">{len(paths)} image(s) on one colour scale "
                        f"({esc(scale.label)} {scale.vmin:.4g} to {scale.vmax:.4g})"
                        + (f"; thresholds from <code>{esc(decision.source)}</code>" if decision else
                           "; no threshold given (--thresholds-from RUN_DIR), so no verdict") + "</p>")
        for p, rgb, pred in zip(paths, rgbs, preds):
            shown, score, verdict, mask, thr = pred.anomaly_map_full, pred.score, None, None, None
            if decision is not None:
                nm, sc = norm.apply([pred.anomaly_map])
                score, verdict, thr = float(sc[0]), decision.verdict(float(sc[0])), decision.image_threshold
                mask = predicted_mask(nm[0], decision.pixel_threshold, rgb.shape[:2])
                shown = cv2.resize(nm[0], (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
            panels = prediction_panels(rgb, pred, panels=[k for k in ("image", "anomaly_map", "saliency", "boxes")
                                                          if k in meth.panels],
                                       scale=scale, anomaly_map=shown, score=score, verdict=verdict, threshold=thr,
                                       defect_mask=mask,
                                       pixel_threshold=decision.pixel_threshold if decision is not None else None)
            summary = pred.summary() + (" (green kept, grey/red dropped)" if pred.has_regions else "")
            if verdict:
                summary = f"{verdict} ({scale.label} score {score:.4f}, threshold {thr:.4g}); " + summary
            stem = p.stem
            atomic_save_npy(out / f"{stem}.npy", np.asarray(pred.anomaly_map_full, dtype=np.float32))
            atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred, scale=scale, anomaly_map=shown,
                                                                            defect_mask=mask))
            atomic_save_png(out / f"{stem}_panels.png", panels)
            print(f"{p} [{cat}]: {summary} -> {out / stem}_panels.png")
            sections.append(f"<h3>{esc(p.name)} — {esc(cat)}</h3><p class=\"small\">{esc(summary)}</p>"
                            + img_tag(panels, alt=f"panels of {p.name}"))
    body = [f"<p>Method: <b>{esc(meth.label)}</b>; config "
            f"<code>{esc(cfg_path)}</code>; images from <code>{esc(images[0].parent)}</code> "
            "(licences in its SOURCES.md).</p>"]
    body += [f"<p class=\"note\">{esc(n)}</p>" for n in notes]
    body += sections
    body.append("<h2>Versions</h2>" + versions_html())
    title = "saa demo — " + ("full SAA+ method" if method == "saa" else f"{method.upper()} method")
    atomic_write_text(out / "report.html", html_page(title, body))
    print(f"report: {out / 'report.html'} (open it in a browser)")
    return 0
