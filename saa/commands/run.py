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
    "files the folder holds). With --bank, --references or --k-shot (methods that compare images: --method "
    "lite, --preset improved) every test image is scored against a reference bank of good parts instead of "
    "against the other test images."
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
    add_reference_options(p)


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """``--bank`` / ``--references`` / ``--k-shot`` (with ``--seed-run``, ``--seeds``, ``--max-positions``)."""
    g = p.add_argument_group(
        "references (a method that compares images: --method lite, --preset improved)",
        "Score every test image against a reference bank of good parts only, never against the other test "
        "images: an image's map is then what `saa predict --bank` gives it. Give one of --bank, --references, "
        "--k-shot.")
    g.add_argument("--bank", default=None, metavar="BANK",
                   help="a bank made by `saa bank build` (the run is then its category, unless --categories says "
                        "otherwise), or a folder holding one per category (BANK/<category>/)")
    g.add_argument("--references", default=None, metavar="DIR",
                   help="good images per category in DIR/<category>/ (with one category: DIR itself); a bank of them "
                        "is built into OUT/<category>/bank/")
    g.add_argument("--k-shot", dest="k_shot", type=int, default=None, metavar="K",
                   help="the K good training images (e.g. MVTec train/good) the seed list names for --seed-run; a bank "
                        "of them is built into OUT/<category>/bank/ (default --out: results/<config>-<K>shot-run<R>)")
    g.add_argument("--seed-run", dest="seed_run", type=int, default=None, metavar="R",
                   help="with --k-shot: the seed list's run (default 0)")
    g.add_argument("--seeds", default=None, metavar="PATH",
                   help="with --k-shot: the seed lists, a selected_samples_per_run.txt file or a folder of "
                        "<category>/selected_samples_per_run.txt (the SAA+ authors' datasets/seeds_mvtec/). Needed "
                        "unless the dataset ships its own (kind vand_kshot: Train/<category>/)")
    g.add_argument("--max-positions", dest="max_positions", type=int, default=None, metavar="N",
                   help="with --references / --k-shot: feature positions a built bank keeps (default 16384, a greedy "
                        "coreset beyond it; 0 = all)")


def references_of(args):
    """The :class:`saa.run.references.References` of the command line."""
    from ..run.references import References

    seed_run = getattr(args, "seed_run", None)
    return References(bank=getattr(args, "bank", None), folder=getattr(args, "references", None),
                      k_shot=getattr(args, "k_shot", None), seed_run=0 if seed_run is None else seed_run,
                      seeds=getattr(args, "seeds", None), max_positions=getattr(args, "max_positions", None))


def register(sub) -> None:
    p = sub.add_parser("run", help="evaluate a config on its dataset (benchmark run)", description=_DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="config file, e.g. configs/mvtec.yaml")
    add_run_options(p)
    p.set_defaults(func=run)


def default_out_dir(config_path: str | Path, references=None) -> Path:
    """``results/<config stem>`` (with k-shot references ``results/<stem>-<K>shot-run<R>``)."""
    return Path("results") / (Path(config_path).stem + (references.out_suffix() if references is not None else ""))


def run(args) -> int:
    from ..config import load_config
    from ..run import evaluate_run

    refs = references_of(args)
    batch = [] if getattr(args, "batch_size", None) is None else [f"models.batch_size={args.batch_size}"]
    cfg = load_config(args.config, list(args.overrides) + batch + preset_override(args) + method_override(args))
    out = Path(args.out) if args.out else default_out_dir(args.config, refs)
    result = evaluate_run(cfg, out, categories=args.categories, data_root=args.data_root, device=args.device,
                          resume=args.resume, progress=args.progress, save_masks=getattr(args, "save_masks", False),
                          references=refs, vand_root=getattr(args, "vand_root", None))
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
    for line in reference_lines(result):
        print(line)
    for line in decision_lines(result, folder):
        print(line)
    if result.get("vand"):
        v = result["vand"]
        print(f"VAND submission tree: {v['root']}/{v['experiment']}/{v.get('track') or '0shot/0'}/")
    return 0


def reference_lines(result: dict) -> list[str]:
    """What the console says about the reference banks of a run (nothing without references)."""
    from ..records import ReferencesRecord
    from ..run.references import describe_references

    lines = []
    for cat, info in result.get("categories", {}).items():
        rec = info.get("references") if isinstance(info, dict) else None
        if rec:
            lines.append("references " + describe_references(cat, ReferencesRecord.model_validate(rec)))
    if lines:
        lines.insert(0, "every test image was scored against a reference bank of good parts (not against the other "
                        "test images):")
    return lines


