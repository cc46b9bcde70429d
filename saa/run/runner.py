"""A whole benchmark run: every category through :func:`saa.run.engine.run_category`, then the
SPEC §5 metrics (:mod:`saa.evaluation`), the tables, ``metrics.json``, ``config.yaml`` and the
report. What ``saa run`` and the ``run_*.py`` scripts call (:func:`evaluate_run`).
"""
from __future__ import annotations

import csv
import inspect
import io
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
from ..errors import ConfigError, DatasetError
from ..evaluation import (METRIC_KEYS, category_evaluation, category_maps_and_scale, eval_size_of, format_table,
                          mean_metrics, resize_masks, split_dataset_options, vand_experiment_of)
from ..image_io import atomic_save_png, atomic_write_text
from ..methods import Method, build_method, get_method
from ..naming import plain_name, stored_stem
from ..results import ResultStore
from ..verdict import DECISION_KEY, decision_record, mask_png, predicted_mask, verdict_of
from .engine import distributed_context, run_category

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
    decision: Optional[dict[str, Any]] = None  # thresholds + normalisation (labelled categories)
    verdicts: Optional[dict[str, int]] = None  # {"OK": n, "DEFECT": m} at the image threshold
    masks_dir: Optional[str] = None  # where the predicted masks were written (--save-masks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "counts": self.counts,
            "computed": self.computed,
            "reused": self.reused,
            **({"features_computed": self.features_computed} if self.features_computed is not None else {}),
            **({"notes": self.notes} if self.notes else {}),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            **({"vand_dir": self.vand_dir} if self.vand_dir else {}),
            **({DECISION_KEY: self.decision} if self.decision is not None else {}),
            **({"verdicts": self.verdicts} if self.verdicts is not None else {}),
            **({"masks_dir": self.masks_dir} if self.masks_dir else {}),
        }


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


def evaluate_category(method: Method, dataset: AnomalyDataset, category: str, out_dir: Union[str, os.PathLike],
                      eval_size: int = 400, resume: bool = True, progress: bool = True,
                      vand_root: Optional[Union[str, os.PathLike]] = None,
                      vand_experiment: Optional[str] = None, save_masks: bool = False) -> CategoryResult:
    """Run (or reuse) every image of ``category`` with ``method``, then normalise and compute its
    metrics and F1-optimal thresholds (labelled categories, :mod:`saa.verdict`); write
    ``<category>/scores.csv`` with each image's verdict (and the VAND tree under ``vand_root``).
    ``save_masks``: also write each image's predicted defect mask (PNG 0/255, image size) as
    ``<category>/masks/<stored stem>.png`` (needs the pixel threshold: a labelled set with masks)."""
    store = ResultStore(out_dir)
    t_start = time.perf_counter()
    run = run_category(method, dataset, category, store, resume=resume, progress=progress)
    samples = run.samples
    raw = [r.map for r in run.results]
    sizes = [r.image_size for r in run.results]
    raw_scores = [r.image_score for r in run.results]

    t0 = time.perf_counter()
    norm_maps, scores, note, normalisation = category_maps_and_scale(raw, eval_size, category)
    del raw
    notes = [] if note is None else [note]
    if note:
        log.warning(note)
    labels = [s.label for s in samples]
    labelled = all(lab is not None for lab in labels)
    counts = {
        "images": len(samples),
        "normal": sum(lab == 0 for lab in labels),
        "anomalous": sum(lab == 1 for lab in labels),
        "unlabelled": sum(lab is None for lab in labels),
    }
    decision = None
    thresholds = {"image_threshold": None, "pixel_threshold": None}
    if labelled:
        masks = None
        if dataset.has_masks:
            masks = resize_masks([dataset.load_mask(s, hw) for s, hw in zip(samples, sizes)], eval_size)
        metrics, thresholds = category_evaluation(labels, scores, masks, norm_maps)
        del masks
        decision = decision_record(thresholds, normalisation, method.name, method.fingerprint(category, None),
                                   int(method.config.out_size))
    else:
        metrics = {k: None for k in METRIC_KEYS}
    t_metrics = time.perf_counter() - t0

    image_t = thresholds["image_threshold"]
    verdicts = [verdict_of(n, image_t) for n in scores]
    # image_score with repr precision: the verdict (score >= threshold) can be re-checked from the file
    rows = [("key", "label", "raw_score", "image_score", "verdict")]
    rows += [(s.key, "" if s.label is None else str(s.label), f"{r:.8g}", repr(float(n)), v or "")
             for s, r, n, v in zip(samples, raw_scores, scores, verdicts)]
    cstore = store.category(category)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(cstore.scores_csv, buf.getvalue())

    masks_dir = None
    if save_masks:
        if thresholds["pixel_threshold"] is None:
            msg = (f"{category}: no predicted masks written: they need the pixel threshold of a labelled "
                   "category with ground-truth masks")
            log.warning(msg)
            notes.append(msg)
        else:
            folder = store.path(category, "masks")
            folder.mkdir(parents=True, exist_ok=True)
            for s, m, hw in zip(samples, norm_maps, sizes):
                target = store.path(category, "masks", stored_stem(s.key) + ".png")
                atomic_save_png(target, mask_png(predicted_mask(m, thresholds["pixel_threshold"], hw)))
            masks_dir = str(folder)

    vand_dir = None
    if vand_root is not None:
        from ..vand import VAND_EXPERIMENT, write_vand_category

        vand_dir = str(write_vand_category(vand_root, category, [s.stem for s in samples], norm_maps,
                                           scores, vand_experiment or VAND_EXPERIMENT))
    seconds = dict(run.seconds, total=time.perf_counter() - t_start, metrics=t_metrics)
    log.info("%s: %d images, %d computed, %d reused (%.1f s)", category, len(samples), run.computed, run.reused,
             seconds["total"])
    counted = None if image_t is None else {"OK": verdicts.count("OK"), "DEFECT": verdicts.count("DEFECT")}
    return CategoryResult(category, [s.key for s in samples], labels, np.asarray(raw_scores), scores,
                          metrics, counts, run.computed, run.reused, seconds, vand_dir,
                          run.features_computed if method.needs_references else None, notes, decision, counted,
                          masks_dir)


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
    """What :func:`evaluate_run` works with, resolved once."""

    config: SaaConfig
    config_file: Optional[str]
    method: Method
    dataset: AnomalyDataset
    ds_options: dict
    categories: list[str]
    out: Path
    eval_size: int
    vand_root: Optional[Path] = None
    vand_experiment: Optional[str] = None


