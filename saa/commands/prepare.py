"""``saa prepare``: convert raw VisA to the 1cls tree; check a dataset folder."""
from __future__ import annotations

from typing import Optional

from ..errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("prepare", help="prepare or check a dataset folder",
                       description="Dataset preparation: `saa prepare visa` converts the raw VisA release "
                                   "into the 1cls tree that dataset kind visa_public reads; `saa prepare check` "
                                   "lists what a dataset folder holds and reports layout problems.")
    ps = p.add_subparsers(dest="prepare_command", metavar="ACTION")
    pv = ps.add_parser("visa", help="raw VisA release -> <out>/<category>/{train,test,ground_truth} (1cls split)",
                       description="Copy the images of the VisA 1cls split into <out>/<category>/train/good, "
                                   "test/good, test/bad and write binarised masks (0/255 PNG) to "
                                   "ground_truth/bad. Files already up to date are skipped.")
    pv.add_argument("--raw", required=True, metavar="DIR", help="raw VisA folder (holds candle/, ..., split_csv/)")
    pv.add_argument("--out", required=True, metavar="DIR",
                    help="output folder, e.g. ../datasets/VisA_pytorch/1cls (the visa_public root)")
    pv.add_argument("--split-csv", metavar="FILE", default=None,
                    help="the 1cls.csv split file (default: <raw>/split_csv/1cls.csv)")
    pv.add_argument("--categories", nargs="+", metavar="CAT", default=None, help="only these objects")
    pv.set_defaults(func=run_visa)

    pc = ps.add_parser("check", help="list a dataset's categories and image counts; report problems",
                       description="Build the dataset exactly as `saa run` would and print one line per category; "
                                   "`warning:` lines name mask files that match no image (they label nothing). "
                                   "Give KIND and ROOT, or --config YAML to check the dataset a config names.")
    pc.add_argument("kind", metavar="KIND", nargs="?", default=None,
                    help="mvtec, visa_public, visa_challenge, ksdd2, mtd or folder (not with --config)")
    pc.add_argument("root", metavar="ROOT", nargs="?", default=None, help="dataset root folder (not with --config)")
    pc.add_argument("--config", metavar="YAML", default=None,
                    help="take the dataset kind, root and options from this config (as `saa run YAML` reads them)")
    pc.add_argument("--data-root", metavar="DIR", default=None, help="with --config: another dataset root")
    pc.add_argument("--categories", nargs="+", metavar="CAT", default=None, help="only these categories")
    pc.add_argument("--check-sizes", action="store_true",
                    help="decode every image that has a mask and its mask, as a run reads them, and compare "
                         "their sizes (also: empty masks of anomalous images, EXIF orientation tags)")
    pc.add_argument("--decode", action="store_true",
                    help="decode every image and mask (finds corrupt or truncated files before a long run); "
                         "implies --check-sizes")
    pc.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="dataset option, e.g. --option split=train for ksdd2 (repeatable; value read as YAML)")
    pc.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_visa(args) -> int:
    from ..datasets import prepare_visa

    counts = prepare_visa(args.raw, args.out, split_csv=args.split_csv, categories=args.categories)
    print(f"VisA 1cls tree in {args.out}: {counts['categories']} categories, "
          f"{counts['train_good']} train/good, {counts['test_good']} test/good, {counts['test_bad']} test/bad, "
          f"{counts['masks']} masks ({counts['written']} files written, {counts['unchanged']} unchanged)")
    print(f"use it with: saa run configs/visa_public.yaml --data-root {args.out}")
    return 0


def _parse_options(items) -> dict:
    import yaml

    from ..config import _bounded_yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"malformed --option {item!r}: expected KEY=VALUE, e.g. split=train")
        k, v = item.split("=", 1)
        if not k.strip():
            raise ConfigError(f"malformed --option {item!r}: empty key")
        try:
            out[k.strip()] = _bounded_yaml(v, f"--option {k.strip()}") if v.strip() else ""
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def _check_target(args) -> tuple[str, str, dict, Optional[list[str]]]:
    """(kind, root, dataset options, the config's categories or None) from KIND ROOT or from
    --config (with --data-root / --option)."""
    options = _parse_options(args.options)
    if args.config is None:
        if args.kind is None or args.root is None:
            raise ConfigError("saa prepare check needs KIND and ROOT (e.g. `saa prepare check mvtec "
                              "../datasets/mvtec_anomaly_detection`) or --config YAML")
        if args.data_root is not None:
            raise ConfigError("--data-root goes with --config; without it give the root as ROOT")
        return args.kind, args.root, options, None
    if args.kind is not None:
        raise ConfigError("with --config the dataset comes from the config: give another root as --data-root DIR, "
                          f"not as a positional argument ({args.kind!r})")
    from ..config import load_config
    from ..evaluation import split_dataset_options

    cfg = load_config(args.config)
    kind, root = cfg.dataset.kind, args.data_root or cfg.dataset.root
    if not kind:
        raise ConfigError(f"{args.config}: the config has no dataset.kind")
    if not root:
        raise ConfigError(f"{args.config}: the config has no dataset.root; pass --data-root DIR")
    ds_options, _ = split_dataset_options(cfg.dataset.options)
    return kind, str(root), {**ds_options, **options}, list(cfg.categories)


def run_check(args) -> int:
    from ..datasets import build_dataset, validate_dataset

    kind, root, options, described = _check_target(args)
    for line in validate_dataset(kind, root, categories=args.categories,
                                 check_sizes=args.check_sizes, decode=args.decode, **options):
        print(line)
    if described is not None:
        present = args.categories or build_dataset(kind, root, **options).categories()
        missing = [c for c in present if c not in described]
        if missing:
            print(f"problem: {args.config} describes no category {', '.join(missing)} (its categories: "
                  f"{', '.join(described)}); `saa run` stops on this: add it under `categories:` or rename it"
                  + (" (dataset.options.category)" if kind == "folder" else ""))
            return 1
    return 0
