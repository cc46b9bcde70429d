"""``saa bank``: reference banks of good parts (``build``, ``show``, ``calibrate``); the guide is
docs/references.md."""
from __future__ import annotations

import json
import os

from . import add_config_args, add_method_arg, overrides_of


def register(sub) -> None:
    p = sub.add_parser(
        "bank", help="reference banks of good parts: build, show, calibrate",
        description="A reference bank holds a method's features of good images of one category, computed once. "
                    "Images scored against it get maps that depend on the bank only (not on the other images "
                    "given with them), and `saa bank calibrate` sets OK / REVIEW / DEFECT thresholds from good "
                    "images only. For methods that compare images: --method lite, --preset improved, or a plug-in "
                    "with reference features. Guide: docs/references.md.")
    ps = p.add_subparsers(dest="bank_command", metavar="ACTION")

    pb = ps.add_parser(
        "build", help="compute the reference features of good images once and store them in a bank folder",
        description="Build a bank folder OUT from good images of CATEGORY: image files, folders (not recursive), "
                    "quoted glob patterns ('parts/**/*.png'), or --from-dataset (the config's dataset's good training "
                    "images, e.g. MVTec train/good; with --k-shot K --seed-run R exactly the images a seed list "
                    "names). Images with the content of an earlier one are left out. Above --max-positions feature "
                    "positions a greedy coreset of them is kept.")
    add_config_args(pb)
    add_method_arg(pb)
    pb.add_argument("--category", required=True, help="category key of the config (e.g. bottle)")
    pb.add_argument("--out", required=True, metavar="BANK", help="bank folder to write (refused if it exists, "
                                                                 "unless it is a bank and --force is given)")
    pb.add_argument("images", nargs="*", metavar="IMG", help="good images: files, folders or quoted glob patterns")
    pb.add_argument("--from-dataset", dest="from_dataset", action="store_true",
                    help="take the good training images of the config's dataset (dataset.kind / dataset.root)")
    pb.add_argument("--data-root", dest="data_root", default=None, metavar="DIR",
                    help="with --from-dataset: another dataset root than the config's")
    pb.add_argument("--k-shot", dest="k_shot", type=int, default=None, metavar="K",
                    help="with --from-dataset: only the K images the seed list names for --seed-run")
    pb.add_argument("--seed-run", dest="seed_run", type=int, default=0, metavar="R",
                    help="with --k-shot: the seed list's run (default 0)")
    pb.add_argument("--seeds", default=None, metavar="FILE|DIR",
                    help="with --k-shot: the seed list (selected_samples_per_run.txt) or a folder of them "
                         "(<DIR>/<category>/selected_samples_per_run.txt, e.g. the SAA+ repository's seeds_mvtec/); "
                         "dataset kind vand_kshot has its own")
    pb.add_argument("--max-positions", dest="max_positions", type=int, default=None, metavar="N",
                    help="keep at most N feature positions, a greedy coreset of them when there are more "
                         "(default 16384; 0 = keep all). The query time grows with N")
    pb.add_argument("--force", action="store_true", help="replace the bank at OUT (never a folder that is not a bank)")
    pb.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    pb.set_defaults(func=run_build)

    pw = ps.add_parser("show", help="what a bank holds: method, settings, model files, references, calibration",
                       description="Print a bank's manifest in words (the same text as BANK/README.txt); --json "
                                   "prints the manifest and calibration records.")
    pw.add_argument("bank", metavar="BANK", help="bank folder")
    pw.add_argument("--json", action="store_true", help="print the records as JSON")
    pw.set_defaults(func=run_show)

    pc = ps.add_parser(
        "calibrate", help="OK / REVIEW / DEFECT thresholds from good images only",
        description="Score good images that are not in the bank (--images), or else each reference against the "
                    "other references (leave-one-out), exactly as a query is scored, and record in the bank: "
                    "DEFECT when score >= t_defect (at most --false-alarm-rate of these good images), REVIEW when "
                    "t_review <= score < t_defect (t_review at --review-rate), else OK; and a pixel threshold at "
                    "--pixel-false-alarm-rate of their pixels.")
    pc.add_argument("bank", metavar="BANK", help="bank folder")
    add_config_args(pc, config_required=False)
    pc.add_argument("--images", nargs="+", default=None, metavar="IMG",
                    help="good images NOT in the bank: files, folders or quoted glob patterns (default: leave-one-out "
                         "within the bank)")
    pc.add_argument("--false-alarm-rate", dest="far", type=float, default=None, metavar="A",
                    help="share of good parts allowed at DEFECT (default 0.01)")
    pc.add_argument("--review-rate", dest="review_rate", type=float, default=None, metavar="B",
                    help="share of good parts at REVIEW or DEFECT (default 5 x the false-alarm rate, at most 0.5)")
    pc.add_argument("--pixel-false-alarm-rate", dest="pixel_rate", type=float, default=None, metavar="P",
                    help="share of good pixels at or above the pixel threshold (default 0.001)")
    pc.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    pc.set_defaults(func=run_calibrate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _method(config_path, args, category: str):
    from ..config import load_config
    from ..run import make_method
    from ..samples import require_model_files

    cfg = load_config(config_path, overrides_of(args))
    cfg.category(category)  # an unknown category fails here
    method = make_method(cfg)
    return cfg, method, require_model_files


def _dataset_images(cfg, args):
    """(image paths, KShotRecord or None, source words) of --from-dataset."""
    from ..bank import BankError
    from ..bank.dataset import dataset_references
    from ..datasets import build_dataset
    from ..evaluation import split_dataset_options

    kind, root = cfg.dataset.kind, args.data_root or cfg.dataset.root
    if not kind or not root:
        raise BankError("--from-dataset needs the config's dataset.kind and dataset.root (or --data-root DIR)")
    options, _ = split_dataset_options(cfg.dataset.options)
    refs = dataset_references(build_dataset(kind, root, **options), kind, root, args.category, args.k_shot,
                              args.seed_run, args.seeds)
    return list(refs.paths), refs.kshot, refs.source


def run_build(args) -> int:
    from ..bank import DEFAULT_MAX_POSITIONS, BankError, build_bank
    from ..bank.records import shown
    from ..bank.inputs import expand_inputs

    if args.images and args.from_dataset:
        raise BankError("give good images OR --from-dataset, not both")
    if not args.images and not args.from_dataset:
        raise BankError("no good image given: pass image files, folders or patterns, or --from-dataset")
    if args.k_shot is not None and not args.from_dataset:
        raise BankError("--k-shot picks images of a dataset's good training images: add --from-dataset")
    cfg, method, require_model_files = _method(args.config, args, args.category)
    if not method.needs_references:
        raise BankError(f"method {method.name!r} compares no images (it does not use references): a reference bank is "
                        "of no use to it; use --method lite, --preset improved or a method with references")
    if args.from_dataset:
        images, kshot, source = _dataset_images(cfg, args)
    else:
        images, kshot, source = expand_inputs(args.images), None, " ".join(map(str, args.images))
    require_model_files(method)
    method.load()
    max_positions = DEFAULT_MAX_POSITIONS if args.max_positions is None else args.max_positions
    bank = build_bank(method, args.category, images, args.out, max_positions=max_positions, kshot=kshot,
                      source=source, force=args.force, progress=args.progress and not getattr(args, "quiet", False))
    m, s = bank.manifest, bank.manifest.scoring
    kept = (f"{s.positions_kept} of {s.positions_total} feature positions kept (greedy coreset, {s.coreset.seconds:.1f} s)"
            if s.coreset is not None else f"all {s.positions_total} feature positions kept")
    print(shown(f"bank: {bank.folder} ({len(m.images)} reference image(s) of {m.category}, method {m.method.name}; {kept})"))
    for line in m.skipped:
        print(shown(f"left out: {line}"))
    if m.kshot is not None:
        print(f"k-shot: k = {m.kshot.k}, seed run {m.kshot.run}: {' '.join(m.kshot.ids)}")
    print(f"next: saa bank calibrate {bank.folder} --images GOOD_IMAGES_NOT_IN_THE_BANK")
    return 0


def run_show(args) -> int:
    from ..bank import ReferenceBank, describe_bank

    bank = ReferenceBank.open(args.bank)
    if args.json:
        data = {"manifest": bank.manifest.model_dump(mode="json"),
                "calibration": bank.calibration.model_dump(mode="json") if bank.calibration else None}
        print(json.dumps(data, indent=1, ensure_ascii=True))
    else:
        print(describe_bank(bank.manifest, bank.calibration), end="")
    return 0


def run_calibrate(args) -> int:
    from ..bank import (DEFAULT_FALSE_ALARM_RATE, DEFAULT_PIXEL_FALSE_ALARM_RATE, BankError, ReferenceBank,
                        calibrate_bank)
    from ..bank.inputs import expand_inputs
    from ..bank.records import shown
    from ..bank.store import CONFIG

    bank = ReferenceBank.open(args.bank)
    config = args.config or os.fspath(bank.folder / CONFIG)
    if args.config is None and not (bank.folder / CONFIG).is_file():
        raise BankError(f"{bank.folder / CONFIG}: missing; pass --config YAML (the config the bank was built with)")
    _, method, require_model_files = _method(config, args, bank.category)
    require_model_files(method)
    bank.check(method, bank.category)
    images = expand_inputs(args.images) if args.images else None
    method.load()
    cal = calibrate_bank(bank, method, images,
                         false_alarm_rate=DEFAULT_FALSE_ALARM_RATE if args.far is None else args.far,
                         review_rate=args.review_rate,
                         pixel_false_alarm_rate=DEFAULT_PIXEL_FALSE_ALARM_RATE if args.pixel_rate is None else args.pixel_rate,
                         progress=args.progress and not getattr(args, "quiet", False))
    print(shown(f"calibration of {bank.folder} ({cal.mode}, {cal.n} good image(s)):"))
    print(f"  DEFECT when score >= {cal.t_defect:.6g}: {cal.false_alarms} of {cal.n} good images (measured false-alarm "
          f"rate {cal.measured_far:.4f}, 95% interval {cal.far_ci95[0]:.4f}-{cal.far_ci95[1]:.4f}; expected on new good "
          f"parts like these: {cal.expected_far_new:.4f})")
    if cal.t_review < cal.t_defect:
        print(f"  REVIEW when {cal.t_review:.6g} <= score < {cal.t_defect:.6g}: {cal.reviews} of {cal.n} good images")
    if cal.pixel_threshold is not None:
        print(f"  pixel threshold {cal.pixel_threshold:.6g} (good-pixel false-alarm rate {cal.pixel_false_alarm_rate:g})")
    for note in cal.notes:
        print(shown(f"note: {note}"))
    return 0
