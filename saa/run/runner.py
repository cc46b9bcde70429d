"""A whole benchmark run: every category through :func:`saa.run.engine.run_category`, then the
SPEC §5 metrics (:mod:`saa.evaluation`), the decisions and their quality (:mod:`saa.verdict`), the
tables, ``metrics.json`` (a typed :class:`saa.records.RunResult`), ``config.yaml`` and the report.
What ``saa run`` and the ``run_*.py`` scripts call (:func:`evaluate_run`).

Every file goes through :class:`saa.results.RunFolder` (the layout is its business). A run takes the
folder's lock first (one writer at a time; under torchrun rank 0 takes it for all processes), then
:meth:`~saa.results.RunFolder.begin` marks the folder ``running`` with the run's settings (removing
the metrics of a run with other settings), and the state becomes ``complete`` once the metrics
files are written.

With references (``references``: ``saa run --bank`` / ``--references`` / ``--k-shot``,
:mod:`saa.run.references`) each category's images are scored against a bank of good parts: the
banks are resolved before the lock (their identity is part of the settings fingerprint), built or
reused under it, and ``metrics.json`` records per category which bank and which images.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..config import SaaConfig, config_from_dict, load_config
from ..datasets import AnomalyDataset, build_dataset
from ..errors import ConfigError, DatasetError, SaaError
from ..evaluation import (METRIC_KEYS, category_evaluation, category_maps_and_scale, describe_unavailable,
                          eval_size_of, format_table, mean_metrics, resize_masks, split_dataset_options,
                          unavailable_metrics, vand_experiment_of)
from ..image_io import atomic_save_png
from ..methods import Method, build_method, get_method
from ..naming import plain_name
from ..records import CategoryEntry, DecisionRecord, RunResult
from ..results import RunFolder
from ..verdict import (ACCEPT_WEAK_FLAG, decision_quality, decision_record, mask_png, predicted_mask,
                       quality_line, verdict_of)
from .engine import distributed_context, run_category
from .references import (References, bank_categories, describe_references, make_banks, plan_banks, references_record,
                         run_references)

__all__ = ["CategoryResult", "evaluate_category", "evaluate_run", "make_method", "run_title"]

log = logging.getLogger("saa.run")


@dataclass
class CategoryResult:
    category: str
    keys: list[str]
    labels: list[Optional[int]]
    raw_scores: np.ndarray
    image_scores: np.ndarray  # max of the normalised map (nan-free)
    metrics: dict[str, Optional[float]]
    counts: dict[str, int]
    computed: int
    reused: int
    seconds: dict[str, float] = field(default_factory=dict)
    vand_dir: Optional[str] = None
    features_computed: Optional[int] = None  # pass-1 features computed (methods with references)
    notes: list[str] = field(default_factory=list)
    decision: Optional[DecisionRecord] = None  # thresholds + normalisation + quality (labelled categories)
    verdicts: Optional[dict[str, int]] = None  # {"OK": n, "DEFECT": m} at the image threshold
    masks_dir: Optional[str] = None  # where the predicted masks were written (--save-masks)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it could not be computed
    map_fingerprint: Optional[str] = None  # the fingerprint of the category's stored maps
    warnings: list[str] = field(default_factory=list)  # weak decision, metrics not computed
    references: Any = None  # ReferencesRecord: the bank of good parts the images were scored against

    def to_entry(self) -> CategoryEntry:
        """The category's typed entry of ``metrics.json``."""
        return CategoryEntry(
            metrics=self.metrics, counts=self.counts, computed=self.computed, reused=self.reused,
            features_computed=self.features_computed, notes=self.notes,
            seconds={k: round(v, 3) for k, v in self.seconds.items()}, vand_dir=self.vand_dir,
            decision=self.decision, verdicts=self.verdicts, masks_dir=self.masks_dir, unavailable=self.unavailable,
            map_fingerprint=self.map_fingerprint, references=self.references)

    def to_dict(self) -> dict[str, Any]:
        return self.to_entry().model_dump(mode="json")


def make_method(config: SaaConfig, pipeline=None) -> Method:
    """The config's method; ``pipeline``: an :class:`~saa.pipeline.SAAPipeline` whose models a
    method that takes a ``pipeline`` argument (``saa``) reuses."""
    cls = get_method(config.method)
    kwargs = {}
    if pipeline is not None and "pipeline" in inspect.signature(cls.__init__).parameters:
        kwargs["pipeline"] = pipeline
    return build_method(config, **kwargs)


