"""``saa run``: evaluate a config on its dataset (resumable), write metrics tables.

The ``run_*.py`` scripts at the repository root call :func:`main_for` with their config.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import add_method_arg, add_preset_arg, method_override, preset_override

log = logging.getLogger("saa.run")

_DESCRIPTION = (
    "Run a method (SAA+ by default, or --method lite / a registered plug-in) on every test image of a dataset (the config's dataset.kind and dataset.root), then "
    "compute the SPEC metrics per category. Per-image maps are kept under OUT/<category>/maps/, so "
    "an interrupted run continues where it stopped when started again with the same --out. "
    "Writes OUT/metrics.csv, metrics.md, metrics.json and config.yaml (and, for visa_challenge, "
    "the VAND 2023 submission tree under OUT/vand/). One run writes a folder at a time (OUT/run.lock); "
    "a rerun with other settings first removes the old metrics files (OUT/run_state.json records whose "
    "files the folder holds)."
)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every option of ``saa run`` except the config argument."""
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="dataset root folder (default: dataset.root of the config)")
    p.add_argument("--categories", nargs="+", metavar="CAT", default=None,
                   help="only these categories (default: every category present under the root)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto (shortcut for --set models.device=...)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: results/<config file stem>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set out_size=256 (repeatable)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, metavar="B",
                   help="images per batch of the image-level models (detector backbone, SAM encoder, saliency CNN; "
                        "lite's CNN); helps on a GPU, same maps (shortcut for --set models.batch_size=B)")
    add_preset_arg(p)
    add_method_arg(p)
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="recompute every image even if its result file exists")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--save-masks", dest="save_masks", action="store_true",
                   help="also write OUT/<category>/masks/<image>.png: the predicted defect pixels (0/255, image size) "
                        "at the pixel threshold the run records (labelled categories with ground-truth masks)")


def register(sub) -> None:
    p = sub.add_parser("run", help="evaluate a config on its dataset (benchmark run)", description=_DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="config file, e.g. configs/mvtec.yaml")
    add_run_options(p)
    p.set_defaults(func=run)


def default_out_dir(config_path: str | Path) -> Path:
    return Path("results") / Path(config_path).stem


def run(args) -> int:
    from ..config import load_config
    from ..run import evaluate_run

    batch = [] if getattr(args, "batch_size", None) is None else [f"models.batch_size={args.batch_size}"]
    cfg = load_config(args.config, list(args.overrides) + batch + preset_override(args) + method_override(args))
    out = Path(args.out) if args.out else default_out_dir(args.config)
    result = evaluate_run(cfg, out, categories=args.categories, data_root=args.data_root, device=args.device,
                          resume=args.resume, progress=args.progress, save_masks=getattr(args, "save_masks", False))
    if "rank" in result:  # a non-zero rank under torchrun: rank 0 prints the results
        print(f"rank {result['rank']}/{result['world_size']}: computed {result['computed']} images")
        return 0
    totals = result["totals"]
    if "computed_by_all_processes" in totals:  # torchrun: the shards computed, rank 0 evaluated
        done = totals["computed_by_all_processes"]
        print(f"{totals['images']} images ({done} computed by {result['world_size']} processes, "
              f"{totals['images'] - done} reused) in {result['timings']['total_s']:.1f} s")
    else:
        print(f"{totals['images']} images ({totals['computed']} computed, {totals['reused']} reused) "
              f"in {result['timings']['total_s']:.1f} s")
    from ..results import RunFolder

    folder = RunFolder(out)
    print(f"results: {folder.metrics_md}, metrics.csv, metrics.json, config.yaml; per-image maps in "
          f"{out}/<category>/maps/")
    for line in decision_lines(result, folder):
        print(line)
    if result.get("vand"):
        print(f"VAND submission tree: {result['vand']['root']}/{result['vand']['experiment']}/0shot/0/")
    return 0


def decision_lines(result: dict, folder) -> list[str]:
    """What the console says about each category's decision (thresholds, verdicts, quality)."""
    from ..verdict import DECISION_KEY

    lines, first = [], None
    for cat, info in result.get("categories", {}).items():
        d = info.get(DECISION_KEY) if isinstance(info, dict) else None
        if not d:
            continue
        scores = folder.category(cat).scores_csv
        if d.get("image_threshold") is None:
            lines.append(f"decision {cat}: no image threshold (the category has no anomalous image): no verdicts; "
                         f"scores in {scores}")
            continue
        first = first or cat
        v = info.get("verdicts") or {}
        pixel = ("no pixel threshold: no ground-truth masks" if d.get("pixel_threshold") is None
                 else f"pixel threshold {d['pixel_threshold']:.4f}")
        q = d.get("quality") or {}
        weak = " — WEAK, see the warning above" if q.get("weak") else ""
        lines.append(f"decision {cat}: DEFECT when the normalised image score >= {d['image_threshold']:.4f} "
                     f"(F1-optimal; {pixel}): {v.get('OK', 0)} OK, {v.get('DEFECT', 0)} DEFECT{weak}; "
                     f"verdicts in {scores}")
    if first:
        lines.append(f"apply them to new images: saa predict --config {folder.config_yaml} --category "
                     f"{first} --thresholds-from {folder.root} --out DIR IMAGES_OR_FOLDER")
    return lines


def main_for(config_path: str | Path, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Entry point of the ``run_*.py`` scripts: ``saa run CONFIG`` with the options in ``argv``."""
    p = argparse.ArgumentParser(prog=prog, description=f"{_DESCRIPTION} Config: {config_path}.")
    add_run_options(p)
    p.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    from ..cli import _pixels_arg

    p.add_argument("--max-pixels", type=_pixels_arg, default=None, metavar="N",
                   help="largest image read, in pixels (default 100 Mpx or $SAA_MAX_PIXELS; 0 = no limit)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    args.config = str(config_path)
    from ..cli import execute

    return execute(run, args, prog=p.prog)
