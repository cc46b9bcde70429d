"""Benchmark runs: the pipeline over a whole dataset, resumable, then the SPEC §5 metrics.

:func:`evaluate_run` is what ``saa run`` and the ``run_*.py`` scripts call::

    cfg = load_config("configs/mvtec.yaml")
    result = evaluate_run(cfg, "results/mvtec")              # all categories present under the root
    result = evaluate_run(cfg, "results/mvtec", categories=["bottle"], data_root="/data/mvtec")

File layout of a run (``out_dir``)::

    config.yaml                       the resolved configuration (reload it with ``saa run``)
    metrics.csv / metrics.md          one row per category + ``mean`` (percent, 2 decimals, ``n/a``)
    report.html                       the HTML report (saa.report; a failure there only logs a warning)
    metrics.json                      every number (percent, full precision; null = undefined),
                                      image counts, computed/reused counts, timings; per labelled
                                      category its ``decision`` (thresholds, normalisation; saa.verdict)
    <category>/maps/<key>.npz         per image: ``map`` (out_size², float32, raw pipeline output),
                                      ``image_score`` (raw), ``image_size``, ``fingerprint``, ``image``
    <category>/maps/<key>.json        the image's regions (``Prediction.regions_dict()``)
    <category>/scores.csv             key, label, raw score, normalised image score, verdict
    <category>/masks/<key>.png        ``save_masks=True``: predicted defect pixels (0/255, image size)
    <category>/cross_features/        cross-image saliency only (preset ``improved``): pass-1 features,
                                      one file per image, deleted once every map of the category exists
    vand/<experiment>/0shot/0/...     kind ``visa_challenge`` only: the VAND 2023 tree (saa.vand)

``<key>`` is :func:`saa.naming.stored_stem` of the sample key (``<defect_type>/<stem>`` with ``/``
written as ``__``; a key that would be ambiguous that way, or too long, gets a hash suffix).

Resume (every method): an image whose ``.npz`` exists, is readable, has a map of the current
``out_size``, was made by the same method with the same settings (the method's fingerprint: for
``saa`` the preset, behaviour, models, prompts and the category's properties; the device and
``weights_dir`` are not part of it), for the same key from the same image file (size and mtime), and
has its ``.json`` sidecar, is not recomputed. A corrupt, partial or stale file is recomputed.
Per-image files are written atomically, so an interrupted run loses at most the image in progress.

A method with references (``lite``; ``saa`` with cross-image saliency, e.g. preset ``improved``):
a map also depends on the other images of its category, so the fingerprint then also covers the
category's image set (keys, file sizes and mtimes): adding, removing or replacing an image
recomputes the category's maps. When some image of a category must be computed, pass 1 first
stores the method's features of EVERY image of the category (reusing stored ones), then pass 2
predicts the missing images against them (saa.saliency.bank); a fully resumed category loads no
model. Under torchrun each process computes its share of the features, all wait for each other,
then each computes its share of the maps against all features.

Evaluation per category (SPEC §5): the raw maps are resized to ``eval_size`` (option
``dataset.options.eval_size``, default 400; bicubic for maps, nearest for masks), normalised
jointly with :func:`saa.metrics.normalize_maps`, the image score is the maximum of the normalised
map, then :func:`saa.metrics.compute_all`. Unlabelled sets (``visa_challenge``) get no metrics.
The dataset row is the unweighted mean over categories of the defined values.

Evaluator options read from ``dataset.options`` (removed before the dataset is built):
``eval_size`` (int, default 400) and ``vand_experiment`` (default ``visa_challenge``).

This module keeps the names of the run API in one place; the code lives in :mod:`saa.run`
(engine, runner), :mod:`saa.results` (the store), :mod:`saa.evaluation` (the maths) and
:mod:`saa.methods` (what computes a map).
"""
from __future__ import annotations

from .evaluation import (DEFAULT_EVAL_SIZE, EVAL_OPTION_KEYS, METRIC_KEYS, METRIC_LABELS, category_metrics,
                         eval_size_of, evaluation_maps, format_table, mean_metrics, resize_maps, resize_masks,
                         split_dataset_options)
from .methods.saa_plus import config_fingerprint
from .results import ImageResult, load_image_result, map_file_name, map_path, save_image_result
from .run.engine import distributed_context, run_category
from .run.runner import CategoryResult, evaluate_category, evaluate_run

__all__ = [
    "METRIC_KEYS", "METRIC_LABELS", "EVAL_OPTION_KEYS", "DEFAULT_EVAL_SIZE", "ImageResult", "CategoryResult",
    "split_dataset_options", "eval_size_of", "map_file_name", "map_path", "config_fingerprint",
    "cross_image_enabled", "save_image_result", "load_image_result", "resize_maps", "resize_masks",
    "evaluation_maps", "category_metrics", "mean_metrics", "format_table", "evaluate_category", "evaluate_run",
    "run_category", "distributed_context",
]


def cross_image_enabled(config) -> bool:
    """Whether the config combines the saliency with cross-image saliency (preset ``improved``)."""
    return bool(config.resolved_behaviour().cross_image_saliency)
