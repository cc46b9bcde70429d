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
                                      image counts, computed/reused counts, timings
    <category>/maps/<key>.npz         per image: ``map`` (out_size², float32, raw pipeline output),
                                      ``image_score`` (raw), ``image_size``, ``fingerprint``, ``image``
    <category>/maps/<key>.json        the image's regions (``Prediction.regions_dict()``)
    <category>/scores.csv             key, label, raw score, normalised image score
    <category>/cross_features/        cross-image saliency only (preset ``improved``): pass-1 features,
                                      one file per image, deleted once every map of the category exists
    vand/<experiment>/0shot/0/...     kind ``visa_challenge`` only: the VAND 2023 tree (saa.vand)

``<key>`` is the sample key (``<defect_type>/<stem>``) with ``/`` replaced by ``__``.

Resume: an image whose ``.npz`` exists, is readable, has a map of the current ``out_size`` and was
made with the same settings (a fingerprint of preset, behaviour, models, prompts and the
category's properties; the device and ``weights_dir`` are not part of it) is not recomputed.
A corrupt, partial or stale file is recomputed. Per-image files are written atomically, so an
interrupted run loses at most the image in progress.

Cross-image saliency (``behaviour.cross_image_saliency``, e.g. preset ``improved``): a map also
depends on the other images of its category, so the fingerprint then also covers the
``cross_image_*`` settings and the category's sample keys. When some image of a category must be
computed, pass 1 first stores the saliency features of EVERY image of the category (reusing
stored ones), then pass 2 predicts the missing images against them (saa.cross_bank); a fully
resumed category loads no model. Under torchrun each process computes its share of the features,
all wait for each other, then each computes its share of the maps against all features.

Evaluation per category (SPEC §5): the raw maps are resized to ``eval_size`` (option
``dataset.options.eval_size``, default 400; bicubic for maps, nearest for masks), normalised
jointly with :func:`saa.metrics.normalize_maps`, the image score is the maximum of the normalised
map, then :func:`saa.metrics.compute_all`. Unlabelled sets (``visa_challenge``) get no metrics.
The dataset row is the unweighted mean over categories of the defined values.

Evaluator options read from ``dataset.options`` (removed before the dataset is built):
``eval_size`` (int, default 400) and ``vand_experiment`` (default ``visa_challenge``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from .config import CROSS_IMAGE_KEYS, SaaConfig, config_from_dict, load_config
from .datasets import AnomalyDataset, Sample, build_dataset
from .errors import ConfigError, DatasetError
from .image_io import atomic_write_bytes, atomic_write_text, prefetch, read_rgb
from .metrics import compute_all, image_metrics, normalize_maps

__all__ = [
    "METRIC_KEYS",
    "METRIC_LABELS",
    "EVAL_OPTION_KEYS",
    "DEFAULT_EVAL_SIZE",
    "ImageResult",
    "CategoryResult",
    "split_dataset_options",
    "eval_size_of",
    "map_file_name",
    "map_path",
    "config_fingerprint",
    "cross_image_enabled",
    "save_image_result",
    "load_image_result",
    "resize_maps",
    "resize_masks",
    "evaluation_maps",
    "category_metrics",
    "mean_metrics",
    "format_table",
    "evaluate_category",
    "evaluate_run",
]

log = logging.getLogger("saa.evaluator")

#: Metric keys in table order (values of :func:`saa.metrics.compute_all`).
METRIC_KEYS = (
    "image_auroc", "image_ap", "image_f1_max",
    "pixel_auroc", "pixel_ap", "pixel_f1_max",
    "aupro", "region_f1_max",
)
#: Short column titles of the printed / markdown tables.
METRIC_LABELS = {
    "image_auroc": "I-AUROC", "image_ap": "I-AP", "image_f1_max": "I-F1max",
    "pixel_auroc": "P-AUROC", "pixel_ap": "P-AP", "pixel_f1_max": "P-F1max",
    "aupro": "AUPRO@0.3", "region_f1_max": "R-F1max",
}
#: Keys of ``dataset.options`` that belong to the evaluator, not to the dataset class.
EVAL_OPTION_KEYS = ("eval_size", "vand_experiment")
DEFAULT_EVAL_SIZE = 400
NA = "n/a"

_NPZ_KEYS = ("map", "image_score", "image_size", "fingerprint")


# ----------------------------------------------------------------------------------------------
# options, names, fingerprints


def split_dataset_options(options: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """``(dataset class options, evaluator options)`` from a config's ``dataset.options``."""
    options = dict(options or {})
    ev = {k: options.pop(k) for k in EVAL_OPTION_KEYS if k in options}
    return options, ev


def eval_size_of(config: SaaConfig) -> int:
    """``dataset.options.eval_size`` as a positive int (default 400)."""
    value = (config.dataset.options or {}).get("eval_size", DEFAULT_EVAL_SIZE)
    if value is None:
        return DEFAULT_EVAL_SIZE
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}")
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}") from None
    if size != float(value) or size < 1:
        raise ConfigError(f"dataset.options.eval_size must be a positive integer, got {value!r}")
    return size


def _vand_experiment_of(config: SaaConfig) -> str:
    from .vand import VAND_EXPERIMENT

    value = (config.dataset.options or {}).get("vand_experiment", VAND_EXPERIMENT)
    if not isinstance(value, str) or not value.strip() or "/" in value or "\\" in value:
        raise ConfigError(f"dataset.options.vand_experiment must be a plain folder name, got {value!r}")
    return value


def map_file_name(key: str) -> str:
    """File name (without folder) of a sample's result: the key with ``/`` replaced by ``__``."""
    return key.replace("/", "__") + ".npz"


def map_path(out_dir: str | os.PathLike, category: str, key: str) -> Path:
    return Path(out_dir) / category / "maps" / map_file_name(key)


def cross_image_enabled(config: SaaConfig) -> bool:
    """Whether the config combines the saliency with cross-image saliency (preset ``improved``)."""
    return bool(config.resolved_behaviour().cross_image_saliency)


def config_fingerprint(config: SaaConfig, category: str, images: Optional[Sequence[str]] = None) -> str:
    """Hash of everything that changes a category's maps (device and weights_dir excluded).

    With cross-image saliency on, a map also depends on the other images of the category: pass
    their sample ``images`` keys (they are then part of the hash). With it off, the
    ``cross_image_*`` switches and ``images`` change nothing and are left out (so the hashes of
    ``official`` and ``paper`` runs are those of earlier versions).
    """
    models = config.models.model_dump(mode="json")
    models.pop("device", None)
    models.pop("weights_dir", None)
    behaviour = config.resolved_behaviour().model_dump(mode="json")
    cross = bool(behaviour["cross_image_saliency"])
    if not cross:
        for key in CROSS_IMAGE_KEYS:
            behaviour.pop(key, None)
    data = {
        "behaviour": behaviour,
        "out_size": config.out_size,
        "models": models,
        "prompts": [list(p) for p in config.language_prompts(category)],
        "category": config.category(category).model_dump(mode="json"),
    }
    if cross and images is not None:
        data["cross_image_set"] = hashlib.sha256("\n".join(sorted(map(str, images))).encode("utf-8")).hexdigest()
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# per-image files


@dataclass
class ImageResult:
    """The raw pipeline result of one image, as stored on disk."""

    map: np.ndarray  # (out_size, out_size) float32
    image_score: float  # raw (max of the raw map)
    image_size: tuple[int, int]  # (H, W) of the original image


def save_image_result(path: str | os.PathLike, result: ImageResult, fingerprint: str,
                      image: str = "", regions: Optional[dict] = None) -> None:
    """Write the ``.npz`` (and the regions ``.json`` beside it, first) atomically."""
    path = Path(path)
    if regions is not None:
        atomic_write_text(path.with_name(path.name[:-4] + ".json"), json.dumps(regions, indent=1, default=_json_default))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        map=np.asarray(result.map, dtype=np.float32),
        image_score=np.float64(result.image_score),
        image_size=np.asarray(result.image_size, dtype=np.int64),
        fingerprint=np.str_(fingerprint),
        image=np.str_(image),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_image_result(path: str | os.PathLike, out_size: Optional[int] = None,
                      fingerprint: Optional[str] = None) -> Optional[ImageResult]:
    """The stored result, or None when the file is missing, unreadable, partial or stale."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if any(k not in z.files for k in _NPZ_KEYS):
                return None
            m = np.asarray(z["map"], dtype=np.float32)
            score = float(z["image_score"])
            size = tuple(int(v) for v in np.asarray(z["image_size"]).reshape(-1))
            fp = str(z["fingerprint"])
    except Exception as e:  # truncated zip, bad header, wrong dtype ...
        log.debug("%s: unreadable (%s): recomputing", path, e)
        return None
    if m.ndim != 2 or len(size) != 2 or min(size) < 1 or not np.isfinite(m).all() or not math.isfinite(score):
        return None
    if out_size is not None and m.shape != (out_size, out_size):
        return None
    if fingerprint is not None and fp != fingerprint:
        return None
    return ImageResult(m, score, (size[0], size[1]))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ----------------------------------------------------------------------------------------------
# evaluation maths


def resize_maps(maps: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) float32; bicubic (``cv2.INTER_CUBIC``) where a map has another size."""
    out = np.empty((len(maps), size, size), dtype=np.float32)
    for i, m in enumerate(maps):
        m = np.asarray(m, dtype=np.float32)
        out[i] = m if m.shape == (size, size) else cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC)
    return out


