"""The run folder: its layout (:class:`RunFolder`, the only code that knows where each file of a
run lives), the per-image results store, and the checks that keep it honest.

Layout (``OUT`` is ``--out``)::

    OUT/config.yaml                     the resolved configuration (its Reproduce line reruns the run)
    OUT/metrics.json                    every number (:class:`saa.records.RunResult`)
    OUT/metrics.csv, OUT/metrics.md     the table (percent, 2 decimals, n/a)
    OUT/report.html                     the HTML report (:mod:`saa.report`)
    OUT/run.lock                        while a run writes the folder: who (:mod:`saa.runlock`)
    OUT/run_state.json                  the settings the folder's files belong to, running / complete
                                        (:class:`saa.records.RunState`)
    OUT/vand/                           kind ``visa_challenge``: the VAND 2023 tree (:mod:`saa.vand`)
    OUT/<category>/maps/<stem>.npz      per image: ``map`` (out_size², float32, raw method output),
                                        ``image_score`` (raw), ``image_size``, ``fingerprint``,
                                        ``image`` (its path), ``key``, ``source`` (size and mtime of the
                                        image file when it was computed)
    OUT/<category>/maps/<stem>.json     the image's regions / notes (:class:`saa.records.ImageSidecar`),
                                        written first; a result without a readable one is recomputed
    OUT/<category>/scores.csv           key, label, raw score, normalised image score, verdict
                                        (:class:`saa.records.ScoreRow`)
    OUT/<category>/masks/<stem>.png     ``--save-masks``: the predicted defect pixels
    OUT/<category>/cross_features/      pass-1 features of a method that compares each image with the
                                        category's others, while the category is incomplete
    OUT/<category>/bank/                ``saa run --references`` / ``--k-shot``: the reference bank of good
                                        parts the category's images are scored against (:mod:`saa.bank`)

``<stem>`` is :func:`saa.naming.stored_stem` of the sample key: injective, so no two samples can
share a file. A category must be a plain folder name and every path the folder hands out is checked
to lie inside ``OUT`` (:meth:`RunFolder.path`), so nothing is written outside the output folder.

A stored result is reused only when it is readable, complete, of the current ``out_size``, made by
the same method with the same settings (``fingerprint``; for a method with references it covers
the category's image set too), for the same key, from the same image file (``source``), and its
``.json`` sidecar is readable. Anything else is recomputed. Files are written atomically (the
sidecar first), so an interrupted run loses at most the image in progress.

One run writes a folder at a time (:meth:`RunFolder.lock`). When a run starts with settings other
than those the folder's files belong to (:meth:`RunFolder.begin`), the old ``metrics.*`` and
``report.html`` are removed first, so an interrupted rerun never leaves the old run's numbers
beside the new run's maps; ``saa report`` reads the run state to refuse or label a folder whose
files come from different runs (:meth:`RunFolder.report_problems`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from .errors import SaaError
from .image_io import atomic_write_bytes, atomic_write_text
from .naming import plain_name, stored_stem
from .records import (ImageSidecar, LockInfo, RecordError, RunResult, RunState, ScoreRow, parse_json, parse_record,
                      read_json)
from .runlock import RunLock, busy_message, lock_holder

__all__ = ["ImageResult", "StoredMap", "RunFolder", "ResultStore", "CategoryStore", "map_file_name", "map_path",
           "save_image_result", "load_image_result", "source_token", "json_default", "SCORE_COLUMNS"]

log = logging.getLogger("saa.results")

_NPZ_KEYS = ("map", "image_score", "image_size", "fingerprint")
PathLike = Union[str, os.PathLike]
#: the columns of ``<category>/scores.csv``
SCORE_COLUMNS = ("key", "label", "raw_score", "image_score", "verdict")


@dataclass
class ImageResult:
    """The raw result of one image, as stored on disk."""

    map: np.ndarray  # (out_size, out_size) float32
    image_score: float  # raw (max of the raw map unless the method says otherwise)
    image_size: tuple[int, int]  # (H, W) of the original image


def map_file_name(key: str) -> str:
    """File name (without folder) of a sample's result: :func:`saa.naming.stored_stem` + ``.npz``
    (``good/000`` -> ``good__000.npz``)."""
    return stored_stem(key) + ".npz"


def map_path(out_dir: PathLike, category: str, key: str) -> Path:
    """Where a sample's result lives in a run folder (the category checked to be a plain name)."""
    return ResultStore(out_dir).category(category).result_path(key)