def run_title(method: Method, kind: str, root: str, eval_size: int) -> str:
    return f"{method.label} on {kind} ({root}), eval size {eval_size}"


def _weak_warning(category: str, decision: DecisionRecord) -> Optional[str]:
    q = decision.quality
    if q is None or not q.weak or decision.image_threshold is None:
        return None
    return (f"{category}: WEAK DECISION at image threshold {decision.image_threshold:.4f} ({quality_line(q)}): "
            f"{'; '.join(q.reasons)}. `saa predict --thresholds-from` refuses it unless {ACCEPT_WEAK_FLAG}")


def evaluate_category(method: Method, dataset: AnomalyDataset, category: str,
                      out_dir: Union[str, os.PathLike, RunFolder], eval_size: int = 400, resume: bool = True,
                      progress: bool = True, vand_root: Optional[Union[str, os.PathLike]] = None,
                      vand_experiment: Optional[str] = None, save_masks: bool = False, *, reference_bank=None,
                      references=None, vand_shots: tuple[int, int] = (0, 0)) -> CategoryResult:
    """Run (or reuse) every image of ``category`` with ``method``, then normalise and compute its
    metrics and F1-optimal thresholds with their quality (labelled categories, :mod:`saa.verdict`);
    write ``<category>/scores.csv`` with each image's verdict (and the VAND tree under ``vand_root``).
    Metrics that cannot be computed (no masks, no anomalous image, ...) are None, with the reason in
    ``unavailable`` and the notes. ``save_masks``: also write each image's predicted defect mask (PNG
    0/255, image size) as ``<category>/masks/<stored stem>.png`` (needs the pixel threshold: a
    labelled set with masks). ``reference_bank``: score every image against this bank of good parts
    (:func:`saa.run.engine.run_category`), recorded as ``references`` (a ``ReferencesRecord``);
    ``vand_shots``: ``(k, run)`` of the VAND tree (``<k>shot/<run>``; zero-shot ``(0, 0)``)."""
    folder = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
    t_start = time.perf_counter()
    run = run_category(method, dataset, category, folder, resume=resume, progress=progress,
                       reference_bank=reference_bank)
    samples = run.samples
    raw = [r.map for r in run.results]
    sizes = [r.image_size for r in run.results]
    raw_scores = [r.image_score for r in run.results]

    t0 = time.perf_counter()
    norm_maps, scores, note, normalisation = category_maps_and_scale(raw, eval_size, category)
    del raw
    if note:
        log.warning(note)
    labels = [s.label for s in samples]
    counts = _label_counts(labels)
    judged = _Judged(notes=[] if note is None else [note])
    if all(lab is not None for lab in labels):
        judged = _judge(method, dataset, category, samples, sizes, labels, counts, scores, norm_maps,
                        normalisation, eval_size, judged.notes)
    t_metrics = time.perf_counter() - t0

    image_t = judged.thresholds["image_threshold"]
    verdicts = [verdict_of(n, image_t) for n in scores]
    cstore = folder.category(category)
    # image_score with repr precision: the verdict (score >= threshold) can be re-checked from the file
    cstore.write_scores([(s.key, "" if s.label is None else str(s.label), f"{r:.8g}", repr(float(n)), v or "")
                         for s, r, n, v in zip(samples, raw_scores, scores, verdicts)])
    masks_dir = (_write_masks(cstore, category, samples, norm_maps, sizes, judged.thresholds["pixel_threshold"],
                              judged.notes) if save_masks else None)
    vand_dir = None
    if vand_root is not None:
        from ..vand import VAND_EXPERIMENT, write_vand_category

        vand_dir = str(write_vand_category(vand_root, category, [s.stem for s in samples], norm_maps,
                                           scores, vand_experiment or VAND_EXPERIMENT, shots=vand_shots[0],
                                           run=vand_shots[1]))
    seconds = dict(run.seconds, total=time.perf_counter() - t_start, metrics=t_metrics)
    log.info("%s: %d images, %d computed, %d reused (%.1f s)", category, len(samples), run.computed, run.reused,
             seconds["total"])
    counted = None if image_t is None else {"OK": verdicts.count("OK"), "DEFECT": verdicts.count("DEFECT")}
    return CategoryResult(category, [s.key for s in samples], labels, np.asarray(raw_scores), scores,
                          judged.metrics, counts, run.computed, run.reused, seconds, vand_dir,
                          run.features_computed if method.needs_references and reference_bank is None else None,
                          judged.notes, judged.decision, counted, masks_dir, judged.unavailable,
                          run.fingerprint or None, judged.warnings, references)