def resize_masks(masks: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) bool; nearest neighbour."""
    out = np.empty((len(masks), size, size), dtype=bool)
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.shape == (size, size):
            out[i] = m != 0
        else:
            out[i] = cv2.resize((m != 0).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    return out


def evaluation_maps(raw_maps: Sequence[np.ndarray] | np.ndarray, eval_size: int) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §5 steps 1–3: ``(normalised maps (N, E, E) float32 in [0, 1], image scores (N,))``.

    Maps are resized to ``eval_size`` first (bicubic), then normalised jointly over the category,
    so the normalised values stay within [0, 1] and the largest pixel of the category is 1.
    """
    maps = normalize_maps(resize_maps(raw_maps, eval_size))
    scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64) if len(maps) else np.zeros(0)
    return maps, scores


def _pct(value: float) -> Optional[float]:
    v = float(value)
    return None if math.isnan(v) else 100.0 * v


def category_metrics(labels: Sequence[int], scores: np.ndarray, masks: Optional[np.ndarray],
                     maps: np.ndarray) -> dict[str, Optional[float]]:
    """All metrics of one category in percent (None where undefined). ``masks=None``: image only."""
    labels = np.asarray(labels, dtype=np.int64)
    if masks is None:
        img = image_metrics(labels, scores)
        values = {k: float("nan") for k in METRIC_KEYS}
        values.update(image_auroc=img["auroc"], image_ap=img["ap"], image_f1_max=img["f1_max"])
    else:
        values = compute_all(labels, scores, masks, maps)
    return {k: _pct(values[k]) for k in METRIC_KEYS}


