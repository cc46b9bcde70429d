"""The one loop of every method over a category: pass 1 when the method needs references, then
each image (stored, or predicted and stored), sharded under torchrun.

The engine never asks which method it runs: it asks the method (:class:`saa.methods.Method`)
whether it needs the category's other images, for its fingerprint, its pass-1 features and its
predictions (:meth:`~saa.methods.Method.predict` of one image, or
:meth:`~saa.methods.Method.predict_batch` of ``batch_size`` images, ``saa run --batch-size B``).

Images are decoded in worker processes (a torch ``DataLoader`` whose workers start from a fork
server; :func:`decoded_batches`) while the models work on the previous batch: the main process
decodes nothing. ``SAA_DECODE_WORKERS=0`` decodes in a background thread of the main process.

With a reference bank of good parts (``reference_bank``, a :class:`saa.bank.ReferenceBank`:
``saa run --bank`` / ``--references`` / ``--k-shot``) there is no pass 1: each image is scored
against the bank only (:meth:`~saa.bank.ReferenceBank.predict`, one image at a time), and the
stored maps' fingerprint covers the bank's id instead of the category's image set.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..datasets import AnomalyDataset, Sample
from ..errors import ConfigError, SaaError
from ..image_io import max_pixels, prefetch, read_rgb, set_max_pixels
from ..results import CategoryStore, ImageResult, RunFolder, source_token
from ..saliency.bank import FeatureStore

__all__ = ["CategoryRun", "run_category", "distributed_context", "reference_ids", "decoded_batches",
           "decode_workers"]

#: environment variable: number of image-decoding worker processes (0: a thread of the main process)
WORKERS_ENV = "SAA_DECODE_WORKERS"

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
    batch_size: int = 1
    workers: int = 0
    #: images decoded per process id (pass 1 and the maps; the main process's id: decoded in a thread)
    decoders: dict[int, int] = field(default_factory=dict)


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


# ------------------------------------------------------------------------------------ decoding
def decode_workers(batch_size: int = 1) -> int:
    """How many processes decode images: ``$SAA_DECODE_WORKERS`` when set (0: a background thread
    of the main process), else one per image of a batch, at most 4 and at most the CPU cores."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ConfigError(f"${WORKERS_ENV}={env!r}: expected a number of worker processes >= 0")
        return n
    return max(1, min(4, int(batch_size), _cores()))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _decode(path) -> tuple[Optional[np.ndarray], Optional[BaseException]]:
    """(RGB image, None), or (None, the error) for a file that cannot be read: the error is raised
    by the consumer at that image, in order (a worker's traceback never reaches the user)."""
    try:
        return read_rgb(path), None
    except Exception as e:  # noqa: BLE001 - handed to the consumer
        return None, e


class _DecodeSet:
    """The images at ``paths`` as a map-style dataset of ``(position, rgb, error, decoding pid)``
    (picklable: only paths)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int):
        return (k, *_decode(self.paths[k]), os.getpid())


def _as_is(item):
    return item  # the samples as the workers made them (numpy arrays: no shared-memory tensors)


def _worker_init(pixel_limit: int, worker_id: int) -> None:
    set_max_pixels(pixel_limit)  # the main process's limit (--max-pixels)


def _context():
    """Worker processes start from a fork server (preloaded with this module), never by forking
    the main process: a fork of a process whose OpenCV / OpenMP thread pools have run hangs in the
    child's first call to them. Platforms without fork servers (Windows) spawn."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