def source_token(path: PathLike) -> str:
    """``"<bytes>:<mtime ns>"`` of an image file: a stored result made from another version of the
    file is stale. Empty when the file cannot be stat'ed (the read then reports the problem)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def save_image_result(path: PathLike, result: ImageResult, fingerprint: str, image: str = "",
                      regions: Optional[dict] = None, key: str = "", source: str = "") -> None:
    """Write the ``.npz`` (and the regions ``.json`` beside it, first) atomically."""
    path = Path(path)
    if regions is not None:
        atomic_write_text(path.with_name(path.name[:-4] + ".json"), json.dumps(regions, indent=1, default=json_default))
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        map=np.asarray(result.map, dtype=np.float32),
        image_score=np.float64(result.image_score),
        image_size=np.asarray(result.image_size, dtype=np.int64),
        fingerprint=np.str_(fingerprint),
        image=np.str_(image),
        key=np.str_(key),
        source=np.str_(source),
    )
    atomic_write_bytes(path, buf.getvalue())


def _read(path: Path) -> Optional[dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if any(k not in z.files for k in _NPZ_KEYS):
                return None
            return {
                "map": np.asarray(z["map"], dtype=np.float32),
                "score": float(z["image_score"]),
                "size": tuple(int(v) for v in np.asarray(z["image_size"]).reshape(-1)),
                "fingerprint": str(z["fingerprint"]),
                "key": str(z["key"]) if "key" in z.files else None,
                "source": str(z["source"]) if "source" in z.files else None,
                "image": str(z["image"]) if "image" in z.files else "",
            }
    except Exception as e:  # truncated zip, bad header, wrong dtype ...
        log.debug("%s: unreadable (%s): recomputing", path, e)
        return None


def load_image_result(path: PathLike, out_size: Optional[int] = None, fingerprint: Optional[str] = None,
                      key: Optional[str] = None, source: Optional[str] = None) -> Optional[ImageResult]:
    """The stored result, or None when the file is missing, unreadable, partial or stale (another
    ``out_size``, ``fingerprint``, ``key`` or ``source`` than the ones given)."""
    path = Path(path)
    if not path.is_file():
        return None
    z = _read(path)
    if z is None:
        return None
    m, score, size = z["map"], z["score"], z["size"]
    if m.ndim != 2 or len(size) != 2 or min(size) < 1 or not np.isfinite(m).all() or not math.isfinite(score):
        return None
    if out_size is not None and m.shape != (out_size, out_size):
        return None
    if fingerprint is not None and z["fingerprint"] != fingerprint:
        return None
    if key is not None and z["key"] != key:
        return None
    if source is not None and z["source"] != source:
        return None
    return ImageResult(m, score, (size[0], size[1]))


@dataclass
class StoredMap:
    """A stored map as the report reads it back (no staleness check: the report compares the
    ``fingerprint`` with the one its run recorded)."""

    map: np.ndarray
    image_size: tuple[int, int]
    image: str
    fingerprint: str
    key: Optional[str]


def _sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_RERUN = ("it is rewritten at the end of every `saa run`: run the same `saa run ... --out {run}` again "
          "(the stored maps are reused) or restore the file")


class RunFolder:
    """A run folder (``--out``): the one place that knows its layout (module docstring). Every path
    it hands out lies inside it."""

    CONFIG = "config.yaml"
    METRICS_JSON = "metrics.json"
    METRICS_CSV = "metrics.csv"
    METRICS_MD = "metrics.md"
    REPORT = "report.html"
    STATE = "run_state.json"
    LOCK = "run.lock"
    VAND = "vand"
    #: the files of a finished run that a rerun with other settings removes when it starts
    RUN_OUTPUTS = (METRICS_JSON, METRICS_CSV, METRICS_MD, REPORT)

    def __init__(self, out_dir: PathLike):
        self.root = Path(out_dir)

    def path(self, *parts: str) -> Path:
        """``root / parts``, refused (:class:`SaaError`) when it would resolve outside the root."""
        p = self.root.joinpath(*parts)
        root = self.root.resolve()
        resolved = p.resolve()
        if resolved != root and root not in resolved.parents:
            raise SaaError(f"refusing to write {p}: it is outside the output folder {self.root}")
        return p

    def category(self, name: str) -> "CategoryStore":
        return CategoryStore(self, plain_name(name, "category"))

    # -- the files of the run

    @property
    def config_yaml(self) -> Path:
        return self.root / self.CONFIG

    @property
    def metrics_json(self) -> Path:
        return self.root / self.METRICS_JSON

    @property
    def metrics_csv(self) -> Path:
        return self.root / self.METRICS_CSV

    @property
    def metrics_md(self) -> Path:
        return self.root / self.METRICS_MD

    @property
    def report_html(self) -> Path:
        return self.root / self.REPORT

    @property
    def state_json(self) -> Path:
        return self.root / self.STATE

    @property
    def lock_file(self) -> Path:
        return self.root / self.LOCK

    @property
    def vand_root(self) -> Path:
        return self.root / self.VAND

    def rerun_hint(self) -> str:
        return _RERUN.format(run=self.root)

    # -- metrics

    def write_metrics(self, result: RunResult, table_csv: str, table_md: str) -> None:
        """``metrics.json`` (the typed record), ``metrics.csv`` and ``metrics.md``."""
        atomic_write_text(self.metrics_json, json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")
        atomic_write_text(self.metrics_csv, table_csv)
        atomic_write_text(self.metrics_md, table_md)

    def read_metrics(self, path: Optional[PathLike] = None) -> RunResult:
        """``metrics.json`` (or the copy at ``path``), parsed once; a one-line
        :class:`~saa.records.RecordError` naming the file, the field and the problem (and how to
        rewrite it) otherwise."""
        path = self.metrics_json if path is None else Path(path)
        what = "a metrics file of `saa run`"
        hint = self.rerun_hint()
        data = read_json(path, what, hint)
        if not isinstance(data, dict):
            raise RecordError(f"{path}: not {what} (the top level is a JSON {type(data).__name__}, not an "
                              f"object); {hint}")
        return parse_record(RunResult, data, str(path), hint)

    # -- the run's state and lock

    def lock(self, command: Optional[str] = None) -> RunLock:
        """The folder's lock (not yet taken: ``with folder.lock(): ...`` or ``.acquire()``)."""
        return RunLock(self.lock_file, command)

    def holder(self) -> Optional[LockInfo]:
        """The live run holding the folder's lock, or None."""
        return lock_holder(self.lock_file)

    def read_state(self) -> Optional[RunState]:
        """``run_state.json`` (None when the folder has none: a new folder, or one of saa before 0.2);
        a one-line :class:`~saa.records.RecordError` when it is unreadable."""
        if not self.state_json.is_file():
            return None
        data = read_json(self.state_json, "a run state of `saa run`", "delete it; the next `saa run` rewrites it")
        return parse_record(RunState, data, str(self.state_json), "delete it; the next `saa run` rewrites it")

    def begin(self, settings_fingerprint: str, config_text: str, command: str = "") -> list[str]:
        """A run with ``settings_fingerprint`` starts (its lock held): when the folder's files belong to
        other (or unknown) settings, their ``metrics.*`` / ``report.html`` are removed first; then
        ``config.yaml`` is written and the state set to ``running``. Returns notes for the user."""
        import socket

        notes = []
        try:
            state = self.read_state()
        except RecordError as e:
            notes.append(f"{e} (ignored: the settings of the files in the folder are unknown)")
            state = None
        old = [p for p in (self.root / n for n in self.RUN_OUTPUTS) if p.is_file()]
        if old and (state is None or state.settings_fingerprint != settings_fingerprint):
            why = ("a run with other settings" if state is not None else
                   "a run whose settings are not recorded (no run_state.json)")
            if state is not None and state.status == "complete":
                why += f", finished {state.finished}"
            for p in old:
                p.unlink()
            notes.append(f"{self.root}: the folder held the results of {why}: removed its "
                         f"{', '.join(p.name for p in old)} so they cannot be taken for this run's; stored maps are "
                         "reused only where they match this run's settings")
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_yaml, config_text)
        self._write_state(RunState(status="running", settings_fingerprint=settings_fingerprint, started=_now(),
                                   pid=os.getpid(), host=socket.gethostname(), command=command,
                                   config_sha256=hashlib.sha256(config_text.encode("utf-8")).hexdigest()))
        return notes

    def complete(self) -> None:
        """The run's metrics files are written: the state says ``complete``."""
        state = self.read_state()
        if state is None:
            return
        self._write_state(state.model_copy(update={"status": "complete", "finished": _now()}))

    def _write_state(self, state: RunState) -> None:
        atomic_write_text(self.state_json, json.dumps(state.model_dump(mode="json"), indent=1) + "\n")

    def config_sha256(self) -> Optional[str]:
        return _sha256(self.config_yaml)

    # -- what a reader of the folder must know

    def check_readable(self, doing: str = "`saa report`") -> None:
        """Raise a one-line :class:`SaaError` when the folder cannot be read as one run: a run is
        writing it now, or its metrics are missing (with what to run)."""
        holder = self.holder()
        if holder is not None:
            raise SaaError(busy_message(self.root, holder, f"run {doing}"))
        if self.metrics_json.is_file():
            return
        try:
            state = self.read_state()
        except RecordError:
            state = None
        if state is not None and state.status == "running":
            raise SaaError(f"{self.root}: the run started here at {state.started} has not finished (it was "
                           f"interrupted), so the folder has no metrics.json of its settings; finish it: "
                           f"saa run {self.config_yaml} --out {self.root} (the stored maps are reused)")
        raise SaaError(f"{self.root} is not a run folder: {self.metrics_json} not found "
                       f"(run `saa run CONFIG --out {self.root}` first)")

    def report_problems(self, result: RunResult) -> list[str]:
        """Why the folder's ``metrics.json``, ``config.yaml`` and run state may come from different
        runs (empty when they agree). Per-category maps are checked by the report itself
        (:meth:`CategoryStore.read_map` and the category's ``map_fingerprint``)."""
        problems = []
        try:
            state = self.read_state()
        except RecordError as e:
            state = None
            problems.append(str(e))
        fp = result.settings_fingerprint
        if state is not None and fp is not None and state.settings_fingerprint != fp:
            problems.append(f"metrics.json comes from a run with other settings than the last run started in this "
                            f"folder ({state.started}): its numbers are not those of the maps and config.yaml here")
        elif state is not None and state.status == "running":
            problems.append(f"the last run started in this folder ({state.started}) did not finish: metrics.json is "
                            f"from the earlier complete run with the same settings (finished {result.finished}); "
                            f"maps written since may differ. Finish it: saa run {self.config_yaml} --out {self.root}")
        if result.config_sha256 is not None:
            now = self.config_sha256()
            if now is None:
                problems.append("config.yaml is missing: the dataset and settings shown are not known")
            elif now != result.config_sha256 and (state is None or state.config_sha256 != now
                                                  or state.settings_fingerprint != fp):
                problems.append("config.yaml is not the one this run wrote (it was edited or replaced since): the "
                                "configuration shown and the ground truth read through it may not be this run's")
        return problems


