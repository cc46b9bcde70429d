"""The one loop of every method over a category: pass 1 when the method needs references, then
each image (stored, or predicted and stored), sharded under torchrun.

The engine never asks which method it runs: it asks the method (:class:`saa.methods.Method`)
whether it needs the category's other images, for its fingerprint, its pass-1 features and its
prediction of one image. With a reference bank of good parts (``reference_bank``, a
:class:`saa.bank.ReferenceBank`: ``saa run --bank`` / ``--references`` / ``--k-shot``) there is no
pass 1: each image is scored against the bank only (:meth:`~saa.bank.ReferenceBank.predict`), and
the stored maps' fingerprint covers the bank's id instead of the category's image set.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..datasets import AnomalyDataset, Sample
from ..errors import SaaError
from ..image_io import prefetch, read_rgb
from ..results import CategoryStore, ImageResult, RunFolder, source_token
from ..saliency.bank import FeatureStore

__all__ = ["CategoryRun", "run_category", "distributed_context", "reference_ids"]

log = logging.getLogger("saa.run")


@dataclass
class CategoryRun:
    """What :func:`run_category` did: the results of the shard's images (in order, ``None`` where
    not collected), and the counts and timings."""

    category: str
    samples: list[Sample]
    indices: list[int]
    results: list[Optional[ImageResult]]
    computed: int = 0
    reused: int = 0
    features_computed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""  # of the category's stored maps (settings, and the image set for references)


def reference_ids(samples: list[Sample], sources: Optional[list[str]] = None) -> list[str]:
    """The identity of a category's image set: each key with its file's size and mtime (a map that
    depends on the others is recomputed when any of them is added, removed or replaced).
    ``sources``: the files' :func:`saa.results.source_token` if already known."""
    sources = sources if sources is not None else [source_token(s.image_path) for s in samples]
    return [f"{s.key}\t{src}" for s, src in zip(samples, sources)]


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


class _Category:
    """One category of one run: its samples, store, fingerprint and the stored-result test."""

    def __init__(self, method, dataset: AnomalyDataset, category: str, store: RunFolder, resume: bool,
                 reference_bank=None):
        self.method, self.name, self.resume = method, category, resume
        self.reference_bank = reference_bank
        self.store: CategoryStore = store.category(category)
        self.samples = dataset.samples(category)
        self.keys = [s.key for s in self.samples]
        self.store.check_keys(self.keys)
        self.sources = [source_token(s.image_path) for s in self.samples]
        self.out_size = int(method.config.out_size)
        self.refs = bool(method.needs_references) and reference_bank is None  # pass 1 over the category
        self.fingerprint = method.fingerprint(category, reference_ids(self.samples, self.sources) if self.refs else None)
        if reference_bank is not None:  # the maps depend on the bank (its id), not on the other images
            self.fingerprint += "+bank-" + reference_bank.bank_id[:16]
        self.store.maps_dir.mkdir(parents=True, exist_ok=True)

    def stored(self, i: int) -> Optional[ImageResult]:
        if not self.resume:
            return None
        return self.store.load(self.keys[i], self.out_size, self.fingerprint, self.sources[i])

    def features(self) -> FeatureStore:
        # the features depend on the method's settings and the image, not on the reference set
        return FeatureStore(self.store.features_dir, self.method.fingerprint(self.name, None))

    def pass_one(self, indices, progress: bool, desc: str) -> int:
        """Store the pass-1 features of the images at ``indices`` that are not stored yet."""
        from tqdm.auto import tqdm

        fstore = self.features()
        todo = [i for i in indices if not (self.resume and fstore.has(self.keys[i], self.sources[i]))]
        for i in tqdm(todo, desc=desc, unit="img", disable=not progress or not todo, dynamic_ncols=True):
            feats = self.method.reference_features(read_rgb(self.samples[i].image_path))
            fstore.put(self.keys[i], feats, source=self.sources[i])
        return len(todo)

    def compute(self, i: int, rgb: np.ndarray, bank) -> ImageResult:
        s = self.samples[i]
        if self.reference_bank is not None:  # against the bank only (a reference's own image: leave-one-out)
            pred = self.reference_bank.predict(self.method, rgb, self.name, path=s.image_path)
        else:
            pred = self.method.predict(rgb, self.name, bank=bank, index=i if bank is not None else None)
        res = ImageResult(np.asarray(pred.anomaly_map, dtype=np.float32), float(pred.score),
                          (int(rgb.shape[0]), int(rgb.shape[1])))
        regions = pred.regions_dict()
        regions.update(image=str(s.image_path), key=s.key, label=s.label)
        self.store.save(s.key, res, self.fingerprint, image=str(s.image_path), regions=regions,
                        source=self.sources[i])
        return res