def mean_metrics(per_category: Mapping[str, Mapping[str, Optional[float]]]) -> dict[str, Optional[float]]:
    """Unweighted mean over categories of each metric; undefined (None/nan) values are left out."""
    out: dict[str, Optional[float]] = {}
    for k in METRIC_KEYS:
        vals = [v[k] for v in per_category.values() if v.get(k) is not None and not math.isnan(v[k])]
        out[k] = float(np.mean(vals)) if vals else None
    return out


# ----------------------------------------------------------------------------------------------
# tables


def _cell(value: Optional[float]) -> str:
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    rows = []
    for cat, info in result["categories"].items():
        rows.append((cat, str(info["counts"]["images"]), [_cell(info["metrics"][k]) for k in METRIC_KEYS]))
    total = sum(info["counts"]["images"] for info in result["categories"].values())
    rows.append(("mean", str(total), [_cell(result["mean"][k]) for k in METRIC_KEYS]))
    return rows


def format_table(result: Mapping[str, Any], fmt: str = "text") -> str:
    """The per-category table of a run result: ``text`` (aligned), ``md`` or ``csv``.

    Values are percentages with 2 decimals; undefined ones are ``n/a``. The ``images`` column of
    the ``mean`` row is the total number of images.
    """
    rows = _rows(result)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["category", "images", *METRIC_KEYS])
        for cat, n, cells in rows:
            w.writerow([cat, n, *cells])
        return buf.getvalue()
    header = ["category", "images", *(METRIC_LABELS[k] for k in METRIC_KEYS)]
    body = [[cat, n, *cells] for cat, n, cells in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for r in body:
            cells = [f"**{c}**" if r[0] == "mean" else c for c in r]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown table format {fmt!r} (text, md or csv)")
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r))
    sep = "  ".join("-" * w for w in widths)
    out = [line(header), sep]
    for r in body:
        if r[0] == "mean":
            out.append(sep)
        out.append(line(r))
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# one category


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "counts": self.counts,
            "computed": self.computed,
            "reused": self.reused,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            **({"vand_dir": self.vand_dir} if self.vand_dir else {}),
        }