def _label_counts(labels: list) -> dict[str, int]:
    return {"images": len(labels), "normal": sum(lab == 0 for lab in labels),
            "anomalous": sum(lab == 1 for lab in labels), "unlabelled": sum(lab is None for lab in labels)}


@dataclass
class _Judged:
    """A category's metrics and decision (a labelled category), or their absence."""

    metrics: dict = field(default_factory=lambda: {k: None for k in METRIC_KEYS})
    thresholds: dict = field(default_factory=lambda: {"image_threshold": None, "pixel_threshold": None})
    decision: Optional[DecisionRecord] = None
    unavailable: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def _judge(method: Method, dataset: AnomalyDataset, category: str, samples, sizes, labels, counts, scores,
           norm_maps, normalisation, eval_size: int, notes: list) -> _Judged:
    """A labelled category's metrics, F1-optimal thresholds and their decision with its quality; the
    metrics that cannot be computed, and a weak decision, named in the notes and warnings."""
    masks, defect_pixels = None, None
    if dataset.has_masks:
        masks = resize_masks([dataset.load_mask(s, hw) for s, hw in zip(samples, sizes)], eval_size)
        defect_pixels = bool(masks.any())
    metrics, thresholds = category_evaluation(labels, scores, masks, norm_maps)
    del masks
    reasons = unavailable_metrics(counts["normal"], counts["anomalous"], dataset.has_masks, defect_pixels)
    unavailable = {k: reasons.get(k, "undefined on this category's images") for k in METRIC_KEYS
                   if metrics.get(k) is None}
    quality = decision_quality(labels, scores, thresholds["image_threshold"], metrics.get("image_auroc"))
    decision = decision_record(thresholds, normalisation, method.name, method.fingerprint(category, None),
                               int(method.config.out_size), quality)
    warnings = list(describe_unavailable(category, unavailable))
    weak = _weak_warning(category, decision)
    if weak:
        warnings.append(weak)
    return _Judged(metrics, thresholds, decision, unavailable, notes + warnings, warnings)


def _write_masks(cstore, category: str, samples, norm_maps, sizes, pixel_threshold, notes: list) -> Optional[str]:
    """Each image's predicted defect mask (PNG 0/255, image size); none without a pixel threshold
    (said in ``notes``)."""
    if pixel_threshold is None:
        msg = (f"{category}: no predicted masks written: they need the pixel threshold of a labelled "
               "category with ground-truth masks")
        log.warning(msg)
        notes.append(msg)
        return None
    cstore.masks_dir.mkdir(parents=True, exist_ok=True)
    for s, m, hw in zip(samples, norm_maps, sizes):
        atomic_save_png(cstore.mask_path(s.key), mask_png(predicted_mask(m, pixel_threshold, hw)))
    return str(cstore.masks_dir)


def _with_overrides(config: SaaConfig, overrides: list[str]) -> SaaConfig:
    if not overrides:
        return config
    data = config.model_dump(mode="json", exclude_none=True)
    return config_from_dict(data, overrides, source="run configuration")


def _select_categories(config: SaaConfig, ds: AnomalyDataset, categories: Optional[Iterable[str]]) -> list[str]:
    present = ds.categories()
    if categories is None:
        missing = [c for c in present if c not in config.categories]
        if missing:
            raise ConfigError(
                f"the dataset at {ds.root} has categories the config does not describe: "
                f"{', '.join(missing)} (config categories: {', '.join(config.categories)}); "
                "add them to the config or choose categories with --categories"
            )
        chosen = present
    else:
        if isinstance(categories, str):
            categories = [categories]
        chosen = list(dict.fromkeys(str(c) for c in categories))
        if not chosen:
            raise ConfigError("no category selected (the category list is empty)")
        for c in chosen:
            config.category(c)  # ConfigError naming the closest category
        absent = [c for c in chosen if c not in present]
        if absent:
            raise DatasetError(
                f"category(ies) {', '.join(absent)} not found in the {ds.name} dataset at {ds.root} "
                f"(categories present: {', '.join(present)})"
            )
    for c in chosen:
        plain_name(c, "category")  # becomes a folder of the run: no '..', '/', absolute path
    return chosen


def _all_reduce_sum(values: list[int]) -> list[int]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