def run_category(method, dataset: AnomalyDataset, category: str, store: RunFolder, *, rank: int = 0,
                 world: int = 1, resume: bool = True, progress: bool = True,
                 barrier: Optional[Callable[[], None]] = None, collect: bool = True,
                 reference_bank=None) -> CategoryRun:
    """Every ``world``-th image of ``category`` from ``rank`` on: the stored result, or predicted
    and stored. A method with references first stores the pass-1 features of its share of the
    category (when any map of the category must be computed), then all processes wait for each
    other (``barrier``) and each scores its share against the features of all images; after the
    maps, rank 0 deletes the features (every map of the category exists then).
    ``collect=False``: the results are not kept in memory (a torchrun shard).
    ``reference_bank``: a :class:`saa.bank.ReferenceBank` (opened and checked against ``method``)
    every image is scored against instead (no pass 1; read-only, so shards share it)."""
    from tqdm.auto import tqdm

    cat = _Category(method, dataset, category, store, resume, reference_bank)
    barrier = barrier or (lambda: None)
    mine = list(range(rank, len(cat.samples), world))
    run = CategoryRun(category, cat.samples, mine, [], fingerprint=cat.fingerprint)
    t_start = time.perf_counter()
    tag = "" if world == 1 else f" [rank {rank}/{world}]"

    bank = None
    known: dict[int, ImageResult] = {}  # results already read by the check below (not read twice)
    if cat.refs:
        # every process sees the same files here: maps of the category are written after the barrier.
        # A shard (collect=False) stops at the first missing map; an evaluation keeps what it read.
        if collect:
            found = {i: cat.stored(i) for i in range(len(cat.samples))}
            need = any(r is None for r in found.values())
            shard = set(mine)
            known = {i: r for i, r in found.items() if r is not None and i in shard}
        else:
            need = any(cat.stored(i) is None for i in range(len(cat.samples)))
        t0 = time.perf_counter()
        if need:
            run.features_computed = cat.pass_one(mine, progress, f"{category} features{tag}")
        barrier()
        if need:
            bank = method.bank_from_store(cat.features(), cat.keys)
            run.seconds["cross_features"] = time.perf_counter() - t0

    def fetch(i: int):
        res = known.pop(i, None) or cat.stored(i)
        return (res, None) if res is not None else (None, read_rgb(cat.samples[i].image_path))

    t_predict = 0.0
    bar = tqdm(total=len(mine), desc=category + tag, unit="img", disable=not progress, dynamic_ncols=True,
               leave=True, position=rank if world > 1 else None)
    for i, (res, rgb) in prefetch(mine, fetch, depth=2):
        if res is None:
            if cat.refs and bank is None:  # a result vanished after the check above
                if world > 1:
                    raise SaaError(f"{cat.store.result_path(cat.keys[i])} disappeared during the run; run again")
                t0 = time.perf_counter()
                run.features_computed += cat.pass_one(range(len(cat.samples)), progress, f"{category} features")
                bank = method.bank_from_store(cat.features(), cat.keys)
                run.seconds["cross_features"] = run.seconds.get("cross_features", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            res = cat.compute(i, rgb, bank)
            t_predict += time.perf_counter() - t0
            run.computed += 1
        else:
            run.reused += 1
        run.results.append(res if collect else None)
        bar.update(1)
        if progress:
            bar.set_postfix(computed=run.computed, reused=run.reused, refresh=False)
    bar.close()
    if cat.refs:
        barrier()
        if rank == 0:
            cat.features().remove()  # every map of the category is written now
    run.seconds.update(images=time.perf_counter() - t_start, predict=t_predict)
    if run.computed:
        run.seconds["per_computed_image"] = t_predict / run.computed
    return run