def lite_fingerprint(config: SaaConfig, lite) -> str:
    """Hash of what changes a lite-mode map (saa.lite.LitePipeline settings and out_size)."""
    data = {"method": "lite", "out_size": config.out_size,
            "lite": {k: v for k, v in vars(lite).items() if isinstance(v, (int, float, str, type(None)))}}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "lite-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:11]


def compute_lite_category(lite, config: SaaConfig, dataset: AnomalyDataset, category: str,
                          out_dir: str | os.PathLike, resume: bool = True) -> int:
    """Lite mode (saa.lite): maps of a whole category at once (each image is scored against the
    others), stored like the full pipeline's per-image results. Returns how many were written."""
    import cv2

    out_size = int(config.out_size)
    fp = lite_fingerprint(config, lite)
    samples = dataset.samples(category)
    maps_dir = Path(out_dir) / category / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    missing = [i for i, s in enumerate(samples)
               if not resume or load_image_result(maps_dir / map_file_name(s.key), out_size, fp) is None]
    if not missing:
        return 0
    images = [read_rgb(s.image_path) for s in samples]
    maps = lite.predict_category(images)
    for i in missing:
        s, m = samples[i], maps[i]
        res = ImageResult(cv2.resize(m, (out_size, out_size)).astype(np.float32), float(m.max()),
                          (int(images[i].shape[0]), int(images[i].shape[1])))
        save_image_result(maps_dir / map_file_name(s.key), res, fp, image=str(s.image_path),
                          regions={"method": "lite", "image": str(s.image_path), "key": s.key, "label": s.label})
    return len(missing)


def fetch_image(pipeline, s: Sample, maps_dir: Path, fp: str, resume: bool = True):
    """The I/O half of :func:`image_result` (run ahead in a background thread by the loops below):
    ``(stored result, None)`` when a valid one exists, else ``(None, the decoded RGB image)``."""
    res = load_image_result(maps_dir / map_file_name(s.key), int(pipeline.config.out_size), fp) if resume else None
    return (res, None) if res is not None else (None, read_rgb(s.image_path))


def _prefetched(pipeline, samples: Sequence[Sample], indices: Sequence[int], maps_dir: Path, fp: str,
                resume: bool):
    """``(i, fetched)`` for each index, the next images read while the current one is predicted."""
    return prefetch(indices, lambda i: fetch_image(pipeline, samples[i], maps_dir, fp, resume), depth=2)


def image_result(pipeline, s: Sample, maps_dir: Path, fp: str, resume: bool = True, bank=None,
                 index: Optional[int] = None, fetched=None):
    """The stored result of one image, or compute and store it. Returns (result, seconds spent in
    predict, or None when the stored result was reused). ``bank`` / ``index``: the category's
    cross-image bank and this image's place in it (cross-image saliency only). ``fetched``: what
    :func:`fetch_image` returned for it, if it already ran."""
    path = maps_dir / map_file_name(s.key)
    res, rgb = fetched if fetched is not None else fetch_image(pipeline, s, maps_dir, fp, resume)
    if res is not None:
        return res, None
    t0 = time.perf_counter()
    pred = pipeline.predict(rgb, s.category, others=bank, index=index if bank is not None else None)
    seconds = time.perf_counter() - t0
    res = ImageResult(np.asarray(pred.anomaly_map, dtype=np.float32), float(pred.score),
                      (int(rgb.shape[0]), int(rgb.shape[1])))
    regions = pred.regions_dict()
    regions.update(image=str(s.image_path), key=s.key, label=s.label)
    save_image_result(path, res, fp, image=str(s.image_path), regions=regions)
    return res, seconds


