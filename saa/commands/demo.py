"""``saa demo``: the method on a few bundled real images, overlays + a small HTML report.

Runs the full SAA+ pipeline when the model files of the config exist, otherwise the lite method
(:mod:`saa.lite`: saliency-only maps from the packaged EfficientNet-Lite0, no detector, no SAM), and
says so in the console and in the report, with the missing files and ``bash install.sh``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from . import overrides_of

log = logging.getLogger("saa.demo")

REPO = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO / "assets" / "samples"
DEFAULT_CONFIG = "configs/mvtec.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def sample_images(folder: Path = SAMPLES_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def category_of_sample(path: Path, categories: Sequence[str]) -> Optional[str]:
    """The config category named by the file-name prefix (``bottle_...`` -> ``bottle``), if any."""
    stem = Path(path).stem.lower()
    for c in sorted(categories, key=len, reverse=True):
        if stem == c.lower() or stem.startswith(c.lower() + "_"):
            return c
    return None


def default_config_path() -> Path:
    p = Path(DEFAULT_CONFIG)
    return p if p.is_file() else REPO / DEFAULT_CONFIG


def missing_model_files(cfg) -> list[str]:
    """Model files of the full pipeline that the config names but that do not exist."""
    m = cfg.models
    wanted = [m.grounding.checkpoint, m.grounding.text_encoder, m.sam.checkpoint]
    if not str(m.saliency.checkpoint).startswith("package:"):
        wanted.append(m.saliency.checkpoint)
    return [str(cfg.resolve_path(p)) for p in wanted if not cfg.resolve_path(p).exists()]


def choose_method(method: str, missing: Sequence[str]) -> str:
    from ..errors import SaaError

    if method == "auto":
        return "lite" if missing else "full"
    if method == "full" and missing:
        raise SaaError("the full method needs model files that are missing: " + ", ".join(missing)
                       + ". Get them with `bash install.sh`, or use --method lite")
    return method


def lite_message(missing: Sequence[str]) -> str:
    return ("LITE METHOD: saliency-only anomaly maps from the packaged EfficientNet-Lite0 (no Grounding DINO, "
            "no SAM, no regions), because these model files are missing: " + ", ".join(missing)
            + ". Run `bash install.sh` to download them for the full SAA+ method.")


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
    from ..visualize import compose, heat_overlay, panel_images, prediction_overlay, prediction_panels

    cfg_path = Path(args.config) if args.config else default_config_path()
    cfg = load_config(cfg_path, overrides_of(args))
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

    notes = []
    if method == "lite":
        notes.append(lite_message(missing) if missing else
                     "LITE METHOD (chosen with --method lite): saliency-only anomaly maps, no regions.")
        print(notes[-1])
    else:
        print(f"full SAA+ method, config {cfg_path}")

    sections = []
    pipe = lite = None
    for cat, paths in groups.items():
        rgbs = [read_rgb(p) for p in paths]
        if method == "full":
            from ..pipeline import SAAPipeline

            pipe = pipe or SAAPipeline(cfg).load_models()
            preds = [pipe.predict(rgb, cat) for rgb in rgbs]
            maps = [pr.anomaly_map_full for pr in preds]
        else:
            from ..lite import LitePipeline

            lite = lite or LitePipeline(device=cfg.models.device if cfg.models.device != "auto" else "cpu")
            maps = lite.predict_category(rgbs) if len(rgbs) > 1 else [lite.predict(rgbs[0])]
            preds = [None] * len(rgbs)
        for p, rgb, amap, pred in zip(paths, rgbs, maps, preds):
            stem = p.stem
            if pred is not None:
                panels = prediction_panels(rgb, pred)
                overlay = prediction_overlay(rgb, pred)
                summary = (f"score {pred.score:.3f}; {len(pred.kept)} region(s) kept of {len(pred.defects)} "
                           "candidates (green kept, grey/red dropped)")
            else:
                panels = compose(panel_images(rgb, anomaly_map=amap, panels=("image", "anomaly_map")))
                overlay = heat_overlay(rgb, amap)
                summary = f"lite map, max {float(np.max(amap)):.3f} (saliency only, no regions)"
            atomic_save_npy(out / f"{stem}.npy", np.asarray(amap, dtype=np.float32))
            atomic_save_png(out / f"{stem}_overlay.png", overlay)
            atomic_save_png(out / f"{stem}_panels.png", panels)
            print(f"{p} [{cat}]: {summary} -> {out / stem}_panels.png")
            sections.append(f"<h3>{esc(p.name)} — {esc(cat)}</h3><p class=\"small\">{esc(summary)}</p>"
                            + img_tag(panels, alt=f"panels of {p.name}"))
    body = [f"<p>Method: <b>{'full SAA+' if method == 'full' else 'lite (saliency only)'}</b>; config "
            f"<code>{esc(cfg_path)}</code>; images from <code>{esc(images[0].parent)}</code> "
            "(licences in its SOURCES.md).</p>"]
    body += [f"<p class=\"note\">{esc(n)}</p>" for n in notes]
    body += sections
    body.append("<h2>Versions</h2>" + versions_html())
    title = "saa demo — " + ("full SAA+ method" if method == "full" else "LITE method")
    atomic_write_text(out / "report.html", html_page(title, body))
    print(f"report: {out / 'report.html'} (open it in a browser)")
    return 0