@dataclass
class _Run:
    """What :func:`evaluate_run` works with, resolved once (nothing written yet)."""

    config: SaaConfig
    config_file: Optional[str]
    method: Method
    dataset: AnomalyDataset
    ds_options: dict
    categories: list[str]
    folder: RunFolder
    eval_size: int
    settings_fingerprint: str = ""
    config_text: str = ""
    vand_root: Optional[Path] = None
    vand_experiment: Optional[str] = None
    references: References = field(default_factory=References)
    plans: dict = field(default_factory=dict)  # category -> BankPlan
    banks: dict = field(default_factory=dict)  # category -> ReferenceBank (opened under the lock)

    @property
    def out(self) -> Path:
        return self.folder.root

    def vand_shots(self, category: str) -> tuple[int, int]:
        """``(k, run)`` of the VAND tree: zero-shot ``(0, 0)``; with references the number of
        reference images and the seed run (0 unless --k-shot)."""
        bank = self.banks.get(category)
        if bank is None:
            return 0, 0
        k = bank.manifest.kshot
        return (k.k, k.run) if k is not None else (len(bank), 0)


def _needs_computing(run: _Run, resume: bool) -> bool:
    """Whether some image of the run has no stored result yet (so the method's models must load).
    Only checks that the files exist: a stored result of other settings is found stale later."""
    if not resume:
        return True
    for cat in run.categories:
        cs = run.folder.category(cat)
        for s in run.dataset.samples(cat):
            if not (cs.result_path(s.key).is_file() and cs.sidecar_path(s.key).is_file()):
                return True
    return False


def settings_fingerprint(method: Method, categories: Iterable[str], eval_size: int, kind: str, root: str,
                         ds_options: dict, references: Optional[dict[str, str]] = None) -> str:
    """What the files of a run folder depend on: the method and its settings per category (without
    the image set), the categories, the eval size, the dataset and, with references, each category's
    bank (``references``: category -> identity). A run with another one starts by removing the
    folder's old metrics (:meth:`saa.results.RunFolder.begin`)."""
    data = {"method": method.name, "fingerprints": {c: method.fingerprint(c, None) for c in categories},
            "eval_size": int(eval_size), "dataset": {"kind": kind, "root": str(root), "options": ds_options}}
    if references:
        data["references"] = dict(references)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _prepare(config, out_dir, categories, data_root, device, method, pipeline, resume: bool = True,
             references: Optional[References] = None) -> _Run:
    """The run's config (with the command line's overrides), method, dataset, categories, settings
    fingerprint and the text of its ``config.yaml`` (whose Reproduce line reruns exactly this run).
    Writes nothing: the folder is written under its lock (:func:`evaluate_run`)."""
    config_file = None
    if not isinstance(config, SaaConfig):
        config_file = str(config)
        config = load_config(config)
    overrides = []
    if data_root is not None:
        overrides.append(f"dataset.root={json.dumps(os.fspath(data_root))}")
    if device:
        overrides.append(f"models.device={device}")
    if method:
        overrides.append(f"method={json.dumps(str(method))}")
    config = _with_overrides(config, overrides)
    meth = make_method(config, pipeline)  # an unknown method fails here, before anything is written
    kind, root = config.dataset.kind, config.dataset.root
    if not kind:
        raise ConfigError("the config has no dataset.kind (mvtec, visa_public, visa_challenge, ksdd2, mtd, folder)")
    if not root:
        raise ConfigError("the config has no dataset.root: set it in the config or pass --data-root DIR")
    eval_size = eval_size_of(config)
    ds_options, _ = split_dataset_options(config.dataset.options)
    ds = build_dataset(kind, root, **ds_options)
    folder = RunFolder(out_dir)
    references = references or References()
    if references.mode is not None and not meth.needs_references:
        raise ConfigError(f"{meth.display_name} compares no images (it uses no references): --bank, --references and "
                          "--k-shot are for a method that does (--method lite, --preset improved)")
    if categories is None:
        categories = bank_categories(references)  # a single --bank: its category
    run = _Run(config, config_file, meth, ds, ds_options, _select_categories(config, ds, categories), folder,
               eval_size, references=references)
    run.plans = plan_banks(references, meth, ds, kind, root, run.categories, folder)
    if pipeline is None and meth.required_files() and _needs_computing(run, resume):
        from ..samples import require_model_files

        require_model_files(meth)  # every missing model file at once, before any model loads
    run.settings_fingerprint = settings_fingerprint(meth, run.categories, eval_size, kind, root, ds_options,
                                                    {c: p.identity for c, p in run.plans.items()} or None)
    run.config_text = meth.resolved_config().to_yaml(
        comment=f"Resolved configuration of this run ({datetime.now(timezone.utc).isoformat(timespec='seconds')}); "
                f"method {meth.name}: {meth.label}.\n"
                f"Reproduce: saa run {folder.config_yaml} --out {folder.root}"
                + (f" {references.command_words()}" if references.mode is not None else ""))
    if kind in ("visa_challenge", "vand_kshot"):
        run.vand_root, run.vand_experiment = folder.vand_root, vand_experiment_of(config)
    return run