def category_fingerprint(config: SaaConfig, samples: Sequence[Sample], category: str) -> str:
    """:func:`config_fingerprint` of a category, with its sample keys when cross-image saliency is on."""
    return config_fingerprint(config, category, [s.key for s in samples] if cross_image_enabled(config) else None)


def cross_feature_store(out_dir: str | os.PathLike, category: str, fp: str):
    """The folder of a category's pass-1 features (saa.cross_bank.FeatureStore) in a run."""
    from .cross_bank import FeatureStore

    return FeatureStore(Path(out_dir) / category / "cross_features", fp)


def _missing(samples: Sequence[Sample], maps_dir: Path, out_size: int, fp: str, resume: bool) -> list[int]:
    return [i for i, s in enumerate(samples)
            if not resume or load_image_result(maps_dir / map_file_name(s.key), out_size, fp) is None]


def compute_cross_features(pipeline, samples: Sequence[Sample], store, indices: Optional[Sequence[int]] = None,
                           resume: bool = True, progress: bool = True, desc: str = "features") -> int:
    """Pass 1 of cross-image saliency: store the saliency features of ``samples`` (those at
    ``indices``, default all) that ``store`` does not hold yet (all of them with ``resume=False``).
    Returns how many were computed."""
    from tqdm.auto import tqdm

    todo = [i for i in (range(len(samples)) if indices is None else indices)
            if not resume or not store.has(samples[i].key)]
    for i in tqdm(todo, desc=desc, unit="img", disable=not progress or not todo, dynamic_ncols=True):
        store.put(samples[i].key, pipeline.saliency_features(read_rgb(samples[i].image_path)))
    return len(todo)


def compute_shard(pipeline, dataset: AnomalyDataset, category: str, out_dir: str | os.PathLike, rank: int,
                  world: int, resume: bool = True, progress: bool = True, barrier=None) -> int:
    """Compute (or reuse) the per-image results of every ``world``-th image of a category, starting at
    ``rank``: one process's share of a run under torchrun. Returns how many were computed.

    With cross-image saliency, ``barrier`` (e.g. ``torch.distributed.barrier``) is called after the
    features pass (each process computes its share of the features of the whole category) and after
    the maps; rank 0 then deletes the category's features.
    """
    from tqdm.auto import tqdm

    config: SaaConfig = pipeline.config
    samples = dataset.samples(category)
    fp = category_fingerprint(config, samples, category)
    maps_dir = Path(out_dir) / category / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    mine = list(range(rank, len(samples), world))
    bank = None
    cross = cross_image_enabled(config)
    if cross:
        barrier = barrier or (lambda: None)
        store = cross_feature_store(out_dir, category, fp)
        # every process sees the same files here: maps of this category are only written after the barrier
        need = bool(_missing(samples, maps_dir, int(config.out_size), fp, resume))
        if need:
            compute_cross_features(pipeline, samples, store, mine, resume, progress,
                                   desc=f"{category} features [rank {rank}/{world}]")
        barrier()
        if need:
            from .cross_bank import CrossImageBank

            bank = CrossImageBank.from_store(store, [s.key for s in samples], **pipeline.cross_image_settings())
    computed = 0
    bar = tqdm(total=len(mine), desc=f"{category} [rank {rank}/{world}]", unit="img", disable=not progress,
               dynamic_ncols=True, position=rank)
    for i, fetched in _prefetched(pipeline, samples, mine, maps_dir, fp, resume):
        computed += image_result(pipeline, samples[i], maps_dir, fp, resume, bank=bank, index=i,
                                 fetched=fetched)[1] is not None
        bar.update(1)
    bar.close()
    if cross:
        barrier()
        if rank == 0:
            store.remove()
    return computed