def _needs_computing(run: _Run, resume: bool) -> bool:
    """Whether some image of the run has no stored result yet (so the method's models must load).
    Only checks that the files exist: a stored result of other settings is found stale later."""
    if not resume:
        return True
    store = ResultStore(run.out)
    for cat in run.categories:
        cs = store.category(cat)
        for s in run.dataset.samples(cat):
            if not (cs.result_path(s.key).is_file() and cs.sidecar_path(s.key).is_file()):
                return True
    return False


def _prepare(config, out_dir, categories, data_root, device, method, pipeline, resume: bool = True) -> _Run:
    """The run's config (with the command line's overrides), method, dataset and categories; the
    output folder with ``config.yaml`` (its Reproduce line reruns exactly this run)."""
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
    run = _Run(config, config_file, meth, ds, ds_options, _select_categories(config, ds, categories), Path(out_dir),
               eval_size)
    if pipeline is None and meth.required_files() and _needs_computing(run, resume):
        from ..samples import require_model_files

        require_model_files(meth)  # every missing model file at once, before any model loads
    run.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.out / "config.yaml", meth.resolved_config().to_yaml(
        comment=f"Resolved configuration of this run ({datetime.now(timezone.utc).isoformat(timespec='seconds')}); "
                f"method {meth.name}: {meth.label}.\n"
                f"Reproduce: saa run {run.out / 'config.yaml'} --out {run.out}"))
    if kind == "visa_challenge":
        run.vand_root, run.vand_experiment = run.out / "vand", vand_experiment_of(config)
    return run


def _compute_shard(run: _Run, rank: int, world: int, local: int, resume: bool, progress: bool) -> tuple[int, int]:
    """torchrun: this process's share of every category; (computed here, computed by all)."""
    import torch.distributed as dist

    method = run.method
    device = str(run.config.models.device)
    if device.startswith("cuda") and ":" not in device:
        method = make_method(_with_overrides(run.config, [f"models.device=cuda:{local}"]))
    store = ResultStore(run.out)
    computed = sum(run_category(method, run.dataset, cat, store, rank=rank, world=world, resume=resume,
                                progress=progress, barrier=dist.barrier, collect=False).computed
                   for cat in run.categories)
    log.info("rank %d/%d computed %d images", rank, world, computed)
    return computed, _all_reduce_sum([computed])[0]