def _compute_shard(run: _Run, rank: int, world: int, local: int, resume: bool, progress: bool) -> tuple[int, int]:
    """torchrun: this process's share of every category; (computed here, computed by all)."""
    import torch.distributed as dist

    method = run.method
    device = str(run.config.models.device)
    if device.startswith("cuda") and ":" not in device:
        method = make_method(_with_overrides(run.config, [f"models.device=cuda:{local}"]))
    computed = sum(run_category(method, run.dataset, cat, run.folder, rank=rank, world=world, resume=resume,
                                progress=progress, barrier=dist.barrier, collect=False,
                                reference_bank=run.banks.get(cat)).computed
                   for cat in run.categories)
    log.info("rank %d/%d computed %d images", rank, world, computed)
    return computed, _all_reduce_sum([computed])[0]


def _result(run: _Run, results: dict[str, CategoryResult], world: int, shard_computed: Optional[int],
            t_start: float) -> RunResult:
    """The content of ``metrics.json``, typed."""
    desc = run.method.describe()
    ds = run.config.dataset
    return RunResult(
        dataset={"kind": ds.kind, "root": str(ds.root), "options": run.ds_options},
        config_file=run.config_file,
        method=run.method.name,
        method_label=run.method.label,
        method_summary=desc.get("summary", run.method.label),
        method_settings=desc.get("settings", {}),
        preset=desc.get("preset"),
        world_size=world,
        device=str(run.config.models.device),
        out_size=int(run.config.out_size),
        eval_size=run.eval_size,
        unit="percent",
        metric_keys=list(METRIC_KEYS),
        labelled=all(r.counts["unlabelled"] == 0 for r in results.values()),
        categories={c: r.to_entry() for c, r in results.items()},
        mean=mean_metrics({c: r.metrics for c, r in results.items()}),
        totals={
            "images": sum(r.counts["images"] for r in results.values()),
            "computed": sum(r.computed for r in results.values()),
            "reused": sum(r.reused for r in results.values()),
            "computed_by_all_processes": shard_computed,
        },
        vand=({"root": str(run.vand_root), "experiment": run.vand_experiment,
               "track": "{}shot/{}".format(*run.vand_shots(run.categories[0])) if run.categories else "0shot/0"}
              if run.vand_root is not None else None),
        timings={"total_s": round(time.perf_counter() - t_start, 3),
                 "predict_s": round(sum(r.seconds["predict"] for r in results.values()), 3)},
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        settings_fingerprint=run.settings_fingerprint,
        config_sha256=hashlib.sha256(run.config_text.encode("utf-8")).hexdigest(),
        warnings=[w for r in results.values() for w in r.warnings],
        references=run_references(run.references),
    )


def _write_outputs(run: _Run, result: RunResult, print_table: bool) -> None:
    """``metrics.json`` / ``.csv`` / ``.md``, ``report.html`` and the console table."""
    data = result.to_json()
    title = run_title(run.method, result.dataset.kind, result.dataset.root, run.eval_size)
    labelled = result.labelled
    note = "" if labelled else "\nUnlabelled test set: no metrics (n/a).\n"
    refs = ""
    if result.references is not None:
        lines = [describe_references(c, e.references) for c, e in result.categories.items() if e.references]
        refs = ("\nEvery test image was scored against a reference bank of good parts only (not against the other "
                "test images):\n\n" + "".join(f"- {line}\n" for line in lines))
    warn = ""
    if result.warnings:
        warn = "\n## Warnings\n\n" + "".join(f"- {w}\n" for w in result.warnings)
    run.folder.write_metrics(result, format_table(data, "csv"),
                             f"# {title}\n\n{result.method_summary}\n{refs}\nValues in percent.\n{note}\n"
                             + format_table(data, "md") + warn)
    try:  # the HTML report is a convenience: a failure there never costs the results above
        from ..report import write_report

        write_report(run.out, in_run=True)
    except Exception as e:
        log.warning("report.html not written (%s); the metrics files are complete. Retry: saa report %s", e, run.out)
    if print_table:
        print(title + " — values in percent" + (" (unlabelled set: no metrics)" if not labelled else ""))
        print(format_table(data, "text"), end="")
    for w in result.warnings:
        if print_table:
            print(f"warning: {w}")
        else:
            log.warning(w)