@contextlib.contextmanager
def _main_module_hidden():
    """While worker processes start: the main module looks unnamed and file-less, so the workers
    (which need only this module) never import it again. Otherwise a fork server or spawn runs the
    user's script once more in each worker (a script without an ``if __name__ == "__main__"`` guard
    would start a second run) and fails outright for ``python -`` or ``python -c``."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved = {k: getattr(main, k, missing) for k in ("__spec__", "__file__")}
    try:
        main.__spec__ = None
        if saved["__file__"] is not missing:
            del main.__file__
        yield
    finally:
        for k, v in saved.items():
            if v is not missing:
                setattr(main, k, v)


def _decoded(paths: Sequence[str], workers: int):
    """``(position, rgb, error, pid)`` of each path in order, decoded ahead: in ``workers``
    processes (a torch ``DataLoader``), or in one background thread when ``workers`` is 0."""
    if workers <= 0 or len(paths) < 2:
        pid = os.getpid()
        for k, (rgb, err) in prefetch(range(len(paths)), lambda k: _decode(paths[k]), depth=2):
            yield k, rgb, err, pid
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_DecodeSet(paths), batch_size=None, shuffle=False, num_workers=min(workers, len(paths)),
                        collate_fn=_as_is, prefetch_factor=2, multiprocessing_context=_context(),
                        worker_init_fn=functools.partial(_worker_init, max_pixels()))
    with _main_module_hidden():  # every worker starts here
        it = iter(loader)
    try:
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def decoded_batches(paths: Sequence[str], batch_size: int, workers: int,
                    decoders: Optional[dict] = None) -> Iterator[list[tuple[int, np.ndarray]]]:
    """The images at ``paths`` as lists of ``(position, rgb)`` of up to ``batch_size`` images, in
    order, decoded ahead by ``workers`` processes (:func:`decode_workers`). An image that cannot be
    read raises its error (naming the file) after the images before it have been yielded, so the
    results of those are computed and kept. ``decoders``: counts of images decoded per process id
    are added to it."""
    batch: list[tuple[int, np.ndarray]] = []
    for k, rgb, err, pid in _decoded(paths, workers):
        if decoders is not None:
            decoders[pid] = decoders.get(pid, 0) + 1
        if err is not None:
            if batch:
                yield batch
            raise err
        batch.append((k, rgb))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------------ a category
class _Category:
    """One category of one run: its samples, store, fingerprint and the stored-result test."""

    def __init__(self, method, dataset: AnomalyDataset, category: str, store: RunFolder, resume: bool,
                 batch_size: int = 1, workers: int = 0, reference_bank=None):
        self.method, self.name, self.resume = method, category, resume
        self.batch_size, self.workers = batch_size, workers
        self.decoders: dict[int, int] = {}
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

    def batches(self, indices: Sequence[int]) -> Iterator[list[tuple[int, np.ndarray]]]:
        """(sample index, rgb) of ``indices`` in batches, decoded ahead in worker processes."""
        indices = list(indices)
        for batch in decoded_batches([self.samples[i].image_path for i in indices], self.batch_size, self.workers,
                                     self.decoders):
            yield [(indices[k], rgb) for k, rgb in batch]

    def pass_one(self, indices, progress: bool, desc: str) -> int:
        """Store the pass-1 features of the images at ``indices`` that are not stored yet."""
        from tqdm.auto import tqdm

        fstore = self.features()
        todo = [i for i in indices if not (self.resume and fstore.has(self.keys[i], self.sources[i]))]
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo, dynamic_ncols=True)
        for batch in self.batches(todo):
            if len(batch) == 1:
                feats = [self.method.reference_features(batch[0][1])]
            else:
                feats = self.method.reference_features_batch([rgb for _, rgb in batch])
            for (i, _), f in zip(batch, feats):
                fstore.put(self.keys[i], f, source=self.sources[i])
            bar.update(len(batch))
        bar.close()
        return len(todo)

    def compute(self, batch: list[tuple[int, np.ndarray]], bank) -> list[ImageResult]:
        """Predict and store the images of ``batch`` (one: :meth:`Method.predict`; more:
        :meth:`Method.predict_batch`; with a reference bank: the bank's prediction of each image,
        a reference's own image left out)."""
        if self.reference_bank is not None:
            preds = [self.reference_bank.predict(self.method, rgb, self.name, path=self.samples[i].image_path)
                     for i, rgb in batch]
        elif len(batch) == 1:
            i, rgb = batch[0]
            preds = [self.method.predict(rgb, self.name, bank=bank, index=i if bank is not None else None)]
        else:
            preds = self.method.predict_batch([rgb for _, rgb in batch], self.name, bank=bank,
                                              indices=[i if bank is not None else None for i, _ in batch])
        if len(preds) != len(batch):
            raise SaaError(f"method {self.method.name!r}: predict_batch returned {len(preds)} predictions "
                           f"for {len(batch)} images")
        return [self._store(i, rgb, pred) for (i, rgb), pred in zip(batch, preds)]

    def _store(self, i: int, rgb: np.ndarray, pred) -> ImageResult:
        s = self.samples[i]
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
                 batch_size: Optional[int] = None, workers: Optional[int] = None, reference_bank=None) -> CategoryRun:
    """Every ``world``-th image of ``category`` from ``rank`` on: the stored result, or predicted
    and stored. A method with references first stores the pass-1 features of its share of the
    category (when any map of the category must be computed), then all processes wait for each
    other (``barrier``) and each scores its share against the features of all images; after the
    maps, rank 0 deletes the features (every map of the category exists then).
    ``collect=False``: the results are not kept in memory (a torchrun shard).
    ``batch_size``: images per model batch (default: the config's ``models.batch_size``; the maps
    equal those of one image at a time); ``workers``: image-decoding processes (default
    :func:`decode_workers`; 0: a thread of this process).
    ``reference_bank``: a :class:`saa.bank.ReferenceBank` (opened and checked against ``method``)
    every image is scored against instead (no pass 1; read-only, so shards share it)."""
    from tqdm.auto import tqdm

    batch_size = _batch_size(method, batch_size)
    workers = decode_workers(batch_size) if workers is None else max(0, int(workers))
    cat = _Category(method, dataset, category, store, resume, batch_size, workers, reference_bank)
    barrier = barrier or (lambda: None)
    mine = list(range(rank, len(cat.samples), world))
    run = CategoryRun(category, cat.samples, mine, [], fingerprint=cat.fingerprint, batch_size=batch_size,
                      workers=workers, decoders=cat.decoders)
    t_start = time.perf_counter()
    tag = "" if world == 1 else f" [rank {rank}/{world}]"

    bank, known = None, {}
    if cat.refs:
        bank, known = _pass_one(cat, run, mine, collect, progress, barrier, tag)
    bar = tqdm(total=len(mine), desc=category + tag, unit="img", disable=not progress, dynamic_ncols=True,
               leave=True, position=rank if world > 1 else None)
    results, todo = _stored(cat, run, mine, known, collect, bar)
    if todo and cat.refs and bank is None:  # a result vanished after the check of pass 1
        if world > 1:
            raise SaaError(f"{cat.store.result_path(cat.keys[todo[0]])} disappeared during the run; run again")
        t0 = time.perf_counter()
        run.features_computed += cat.pass_one(range(len(cat.samples)), progress, f"{category} features")
        bank = method.bank_from_store(cat.features(), cat.keys)
        run.seconds["cross_features"] = run.seconds.get("cross_features", 0.0) + time.perf_counter() - t0
    t_predict = _compute(cat, run, todo, bank, results if collect else None, bar, progress)
    bar.close()
    run.results = [results.get(i) for i in mine]
    if cat.refs:
        barrier()
        if rank == 0:
            cat.features().remove()  # every map of the category is written now
    run.seconds.update(images=time.perf_counter() - t_start, predict=t_predict)
    if run.computed:
        run.seconds["per_computed_image"] = t_predict / run.computed
    return run