def _result_dict(run: _Run, results: dict[str, CategoryResult], world: int, shard_computed: Optional[int],
                 t_start: float) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    desc = run.method.describe()
    ds = run.config.dataset
    return {
        "dataset": {"kind": ds.kind, "root": str(ds.root), "options": run.ds_options},
        "config_file": run.config_file,
        "method": run.method.name,
        "method_label": run.method.label,
        "method_summary": desc.get("summary", run.method.label),
        "method_settings": desc.get("settings", {}),
        "preset": desc.get("preset"),
        "world_size": world,
        "device": run.config.models.device,
        "out_size": int(run.config.out_size),
        "eval_size": run.eval_size,
        "unit": "percent",
        "metric_keys": list(METRIC_KEYS),
        "labelled": all(r.counts["unlabelled"] == 0 for r in results.values()),
        "categories": {c: r.to_dict() for c, r in results.items()},
        "mean": mean_metrics({c: r.metrics for c, r in results.items()}),
        "totals": {
            "images": sum(r.counts["images"] for r in results.values()),
            "computed": sum(r.computed for r in results.values()),
            "reused": sum(r.reused for r in results.values()),
            **({"computed_by_all_processes": shard_computed} if shard_computed is not None else {}),
        },
        "vand": ({"root": str(run.vand_root), "experiment": run.vand_experiment}
                 if run.vand_root is not None else None),
        "timings": {"total_s": round(time.perf_counter() - t_start, 3),
                    "predict_s": round(sum(r.seconds["predict"] for r in results.values()), 3)},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_outputs(run: _Run, result: dict[str, Any], print_table: bool) -> None:
    """``metrics.json`` / ``.csv`` / ``.md``, ``report.html`` and the console table."""
    out = run.out
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "metrics.csv", format_table(result, "csv"))
    title = run_title(run.method, result["dataset"]["kind"], result["dataset"]["root"], run.eval_size)
    labelled = result["labelled"]
    note = "" if labelled else "\nUnlabelled test set: no metrics (n/a).\n"
    atomic_write_text(out / "metrics.md", f"# {title}\n\n{result['method_summary']}\n\nValues in percent.\n{note}\n"
                      + format_table(result, "md"))
    try:  # the HTML report is a convenience: a failure there never costs the results above
        from ..report import write_report

        write_report(out)
    except Exception as e:
        log.warning("report.html not written (%s); the metrics files are complete. Retry: saa report %s", e, out)
    if print_table:
        print(title + " — values in percent" + (" (unlabelled set: no metrics)" if not labelled else ""))
        print(format_table(result, "text"), end="")


def evaluate_run(config: Union[SaaConfig, str, os.PathLike], out_dir: Union[str, os.PathLike],
                 categories: Optional[Iterable[str]] = None, data_root: Optional[Union[str, os.PathLike]] = None,
                 device: Optional[str] = None, resume: bool = True, progress: bool = True,
                 pipeline=None, print_table: bool = True, method: Optional[str] = None,
                 save_masks: bool = False) -> dict[str, Any]:
    """Evaluate a config on its dataset; write the run files in ``out_dir`` (the layout: :mod:`saa.results`).

    ``data_root`` replaces ``dataset.root``, ``device`` ``models.device`` and ``method`` the
    config's ``method`` (all recorded in the written ``config.yaml``, so its Reproduce line runs
    the same). ``categories``: a subset (default: every category present under the root).
    ``resume=False`` recomputes every image. ``pipeline``: a :class:`~saa.pipeline.SAAPipeline`
    whose models are reused by the ``saa`` method. ``save_masks``: write the predicted defect masks
    (see :func:`evaluate_category`).

    Returns the content of ``metrics.json``.
    """
    t_start = time.perf_counter()
    run = _prepare(config, out_dir, categories, data_root, device, method, pipeline, resume)
    rank, world, local = distributed_context()
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
    results = {cat: evaluate_category(run.method, run.dataset, cat, run.out, eval_size=run.eval_size, resume=resume,
                                      progress=progress, vand_root=run.vand_root,
                                      vand_experiment=run.vand_experiment, save_masks=save_masks)
               for cat in run.categories}
    result = _result_dict(run, results, world, shard_computed, t_start)
    _write_outputs(run, result, print_table)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return result