def distributed_context():
    """(rank, world size, local rank) under torchrun (WORLD_SIZE > 1), initialising the process
    group (gloo on the CPU, nccl on CUDA) if needed; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and os.environ.get("SAA_DIST_BACKEND", "") != "gloo"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def evaluate_category(pipeline, dataset: AnomalyDataset, category: str, out_dir: str | os.PathLike,
                      eval_size: int = DEFAULT_EVAL_SIZE, resume: bool = True, progress: bool = True,
                      vand_root: Optional[str | os.PathLike] = None,
                      vand_experiment: Optional[str] = None, fingerprint: Optional[str] = None) -> CategoryResult:
    """Run (or reuse) every image of ``category``, then normalise and compute its metrics.

    ``pipeline`` is a :class:`saa.pipeline.SAAPipeline` (models load on the first computed image,
    so a fully resumed category loads nothing). ``vand_root``: also write the VAND tree there.
    """
    from tqdm.auto import tqdm

    config: SaaConfig = pipeline.config
    samples: list[Sample] = dataset.samples(category)
    fp = fingerprint or category_fingerprint(config, samples, category)
    maps_dir = Path(out_dir) / category / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    bank = store = None
    t_features = 0.0
    if fingerprint is None and cross_image_enabled(config):
        # cross-image saliency: pass 1 (features of every image) when any map must be computed
        store = cross_feature_store(out_dir, category, fp)
        if _missing(samples, maps_dir, int(config.out_size), fp, resume):
            from .cross_bank import CrossImageBank

            t0 = time.perf_counter()
            compute_cross_features(pipeline, samples, store, resume=resume, progress=progress,
                                   desc=f"{category} features")
            bank = CrossImageBank.from_store(store, [s.key for s in samples], **pipeline.cross_image_settings())
            t_features = time.perf_counter() - t0
    t_predict = 0.0
    raw: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    raw_scores: list[float] = []
    computed = reused = 0
    bar = tqdm(total=len(samples), desc=category, unit="img", disable=not progress, dynamic_ncols=True, leave=True)
    for i, fetched in _prefetched(pipeline, samples, range(len(samples)), maps_dir, fp, resume):
        res, seconds = image_result(pipeline, samples[i], maps_dir, fp, resume, bank=bank, index=i,
                                    fetched=fetched)
        bar.update(1)
        if seconds is None:
            reused += 1
        else:
            computed += 1
            t_predict += seconds
        raw.append(res.map)
        sizes.append(res.image_size)
        raw_scores.append(res.image_score)
        if progress:
            bar.set_postfix(computed=computed, reused=reused, refresh=False)
    bar.close()
    if store is not None:
        store.remove()  # every map of the category is written now
    t_images = time.perf_counter() - t_start

    t0 = time.perf_counter()
    norm_maps, scores = evaluation_maps(raw, eval_size)
    del raw
    labels = [s.label for s in samples]
    labelled = all(lab is not None for lab in labels)
    counts = {
        "images": len(samples),
        "normal": sum(lab == 0 for lab in labels),
        "anomalous": sum(lab == 1 for lab in labels),
        "unlabelled": sum(lab is None for lab in labels),
    }
    if labelled:
        masks = None
        if dataset.has_masks:
            masks = resize_masks([dataset.load_mask(s, hw) for s, hw in zip(samples, sizes)], eval_size)
        metrics = category_metrics(labels, scores, masks, norm_maps)
        del masks
    else:
        metrics = {k: None for k in METRIC_KEYS}
    t_metrics = time.perf_counter() - t0

    rows = [("key", "label", "raw_score", "image_score")]
    rows += [(s.key, "" if s.label is None else str(s.label), f"{r:.8g}", f"{n:.8g}")
             for s, r, n in zip(samples, raw_scores, scores)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(Path(out_dir) / category / "scores.csv", buf.getvalue())

    vand_dir = None
    if vand_root is not None:
        from .vand import VAND_EXPERIMENT, write_vand_category

        vand_dir = str(write_vand_category(vand_root, category, [s.stem for s in samples], norm_maps,
                                           scores, vand_experiment or VAND_EXPERIMENT))
    seconds = {"total": time.perf_counter() - t_start, "images": t_images, "predict": t_predict,
               "metrics": t_metrics}
    if t_features:
        seconds["cross_features"] = t_features
    if computed:
        seconds["per_computed_image"] = t_predict / computed
    log.info("%s: %d images, %d computed, %d reused (%.1f s)", category, len(samples), computed, reused,
             seconds["total"])
    return CategoryResult(category, [s.key for s in samples], labels, np.asarray(raw_scores), scores,
                          metrics, counts, computed, reused, seconds, vand_dir)


# ----------------------------------------------------------------------------------------------
# a whole run


def _with_overrides(config: SaaConfig, overrides: list[str]) -> SaaConfig:
    if not overrides:
        return config
    data = config.model_dump(mode="json", exclude_none=True)
    return config_from_dict(data, overrides, source="run configuration")


def _select_categories(config: SaaConfig, ds: AnomalyDataset,
                       categories: Optional[Iterable[str]]) -> list[str]:
    present = ds.categories()
    if categories is None:
        missing = [c for c in present if c not in config.categories]
        if missing:
            raise ConfigError(
                f"the dataset at {ds.root} has categories the config does not describe: "
                f"{', '.join(missing)} (config categories: {', '.join(config.categories)}); "
                "add them to the config or choose categories with --categories"
            )
        return present
    if isinstance(categories, str):
        categories = [categories]
    wanted = list(dict.fromkeys(str(c) for c in categories))
    if not wanted:
        raise ConfigError("no category selected (the category list is empty)")
    for c in wanted:
        config.category(c)  # ConfigError naming the closest category
    absent = [c for c in wanted if c not in present]
    if absent:
        raise DatasetError(
            f"category(ies) {', '.join(absent)} not found in the {ds.name} dataset at {ds.root} "
            f"(categories present: {', '.join(present)})"
        )
    return wanted


def evaluate_run(config: Union[SaaConfig, str, os.PathLike], out_dir: str | os.PathLike,
                 categories: Optional[Iterable[str]] = None, data_root: Optional[str | os.PathLike] = None,
                 device: Optional[str] = None, resume: bool = True, progress: bool = True,
                 pipeline=None, print_table: bool = True, method: str = "full") -> dict[str, Any]:
    """Evaluate a config on its dataset; write the run files in ``out_dir`` (see the module doc).

    ``data_root`` replaces ``dataset.root``; ``device`` replaces ``models.device`` (both are
    recorded in the written ``config.yaml``). ``categories``: a subset (default: every category
    present under the root). ``resume=False`` recomputes every image. ``pipeline``: a
    :class:`~saa.pipeline.SAAPipeline` whose models are reused (e.g. across several runs in one
    process); the run's own ``config`` is what the pipeline runs with.

    Returns the content of ``metrics.json``: ``categories`` (per category ``metrics`` in percent,
    None where undefined, ``counts``, ``computed``, ``reused``, ``seconds``), ``mean``, ``labelled``,
    ``eval_size``, ``dataset``, ``vand`` and ``timings``.
    """
    t_start = time.perf_counter()
    config_file = None
    if not isinstance(config, SaaConfig):
        config_file = str(config)
        config = load_config(config)
    overrides = []
    if data_root is not None:
        overrides.append(f"dataset.root={json.dumps(os.fspath(data_root))}")
    if device:
        overrides.append(f"models.device={device}")
    config = _with_overrides(config, overrides)
    kind, root = config.dataset.kind, config.dataset.root
    if not kind:
        raise ConfigError("the config has no dataset.kind (mvtec, visa_public, visa_challenge, ksdd2, mtd, folder)")
    if not root:
        raise ConfigError("the config has no dataset.root: set it in the config or pass --data-root DIR")
    eval_size = eval_size_of(config)
    ds_options, _ = split_dataset_options(config.dataset.options)
    ds = build_dataset(kind, root, **ds_options)
    cats = _select_categories(config, ds, categories)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", config.to_yaml(
        comment=f"Resolved configuration of this run ({datetime.now(timezone.utc).isoformat(timespec='seconds')}).\n"
                f"Reproduce: saa run {out / 'config.yaml'} --out {out}"))

    from .pipeline import SAAPipeline

    if pipeline is None:
        pipeline = SAAPipeline(config)  # models load on the first image that needs computing
    else:  # reuse the models (loaded or not) of the given pipeline with this run's config
        pipeline = SAAPipeline(config, detector=pipeline._detector, refiner=pipeline._refiner,
                               extractor=pipeline._extractor)
    vand_root = vand_exp = None
    if kind == "visa_challenge":
        vand_root, vand_exp = out / "vand", _vand_experiment_of(config)

    rank, world, local = distributed_context()
    if method == "lite" and world > 1:
        raise ConfigError("lite mode scores each image against the others of its category: run it in one process")
    if world > 1:
        # every process computes its share of each category; rank 0 then evaluates (reusing all)
        import torch.distributed as dist

        if str(config.models.device).startswith("cuda") and ":" not in str(config.models.device):
            pipeline = SAAPipeline(_with_overrides(config, [f"models.device=cuda:{local}"]))
        computed = sum(compute_shard(pipeline, ds, cat, out, rank, world, resume=resume, progress=progress,
                                     barrier=dist.barrier)
                       for cat in cats)
        log.info("rank %d/%d computed %d images", rank, world, computed)
        dist.barrier()
        if rank != 0:
            dist.barrier()  # wait for rank 0's evaluation, so every process ends together
            return {"rank": rank, "world_size": world, "computed": computed}
        pipeline = SAAPipeline(config, detector=pipeline._detector, refiner=pipeline._refiner,
                               extractor=pipeline._extractor)

    fingerprints: dict[str, Optional[str]] = {c: None for c in cats}
    if method == "lite":
        from .lite import LitePipeline
        from .models.checkpoints import resolve_device

        lite = LitePipeline(device=str(resolve_device(str(config.models.device))))
        for cat in cats:
            n = compute_lite_category(lite, config, ds, cat, out, resume=resume)
            fingerprints[cat] = lite_fingerprint(config, lite)
            log.info("%s: lite mode computed %d maps", cat, n)
    elif method != "full":
        raise ConfigError(f"method must be 'full' or 'lite', not {method!r}")

    results: dict[str, CategoryResult] = {}
    for cat in cats:
        # maps this run has just computed (torchrun shards, lite mode) are reused, even with resume=False
        results[cat] = evaluate_category(pipeline, ds, cat, out, eval_size=eval_size,
                                         resume=resume or world > 1 or method == "lite",
                                         progress=progress, vand_root=vand_root, vand_experiment=vand_exp,
                                         fingerprint=fingerprints[cat])

    labelled = all(r.counts["unlabelled"] == 0 for r in results.values())
    per_cat = {c: r.to_dict() for c, r in results.items()}
    result: dict[str, Any] = {
        "dataset": {"kind": kind, "root": str(root), "options": ds_options},
        "config_file": config_file,
        "preset": config.preset,
        "method": method,
        "world_size": world,
        "device": config.models.device,
        "out_size": int(config.out_size),
        "eval_size": eval_size,
        "unit": "percent",
        "metric_keys": list(METRIC_KEYS),
        "labelled": labelled,
        "categories": per_cat,
        "mean": mean_metrics({c: r.metrics for c, r in results.items()}),
        "totals": {
            "images": sum(r.counts["images"] for r in results.values()),
            "computed": sum(r.computed for r in results.values()),
            "reused": sum(r.reused for r in results.values()),
        },
        "vand": ({"root": str(vand_root), "experiment": vand_exp} if vand_root is not None else None),
        "timings": {"total_s": round(time.perf_counter() - t_start, 3),
                    "predict_s": round(sum(r.seconds["predict"] for r in results.values()), 3)},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "metrics.csv", format_table(result, "csv"))
    title = f"SAA+ on {kind} ({root}), preset {config.preset}, eval size {eval_size}"
    note = "" if labelled else "\nUnlabelled test set: no metrics (n/a).\n"
    atomic_write_text(out / "metrics.md", f"# {title}\n\nValues in percent.\n{note}\n" + format_table(result, "md"))
    try:  # the HTML report is a convenience: a failure there never costs the results above
        from .report import write_report

        write_report(out)
    except Exception as e:
        log.warning("report.html not written (%s); the metrics files are complete. Retry: saa report %s", e, out)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if print_table:
        print(title + " — values in percent" + (" (unlabelled set: no metrics)" if not labelled else ""))
        print(format_table(result, "text"), end="")
    return result