def decision_lines(result: dict, folder) -> list[str]:
    """What the console says about each category's decision (thresholds, verdicts, quality)."""
    from ..verdict import DECISION_KEY

    lines, first, bank = [], None, None
    for cat, info in result.get("categories", {}).items():
        d = info.get(DECISION_KEY) if isinstance(info, dict) else None
        if not d:
            continue
        refs = info.get("references") or {}
        if refs and bank is None:
            bank = (cat, refs.get("bank"))
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
    if bank is not None:  # the maps came from a bank: new images are judged against the bank, not the run
        lines.append(f"judge new images against the same bank: saa bank calibrate {bank[1]} (thresholds from good "
                     f"parts), then saa predict --config {folder.config_yaml} --category {bank[0]} --bank {bank[1]} "
                     "--out DIR IMAGES_OR_FOLDER")
    elif first:
        lines.append(f"apply them to new images: saa predict --config {folder.config_yaml} --category "
                     f"{first} --thresholds-from {folder.root} --out DIR IMAGES_OR_FOLDER")
    return lines


def seed_runs(args, k: int) -> list[int]:
    """Every seed run the categories' seed lists name for ``k`` (the same in every category of the run,
    else a one-line error naming two that differ)."""
    from ..bank.dataset import seed_lists_of
    from ..config import load_config
    from ..datasets import build_dataset, read_seed_lists
    from ..errors import SaaError
    from ..evaluation import split_dataset_options

    cfg = load_config(args.config, list(args.overrides) + preset_override(args) + method_override(args))
    kind, root = cfg.dataset.kind, args.data_root or cfg.dataset.root
    ds = build_dataset(kind, root, **split_dataset_options(cfg.dataset.options)[0])
    runs: dict[str, list[int]] = {}
    for cat in args.categories or ds.categories():
        lists = read_seed_lists(seed_lists_of(ds, cat, args.seeds))
        runs[cat] = sorted(r for r, kk in lists.lists if kk == int(k))
        if not runs[cat]:
            raise SaaError(f"{lists.path}: names no seed run with k = {k} (it has k = "
                           f"{', '.join(str(v) for v in sorted({kk for _, kk in lists.lists}))})")
    first = next(iter(runs.items()))
    for cat, r in runs.items():
        if r != first[1]:
            raise SaaError(f"the seed lists name other runs with k = {k} for {first[0]} ({first[1]}) and {cat} ({r}); "
                           "choose one with --seed-run R")
    return first[1]


def run_fewshot_submission(args) -> int:
    """``run_VAND_workshop.py --k-shot K``: one `saa run` per seed run (``--seed-run R``: that one only),
    each into ``OUT/run<R>/``, all writing ONE submission tree ``OUT/vand/<experiment>/<K>shot/<R>/``. The
    dataset is read as the ``vand_kshot`` layout (the challenge's Test/ plus Train/<cat>/Images and
    the seed lists)."""
    import copy

    if "dataset.kind=vand_kshot" not in args.overrides:
        args.overrides = ["dataset.kind=vand_kshot"] + list(args.overrides)
    runs = [args.seed_run] if args.seed_run is not None else seed_runs(args, args.k_shot)
    base = Path(args.out) if args.out else Path("results") / f"{Path(args.config).stem}-{args.k_shot}shot"
    for r in runs:
        one = copy.copy(args)
        one.seed_run, one.out, one.vand_root = r, str(base / f"run{r}"), str(base / "vand")
        print(f"== few-shot run {r}: k = {args.k_shot} -> {one.out}")
        code = run(one)
        if code:
            return code
    print(f"few-shot submission (k = {args.k_shot}, seed run(s) {', '.join(map(str, runs))}): {base / 'vand'}")
    return 0


def main_for(config_path: str | Path, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None,
             fewshot_submission: bool = False) -> int:
    """Entry point of the ``run_*.py`` scripts: ``saa run CONFIG`` with the options in ``argv``.
    ``fewshot_submission`` (``run_VAND_workshop.py``): ``--k-shot K`` runs every seed run the seed lists
    name for K and writes the VAND few-shot submission (:func:`run_fewshot_submission`)."""
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

    if fewshot_submission and args.k_shot is not None:
        return execute(run_fewshot_submission, args, prog=p.prog)
    return execute(run, args, prog=p.prog)
