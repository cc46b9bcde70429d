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
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_config
    from ..errors import SaaError
    from ..image_io import atomic_save_npy, atomic_save_png, atomic_write_text, read_rgb
    from ..report import esc, html_page, img_tag, versions_html
    from ..run import make_method
    from ..visualize import prediction_overlay, prediction_panels

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

    sections = []
    meth.load()
    for cat, paths in groups.items():
        rgbs = [read_rgb(p) for p in paths]
        bank = None
        if meth.needs_references and len(rgbs) > 1:  # the category's images are each other's references
            bank = meth.bank_from_features([meth.reference_features(rgb) for rgb in rgbs])
        for i, (p, rgb) in enumerate(zip(paths, rgbs)):
            pred = meth.predict(rgb, cat, bank=bank, index=i if bank is not None else None)
            panels = prediction_panels(rgb, pred, panels=[k for k in ("image", "anomaly_map", "saliency", "boxes")
                                                          if k in meth.panels])
            summary = pred.summary() + (" (green kept, grey/red dropped)" if pred.has_regions else "")
            stem = p.stem
            atomic_save_npy(out / f"{stem}.npy", np.asarray(pred.anomaly_map_full, dtype=np.float32))
            atomic_save_png(out / f"{stem}_overlay.png", prediction_overlay(rgb, pred))
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
