"""``saa predict``: anomaly maps for a few images of one category, with any registered method."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import add_config_args, add_method_arg, overrides_of

log = logging.getLogger("saa.predict")


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
                    "and its predicted defect outline. With --bank BANK (a reference bank of good parts, `saa bank "
                    "build`) every image is scored against the bank only, so its map and verdict are the same alone "
                    "or in any batch; a calibrated bank (`saa bank calibrate`) gives OK / REVIEW / DEFECT. Without "
                    "--bank, a method that compares images (--method lite, --preset improved) scores the images "
                    "given against each other: give several images of the category. "
                    "Each file is scored once, however many paths name it (links included); two inputs whose "
                    "output files would share a name (x.png and x_saliency.png, X.png and x.png) get <stem>_1, ... "
                    "(predictions.csv says which image each stem is). Nothing is written outside --out.")
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
    p.add_argument("--bank", default=None, metavar="BANK",
                   help="score every image against this reference bank of good parts (`saa bank build`) instead of "
                        "against the other images given: its map and verdict do not depend on the batch. A "
                        "calibrated bank (`saa bank calibrate`) prints OK / REVIEW / DEFECT per image. The bank's "
                        "method, settings and model files must be the config's")
    p.add_argument("--threshold", type=float, default=None, metavar="X",
                   help="image threshold by hand: DEFECT when the score >= X. With --thresholds-from it replaces "
                        "the run's image threshold (normalised scale of the run); alone, or with --bank (replacing "
                        "its calibration's OK / REVIEW / DEFECT), it applies to the raw score the method gives (the "
                        "'raw score' printed)")
    p.add_argument("--accept-weak-decision", dest="accept_weak_decision", action="store_true",
                   help="use the thresholds of --thresholds-from even when the run marked its decision weak (all "
                        "one verdict, or image AUROC no better than chance or under 60 on its own images)")
    p.add_argument("--save-masks", dest="save_masks", action="store_true",
                   help="also write <stem>_mask.png, the predicted defect pixels (0/255, image size); needs the "
                        "pixel threshold of --thresholds-from or of a calibrated --bank")
    p.add_argument("images", nargs="+", metavar="IMG",
                   help="image files, folders (their images, sorted by name, not recursive) or glob patterns "
                        "(quote them, e.g. 'parts/*.png'; ** recurses)")
    add_method_arg(p)
    p.set_defaults(func=run)


def _bank_decision(args, bank):
    """The thresholds of a call with ``--bank`` (None: an uncalibrated bank and no --threshold)."""
    from ..bank import BankDecision, bank_decision
    from ..errors import SaaError

    decision = bank_decision(bank)
    if args.threshold is not None:
        if not np.isfinite(args.threshold):
            raise SaaError(f"--threshold must be a finite number, got {args.threshold}")
        pixel = decision.pixel_threshold if decision is not None else None
        decision = BankDecision(float(args.threshold), pixel,
                                source=f"--threshold {args.threshold:g} (raw score against bank {bank.folder})")
    if args.save_masks and (decision is None or decision.pixel_threshold is None):
        raise SaaError(f"--save-masks needs a pixel threshold: bank {bank.folder} has no calibration; run "
                       f"`saa bank calibrate {bank.folder}` first")
    return decision


def _decision(args, cfg, method):
    """The thresholds of this call (None: no verdict), checked against the method and its settings."""
    from ..errors import SaaError
    from ..verdict import Decision, load_decision

    decision = None
    if args.thresholds_from:
        decision = load_decision(args.thresholds_from, args.category,
                                 accept_weak=args.accept_weak_decision or args.threshold is not None)
        decision.check_method(method.name, method.fingerprint(args.category, None), int(cfg.out_size))
    if args.threshold is not None:
        if not np.isfinite(args.threshold):
            raise SaaError(f"--threshold must be a finite number, got {args.threshold}")
        decision = (decision.with_image_threshold(args.threshold, f"--threshold {args.threshold:g} ({decision.source})")
                    if decision is not None else Decision(float(args.threshold), source=f"--threshold {args.threshold:g}"))
    if args.save_masks and (decision is None or decision.pixel_threshold is None):
        raise SaaError("--save-masks needs a pixel threshold: pass --thresholds-from RUN_DIR (a labelled run of the "
                       "category with ground-truth masks)")
    if decision is not None and decision.image_threshold is None:
        raise SaaError(f"{decision.source}: no image threshold recorded (the category has no defective image); "
                       "pass --threshold X")
    return decision


def run(args) -> int:
    from ..config import load_config
    from ..run import make_method
    from ..run.few import FewInput, FewOptions, OutputNames, choose_panels, display_name, expand_images, run_few
    from ..samples import require_model_files

    cfg = load_config(args.config, overrides_of(args))
    cfg.category(args.category)  # fail early on an unknown category
    method = make_method(cfg)
    bank = None
    if args.bank is not None:
        from ..bank import open_bank
        from ..errors import SaaError

        if args.thresholds_from:
            raise SaaError("--bank and --thresholds-from put the scores on two different scales: choose one (a bank's "
                           "thresholds come from `saa bank calibrate`)")
        bank = open_bank(args.bank, method, args.category)  # another method, setting or model file: one line
        decision = _bank_decision(args, bank)
    else:
        decision = _decision(args, cfg, method)  # a run of another method or settings: say so first
    require_model_files(method)  # every missing model file at once, before any model loads
    panels = choose_panels(args.panels, method)
    found = expand_images(args.images)
    for note in found.notes():
        print(f"note: {note}")
    method.load()  # a missing model file is reported before any image is read
    out = Path(args.out)
    names = OutputNames()
    inputs = [FewInput(path, names.stem_for(path)) for path in found.paths]
    if bank is not None:
        m = bank.manifest
        print(f"note: every image is scored against bank {display_name(bank.folder)} only ({len(bank)} good "
              f"reference image(s) of {m.category}, bank id {m.bank_id[:12]}): its map and verdict do not depend on "
              "the other images given")
        if bank.calibration is None and args.threshold is None:
            print(f"note: bank {display_name(bank.folder)} is not calibrated: maps and raw scores only, no verdict; "
                  f"set OK / REVIEW / DEFECT thresholds from good parts with `saa bank calibrate "
                  f"{display_name(bank.folder)}`")
    elif decision is not None and decision.normalisation is not None and method.needs_references:
        decision.check_batch(method.name, len(inputs), method.bank_settings().get("max_others"))
        print(f"note: method {method.name} scores each image against the other images given ({len(inputs)} here); "
              "the run's thresholds were set on the run's own image set, so the verdicts hold when these "
              "images are scored among a set like it (many images of the category, mostly normal)")
    rows: list[dict] = []

    def said(res) -> None:
        written = display_name(res.files.get("map", out / res.input.stem))
        print(f"{res.input.name}: {res.prediction.summary()} -> {written}")
        for n in res.prediction.notes:
            print(f"  note: {n}")
        print(res.verdict_line())
        rows.append(res.row())

    options = FewOptions(panels=panels, save_masks=args.save_masks)
    try:
        outcome = run_few(method, args.category, inputs, out=out, decision=decision, bank=bank, options=options,
                          on_result=said)
    finally:  # what succeeded is listed even when a later image stops the call
        if rows:
            write_predictions_csv(out / "predictions.csv", rows)
    if rows:
        print(f"predictions: {display_name(out / 'predictions.csv')}")
    if outcome.failed:
        print(f"{len(outcome.failed)} image(s) could not be read: {', '.join(inp.name for inp, _ in outcome.failed)}")
        return 1
    return 0


def write_predictions_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from ..image_io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, ["image", "stem", "raw_score", "score", "scale", "threshold", "verdict",
                             "review_threshold"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