#: The name used before the folder had a layout of its own; same class.
ResultStore = RunFolder


class CategoryStore:
    """The results of one category of a run folder."""

    def __init__(self, store: RunFolder, name: str):
        self.name = name
        self.folder = store
        self.root = store.path(name)
        self.maps_dir = store.path(name, "maps")
        self.scores_csv = store.path(name, "scores.csv")
        self.features_dir = store.path(name, "cross_features")
        self.masks_dir = store.path(name, "masks")
        self.bank_dir = store.path(name, "bank")

    def result_path(self, key: str) -> Path:
        return self.maps_dir / map_file_name(key)

    def sidecar_path(self, key: str) -> Path:
        return self.maps_dir / (stored_stem(key) + ".json")

    def mask_path(self, key: str) -> Path:
        return self.masks_dir / (stored_stem(key) + ".png")

    def check_keys(self, keys: Iterable[str]) -> None:
        """Every key has a file of its own (also on a case-insensitive file system); a dataset
        giving two samples one key is an error naming both."""
        seen: dict[str, str] = {}
        for k in keys:
            name = map_file_name(k).lower()
            if name in seen:
                raise SaaError(f"category {self.name}: samples {seen[name]!r} and {k!r} would share the "
                               f"result file {map_file_name(k)} (names that differ only in case); rename one")
            seen[name] = k

    def read_sidecar(self, key: str) -> Optional[ImageSidecar]:
        """The image's typed ``.json`` sidecar, or None (logged) when it is missing, unreadable or
        not the sidecar of ``key``: its result is then recomputed."""
        path = self.sidecar_path(key)
        try:
            side = parse_record(ImageSidecar, parse_json(path.read_bytes().decode("utf-8")), str(path))
        except (OSError, ValueError, RecursionError, RecordError) as e:
            log.debug("%s: sidecar missing or unreadable (%s): recomputing", path, str(e)[:200])
            return None
        if side.key is not None and side.key != key:
            log.debug("%s: the sidecar of %r, not %r: recomputing", path, side.key, key)
            return None
        return side

    def load(self, key: str, out_size: int, fingerprint: str, source: Optional[str] = None) -> Optional[ImageResult]:
        """The valid stored result of ``key`` (see the module docstring), or None."""
        res = load_image_result(self.result_path(key), out_size, fingerprint, key=key, source=source)
        if res is None or self.read_sidecar(key) is None:
            return None
        return res

    def save(self, key: str, result: ImageResult, fingerprint: str, image: str = "",
             regions: Optional[dict] = None, source: str = "") -> None:
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        regions = dict(regions or {})
        regions.setdefault("key", key)
        save_image_result(self.result_path(key), result, fingerprint, image=image, regions=regions, key=key,
                          source=source)

    def read_map(self, key: str) -> Optional[StoredMap]:
        """The stored map of ``key`` for a reader (the report): None when missing or unreadable."""
        path = self.result_path(key)
        if not path.is_file():
            return None
        z = _read(path)
        if z is None:
            return None
        m, size = z["map"], z["size"]
        if m.ndim != 2 or len(size) != 2 or min(size) < 1 or not np.isfinite(m).all():
            return None
        return StoredMap(m, (size[0], size[1]), z["image"], z["fingerprint"], z["key"])

    # -- scores.csv

    def write_scores(self, rows: Sequence[Sequence[str]]) -> None:
        """``scores.csv``: a header (:data:`SCORE_COLUMNS`) and one row per image."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(SCORE_COLUMNS)
        w.writerows(rows)
        atomic_write_text(self.scores_csv, buf.getvalue())

    def read_scores(self) -> list[ScoreRow]:
        """The typed rows of ``scores.csv``; a one-line :class:`~saa.records.RecordError` naming the
        file, the line and the field otherwise."""
        path = self.scores_csv
        hint = self.folder.rerun_hint()
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError(f"{path}: corrupt (not UTF-8 text); {hint}") from None
        try:
            reader = csv.DictReader(io.StringIO(text))
            header = reader.fieldnames or []
            missing = [c for c in SCORE_COLUMNS[:4] if c not in header]
            if missing:
                raise RecordError(f"{path}: not a scores file of `saa run` (no column {', '.join(missing)}); {hint}")
            rows = []
            for line, r in enumerate(reader, start=2):
                if None in r:
                    raise RecordError(f"{path}: line {line} has more fields than the header; {hint}")
                rows.append(parse_record(ScoreRow, r, f"{path}: line {line}", hint))
        except csv.Error as e:
            raise RecordError(f"{path}: corrupt ({e}); {hint}") from None
        return rows
