"""``saa demo``: a method on a few bundled real images, overlays + a small HTML report.

``--method auto`` runs the full SAA+ pipeline when the model files of the config exist, otherwise
the lite method (:mod:`saa.lite`: saliency-only maps from the packaged EfficientNet-Lite0, no
detector, no SAM), and says so in the console and in the report, with the missing files and
``bash install.sh``; any registered method can be named. The images of each category go through
:func:`saa.run.few.run_few` (one colour scale per category).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..samples import (DEFAULT_CONFIG, REPO, SAMPLES_DIR, category_of_sample, choose_method,  # noqa: F401
                       default_config_path, lite_message, missing_model_files, sample_images)
from . import overrides_of

log = logging.getLogger("saa.demo")


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run on the bundled sample images, write overlays + an HTML report",
        description="Segment the real sample images in assets/samples/ (or --images) and write, per image, "
                    "<stem>_panels.png, <stem>_overlay.png, <stem>.npy (the map at the image size, float32) and "
                    "<stem>.json (score, verdict, regions), plus report.html, to --out. With --method auto "
                    "(default) it uses the full SAA+ pipeline when the config's model files exist, otherwise the "
                    "lite method (saliency only), and says so.")
    p.add_argument("--config", default=None, metavar="YAML", help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--device", default=None, help="shortcut for --set models.device=DEVICE")
    p.add_argument("--method", default="auto", metavar="NAME",
                   help="auto (the full SAA+ method when its model files exist, else lite), saa (full SAA+; "
                        "'full' is the same), lite (saliency only, no big model files) or any other registered "
                        "method (a plug-in); an unknown name lists them all")
    p.add_argument("--out", default="saa_demo", metavar="DIR", help="output folder (default ./saa_demo)")
    p.add_argument("--images", nargs="+", default=None, metavar="IMG",
                   help="other images: files, folders or quoted glob patterns, each file once (named "
                        "<category>_*.ext, else --category)")
    p.add_argument("--category", default=None, help="category for images whose name does not start with one")
    p.add_argument("--thresholds-from", dest="thresholds_from", default=None, metavar="RUN_DIR",
                   help="verdicts (OK / DEFECT) and defect outlines from the thresholds a labelled `saa run` of the "
                        "same method recorded for each category (see saa predict --thresholds-from)")
    p.set_defaults(func=run)


def _groups(args, cfg) -> tuple[dict[str, list[str]], list[str]]:
    """The images of the call by category (named ``<category>_...`` or ``--category``), and notes
    on the inputs."""
    from ..errors import SaaError
    from ..run.few import display_name, expand_images

    notes = []
    if args.images:
        found = expand_images(args.images)
        notes += found.notes()
        images = found.paths
    else:
        images = [str(p) for p in sample_images()]
    if not images:
        raise SaaError(f"no sample image found in {SAMPLES_DIR}")
    groups: dict[str, list[str]] = {}
    for p in images:
        cat = category_of_sample(Path(p), list(cfg.categories)) or args.category
        if cat is None:
            raise SaaError(f"{display_name(p)}: cannot tell the category from the file name; name it <category>_... "
                           f"or pass --category (categories: {', '.join(cfg.categories)})")
        cfg.category(cat)
        groups.setdefault(cat, []).append(p)
    return groups, notes


def _decisions(args, cfg, meth, groups, notes: list[str]) -> dict:
    """The thresholds of each category from ``--thresholds-from`` (checked before any model loads).
    A category the run lacks, a weak decision, or too few images for a method that compares the
    images given: no verdict, said in a note."""
    from ..errors import SaaError
    from ..verdict import load_decision

    decisions = {}
    if not args.thresholds_from:
        return decisions
    for cat in groups:
        d = load_decision(args.thresholds_from, cat, missing_ok=True)
        if d is None:
            notes.append(f"{cat}: no verdict (the run in {args.thresholds_from} has no category {cat})")
            print(notes[-1])
            continue
        d = dataclasses.replace(d, accept_weak=True)  # a weak or batch-bound decision: a note, below
        d.check_method(meth.name, meth.fingerprint(cat, None), int(cfg.out_size))
        why = "; ".join(d.weak_reasons)
        if not why and meth.needs_references:
            try:
                d.check_batch(meth.name, len(groups[cat]), meth.bank_settings().get("max_others"))
            except SaaError as e:
                why = str(e).split(": ", 1)[1]
        if why:
            notes.append(f"{cat}: no verdict: {why}")
            print(notes[-1])
            continue
        decisions[cat] = d
    if decisions and meth.needs_references:
        notes.append(f"method {meth.name} scores each image against the other images of its category given "
                     "here; the run's thresholds were set on the run's image set, so these verdicts hold only "
                     "for a set like it (see docs/verdicts.md, Limits)")
        print("note: " + notes[-1])
    return decisions


def _category(meth, cat: str, paths, out: Path, decision, options, names, failed: list) -> list[str]:
    """One category through the few-images flow: its console lines and its report section."""
    from ..report import esc, img_tag
    from ..run.few import FewInput, display_name, run_few

    summaries = {}

    def said(res) -> None:
        summary = res.prediction.summary() + (" (green kept, grey/red dropped)" if res.prediction.has_regions
                                              else "")
        if res.verdict:
            summary = (f"{res.verdict} ({res.scale} score {res.score:.4f}, threshold {res.image_threshold:.4g}); "
                       + summary)
        summaries[res.input.stem] = summary
        print(f"{res.input.name} [{cat}]: {summary} -> {display_name(out / (res.input.stem + '_panels.png'))}")

    inputs = [FewInput(p, names.stem_for(p), name=display_name(p)) for p in paths]
    outcome = run_few(meth, cat, inputs, out=out, decision=decision, options=options, on_result=said)
    failed += [inp.name for inp, _ in outcome.failed]
    scale = outcome.scale
    if scale is None:
        return []
    # one colour scale per category: the run's normalised one, or the joint range of its raw maps
    section = [f"<h2>{esc(cat)}</h2><p class=\"small\">{len(outcome.results)} image(s) on one colour scale "
               f"({esc(scale.label)} {scale.vmin:.4g} to {scale.vmax:.4g})"
               + (f"; thresholds from <code>{esc(decision.source)}</code>" if decision else
                  "; no threshold given, so no verdict (verdicts come from --thresholds-from RUN_DIR, or from "
                  "good parts alone: <code>saa bank build</code>, <code>saa bank calibrate</code>, then "
                  "<code>saa predict --bank</code>; README &quot;Your own parts&quot;)") + "</p>"]
    for res in outcome.results:
        panels = res.files["panels"].read_bytes()
        name = Path(res.input.name).name
        section.append(f"<h3>{esc(name)} — {esc(cat)}</h3><p class=\"small\">{esc(summaries[res.input.stem])}</p>"
                       + img_tag(panels, alt=f"panels of {name}"))
    return section


def run(args) -> int:
    from ..config import load_config
    from ..image_io import atomic_write_text
    from ..report import esc, html_page, versions_html
    from ..run import make_method
    from ..run.few import FewOptions, OutputNames, display_name
    from ..samples import method_note, require_model_files

    cfg_path = Path(args.config) if args.config else default_config_path()
    cfg = load_config(cfg_path, overrides_of(args, with_method=False))
    missing = missing_model_files(cfg)
    method = choose_method(args.method, missing)
    groups, notes = _groups(args, cfg)
    out = Path(args.out)
    meth = make_method(cfg.model_copy(update={"method": method}))
    require_model_files(meth)  # a plug-in's missing files, all named at once
    note = method_note(args.method, method, missing, meth)
    if note:
        notes.insert(0, note)
    for n in notes:
        print(n)
    if not note:
        print(f"{meth.label}, config {cfg_path}")
    decisions = _decisions(args, cfg, meth, groups, notes)
    meth.load()
    options = FewOptions(panels=tuple(k for k in ("image", "anomaly_map", "saliency", "boxes") if k in meth.panels),
                         map_file="full", saliency_file=False)
    names, sections, failed = OutputNames(), [], []
    for cat, paths in groups.items():
        sections += _category(meth, cat, paths, out, decisions.get(cat), options, names, failed)
    folder = Path(next(iter(groups.values()))[0]).parent
    body = [f"<p>Method: <b>{esc(meth.label)}</b>; config "
            f"<code>{esc(cfg_path)}</code>; images from <code>{esc(display_name(folder))}</code> "
            "(licences in its SOURCES.md).</p>"]
    body += [f"<p class=\"note\">{esc(n)}</p>" for n in notes]
    body += sections
    body.append("<h2>Versions</h2>" + versions_html())
    title = f"saa demo — {meth.name.upper()} method: {meth.label}"
    atomic_write_text(out / "report.html", html_page(title, body))
    print(f"report: {display_name(out / 'report.html')} (open it in a browser)")
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(failed)}")
        return 1
    return 0