def _take_folder(run: _Run, rank: int, world: int):
    """The run folder's lock (rank 0 takes it for every process of a torchrun); every process raises
    the same one-line error when it is held by another run."""
    lock, error = None, None
    if rank == 0:
        lock = run.folder.lock()
        try:
            note = lock.acquire()
        except SaaError as e:
            error, lock = e, None
        else:
            if note:
                log.warning(note)
    if world > 1:
        failed = _all_reduce_sum([1 if error is not None else 0])[0]
        if failed and error is None:
            error = SaaError(f"{run.out}: rank 0 could not take the run folder (see its message); stopping")
    if error is not None:
        raise error
    return lock


def evaluate_run(config: Union[SaaConfig, str, os.PathLike], out_dir: Union[str, os.PathLike],
                 categories: Optional[Iterable[str]] = None, data_root: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[str] = None, resume: bool = True, progress: bool = True,
                 pipeline=None, print_table: bool = True, method: Optional[str] = None,
                 save_masks: bool = False, references: Optional[References] = None,
                 vand_root: Optional[Union[str, os.PathLike]] = None) -> dict[str, Any]:
    """Evaluate a config on its dataset; write the run files in ``out_dir`` (layout:
    :class:`saa.results.RunFolder`).

    ``data_root`` replaces ``dataset.root``, ``device`` ``models.device`` and ``method`` the
    config's ``method`` (all recorded in the written ``config.yaml``, so its Reproduce line runs
    the same). ``categories``: a subset (default: every category present under the root).
    ``resume=False`` recomputes every image. ``pipeline``: a :class:`~saa.pipeline.SAAPipeline`
    whose models are reused by the ``saa`` method. ``save_masks``: write the predicted defect masks
    (see :func:`evaluate_category`). ``references``: score every image against a bank of good parts
    (:class:`saa.run.references.References`: ``--bank`` / ``--references`` / ``--k-shot``). Another run
    writing ``out_dir`` is a one-line error naming it. ``vand_root``: where the VAND submission tree
    goes (default ``OUT/vand``; ``run_VAND_workshop.py --k-shot`` gathers its seed runs in one).

    Returns the content of ``metrics.json``.
    """
    t_start = time.perf_counter()
    run = _prepare(config, out_dir, categories, data_root, device, method, pipeline, resume, references)
    if vand_root is not None and run.vand_root is not None:
        run.vand_root = Path(vand_root)
    rank, world, local = distributed_context()
    lock = _take_folder(run, rank, world)
    try:
        if rank == 0:
            for n in run.folder.begin(run.settings_fingerprint, run.config_text, lock.command):
                log.warning(n)
        if run.plans:  # rank 0 builds (or reuses) the banks under the lock; every process opens them
            run.banks = make_banks(run.plans, run.method, rank=rank, world=world, progress=progress,
                                   agree=(lambda failed: _all_reduce_sum([int(failed)])[0] > 0) if world > 1 else None)
        shard_computed: Optional[int] = None
        if world > 1:
            # every process computes its share of each category; rank 0 then evaluates (reusing all)
            import torch.distributed as dist

            computed, shard_computed = _compute_shard(run, rank, world, local, resume, progress)
            dist.barrier()
            if rank != 0:
                dist.barrier()  # wait for rank 0's evaluation, so every process ends together
                return {"rank": rank, "world_size": world, "computed": computed}
            resume = True  # the maps the shards have just computed are this run's
        results = {cat: evaluate_category(run.method, run.dataset, cat, run.folder, eval_size=run.eval_size,
                                          resume=resume, progress=progress, vand_root=run.vand_root,
                                          vand_experiment=run.vand_experiment, save_masks=save_masks,
                                          reference_bank=run.banks.get(cat),
                                          references=(references_record(run.plans[cat], run.banks[cat])
                                                      if cat in run.banks else None),
                                          vand_shots=run.vand_shots(cat))
                   for cat in run.categories}
        result = _result(run, results, world, shard_computed, t_start)
        _write_outputs(run, result, print_table)
        run.folder.complete()
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        return result.to_json()
    finally:
        if lock is not None:
            lock.release()