def _batch_size(method, batch_size: Optional[int]) -> int:
    """``batch_size``, or the config's ``models.batch_size`` (default 1); at least 1."""
    if batch_size is None:
        batch_size = int(getattr(getattr(method.config, "models", None), "batch_size", 1) or 1)
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    return int(batch_size)


def _pass_one(cat: _Category, run: CategoryRun, mine: list[int], collect: bool, progress: bool, barrier,
              tag: str) -> tuple:
    """Pass 1 of a method with references, when any map of the category must be computed: this
    process's share of the features, a wait for the others, the bank of all. Returns (the bank or
    None, the stored results of this share already read by the check)."""
    # every process sees the same files here: maps of the category are written after the barrier.
    # A shard (collect=False) stops at the first missing map; an evaluation keeps what it read.
    known: dict[int, ImageResult] = {}
    if collect:
        found = {i: cat.stored(i) for i in range(len(cat.samples))}
        need = any(r is None for r in found.values())
        shard = set(mine)
        known = {i: r for i, r in found.items() if r is not None and i in shard}
    else:
        need = any(cat.stored(i) is None for i in range(len(cat.samples)))
    t0 = time.perf_counter()
    if need:
        run.features_computed = cat.pass_one(mine, progress, f"{cat.name} features{tag}")
    barrier()
    bank = None
    if need:
        bank = cat.method.bank_from_store(cat.features(), cat.keys)
        run.seconds["cross_features"] = time.perf_counter() - t0
    return bank, known


def _stored(cat: _Category, run: CategoryRun, mine: list[int], known: dict, collect: bool, bar):
    """The stored results of this share (read here: small) and the images left to compute."""
    results: dict[int, ImageResult] = {}
    todo = []
    for i in mine:
        res = known.pop(i, None) or cat.stored(i)
        if res is None:
            todo.append(i)
            continue
        run.reused += 1
        if collect:
            results[i] = res
        bar.update(1)
    return results, todo


def _compute(cat: _Category, run: CategoryRun, todo: list[int], bank, results: Optional[dict], bar,
             progress: bool) -> float:
    """Predict and store the images of ``todo`` in batches (kept in ``results`` unless None);
    returns the seconds spent predicting."""
    t_predict = 0.0
    for batch in cat.batches(todo):
        t0 = time.perf_counter()
        got = cat.compute(batch, bank)
        t_predict += time.perf_counter() - t0
        run.computed += len(batch)
        if results is not None:
            results.update({i: r for (i, _), r in zip(batch, got)})
        bar.update(len(batch))
        if progress:
            bar.set_postfix(computed=run.computed, reused=run.reused, refresh=False)
    return t_predict
