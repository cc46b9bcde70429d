"""The few-images flow: any method on a few images of one category. ``saa predict``, ``saa demo``
and the web UI all call :func:`run_few`; none of them repeats it.

1. **Inputs** (:func:`expand_images`, from :mod:`saa.datasets.inputs`, the one expansion rule that
   ``saa bank`` uses too): files, folders and glob patterns, each real file once (by its device and
   inode, so a file reached by two paths or through a link is scored once and is never its own
   reference); ``**`` visits each real folder once and every expansion is bounded. File names that
   are not UTF-8 are kept: shown with ``\\xNN`` escapes (:func:`display_name`) and written under
   stems with ``%NN``.
   :class:`OutputNames` gives every input a stem whose output files collide with no other input's
   (``x.png`` and ``x_saliency.png`` given together keep apart; also on case-insensitive disks).
2. **Pass 1**, when the method compares images (``Method.needs_references``) and no ``bank`` is
   handed in: the reference features of every readable image go to a
   :class:`~saa.saliency.bank.FeatureStore` in a temporary folder inside the output folder, and
   the bank of them is built (none with fewer than two readable images: the method then says what
   it did instead). With ``bank=`` (references made elsewhere) each image is scored against it and
   pass 1 is skipped: a :class:`~saa.bank.ReferenceBank` of good parts scores each image with its
   own per-image scorer (:meth:`~saa.bank.ReferenceBank.predict`: an image that is one of the
   bank's references is scored without it, and its notes say so), so an image's map depends on the
   bank and the image only, never on the other images of the call; any other bank object is passed
   to ``Method.predict`` with ``index=None``.
3. **Each image** is decoded ONCE (:func:`saa.image_io.read_rgb`; between pass 1 and the
   prediction its pixels wait in a bounded stash), predicted, scored and judged: with a
   :class:`~saa.verdict.Decision` from a run, the score is computed exactly as the run computed it
   (``Normalisation.apply`` of the ``out_size`` map), so the verdicts of the run's own images are the
   run's, bit for bit. Its files are written once each (``.npy``, ``_saliency.npy``, ``.json``,
   ``_mask.png``).
4. **Pictures**, from the FULL-SIZE map (``Prediction.anomaly_map_full``), on ONE colour scale per
   call. With a run's normalisation the scale is the run's ``[0, 1]`` (the run's ``(A - lo) / (hi -
   lo)`` applied to the full-size map; values beyond it are drawn at the ends and the colour bar
   says so), known before any image: each image is drawn as soon as it is predicted. A decision on
   the raw scale that names a scale of its own (a calibrated bank's
   :class:`~saa.bank.BankDecision`: 0 to its DEFECT threshold) is used the same way, so the
   pictures do not depend on the batch either. Otherwise the
   scale is the joint range of the call's full-size maps, known after the last image: what drawing
   needs (the image, the full-size map, the saliency) waits in the stash -- in memory up to
   :data:`STASH_MEMORY_BYTES`, beyond that in files of the temporary folder -- and is drawn in a
   second loop. Memory stays bounded whatever the number of images; only the light part of each
   prediction (scores, regions, notes) is kept.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..datasets.inputs import (IMAGE_SUFFIXES, MAX_FOLDERS, MAX_MATCHES, Expansion,  # noqa: F401 (re-exported)
                               display_name, expand_images)
from ..errors import ImageReadError, SaaError

__all__ = ["IMAGE_SUFFIXES", "MAX_MATCHES", "MAX_FOLDERS", "STASH_MEMORY_BYTES", "DEFAULT_PANELS", "Expansion",
           "expand_images", "display_name", "OutputNames", "FewInput", "FewOptions", "FewResult", "FewOutcome",
           "run_few", "choose_panels"]

log = logging.getLogger("saa.few")

#: what the stash keeps in memory (decoded images, full-size maps) before it spills to files
STASH_MEMORY_BYTES = 256 * 2 ** 20
DEFAULT_PANELS = ("image", "anomaly_map", "saliency", "boxes")


def _clean_stem(stem: str) -> str:
    """A stem that is valid UTF-8 and printable: undecodable bytes as ``%NN``, other control
    characters as ``_``."""
    out = []
    for c in stem:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogate escape)
            out.append(f"%{o - 0xDC00:02X}")
        elif 0xD800 <= o <= 0xDFFF or not c.isprintable():
            out.append("_")
        else:
            out.append(c)
    return "".join(out) or "_"


class OutputNames:
    """Stems whose output files never collide: every file a stem may get (:data:`KINDS`) is
    reserved when the stem is given, and a stem one of whose files is taken (by another stem's
    files, or by a name in :data:`RESERVED`) gets ``_1``, ``_2``, ... Compared case-insensitively,
    so the names stay apart on case-insensitive file systems too."""

    KINDS = {"map": ".npy", "saliency": "_saliency.npy", "json": ".json", "overlay": "_overlay.png",
             "panels": "_panels.png", "mask": "_mask.png", "map_png": "_map.png"}
    RESERVED = ("predictions.csv", "report.html")

    def __init__(self):
        self._taken = {n.casefold() for n in self.RESERVED}

    def stem_for(self, path) -> str:
        from ..image_io import safe_file_name

        base = _clean_stem(Path(os.fsdecode(path) if isinstance(path, bytes) else str(path)).stem)
        n = 0
        while True:
            stem = safe_file_name(base if n == 0 else f"{base}_{n}", reserve=16)
            names = [(stem + suffix).casefold() for suffix in self.KINDS.values()]
            if not any(name in self._taken for name in names):
                self._taken.update(names)
                return stem
            n += 1

    @classmethod
    def file(cls, out: Path, stem: str, kind: str) -> Path:
        return Path(out) / (stem + cls.KINDS[kind])


def choose_panels(spec, method) -> Optional[tuple[str, ...]]:
    """The panels to draw for ``method`` from a ``--panels`` value (None: the default ones the
    method has; ``none``: no panel picture, returns None; ``all``: every panel it can draw); a
    one-line :class:`SaaError` for a panel the method cannot draw."""
    from ..visualize import parse_panels

    if spec is None:
        return tuple(k for k in DEFAULT_PANELS if k in method.panels)
    if spec.strip().lower() == "none":
        return None
    if spec.strip().lower() == "all":
        return tuple(k for k in method.panels if k != "ground_truth")
    try:
        panels = parse_panels(spec)
    except ValueError as e:
        raise SaaError(f"--panels: {e}") from None
    bad = [k for k in panels if k not in method.panels or k == "ground_truth"]
    if bad:
        raise SaaError(f"--panels: method {method.name} cannot draw {', '.join(bad)} "
                       f"(it has {', '.join(k for k in method.panels if k != 'ground_truth')})")
    return panels


# ---------------------------------------------------------------------------------------------
# the flow


@dataclass
class FewInput:
    """One image of a call: ``path`` (the file; None for an image given as pixels), ``stem`` (its
    output files: see :class:`OutputNames`), ``rgb`` (pixels decoded already, e.g. by the web UI
    when it checked the upload; otherwise the file is decoded here, once) and ``name`` (what the
    user reads; default :func:`display_name` of the path)."""

    path: Optional[str]
    stem: str
    rgb: Optional[np.ndarray] = None
    name: str = ""

    def __post_init__(self):
        if not self.name:
            self.name = display_name(self.path) if self.path is not None else self.stem


@dataclass(frozen=True)
class FewOptions:
    """What :func:`run_few` writes and keeps.

    ``panels``: the panels of ``<stem>_panels.png`` (None: no panel picture); ``overlay``: write
    ``<stem>_overlay.png``; ``map_file``: ``<stem>.npy`` holds the ``"out_size"`` map (``saa
    predict``), the ``"full"``-size map (demo, UI) or nothing (None); ``saliency_file``: write
    ``<stem>_saliency.npy`` when the method has a saliency; ``json_file``: ``<stem>.json``;
    ``save_masks``: ``<stem>_mask.png`` (needs a pixel threshold); ``keep_pictures``: keep the drawn
    pictures in each :class:`FewResult` (a few images only); ``keep_arrays``: keep each full
    :class:`~saa.prediction.Prediction` (otherwise its image-size arrays are dropped);
    ``panel_height``: rows of a panel."""

    panels: Optional[tuple[str, ...]] = DEFAULT_PANELS
    overlay: bool = True
    map_file: Optional[str] = "out_size"
    saliency_file: bool = True
    json_file: bool = True
    save_masks: bool = False
    keep_pictures: bool = False
    keep_arrays: bool = False
    panel_height: int = 256


@dataclass
class FewResult:
    """One image's result: the prediction (light unless ``keep_arrays``), the method's raw score,
    the score on ``scale`` (``"raw"`` or the run's ``"normalised"``), the verdict and thresholds
    (None without a decision), the files written and, with ``keep_pictures``, the pictures."""

    input: FewInput
    prediction: Any
    raw_score: float
    score: float
    scale: str
    verdict: Optional[str] = None
    image_threshold: Optional[float] = None
    pixel_threshold: Optional[float] = None
    thresholds_from: Optional[str] = None
    files: dict[str, Path] = field(default_factory=dict)
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    #: a calibrated bank's REVIEW threshold (REVIEW when it <= score < image_threshold)
    review_threshold: Optional[float] = None

    def row(self) -> dict[str, str]:
        """The ``predictions.csv`` row (full precision)."""
        return {"image": self.input.name, "stem": self.input.stem, "raw_score": repr(self.raw_score),
                "score": repr(self.score), "scale": self.scale,
                "threshold": "" if self.image_threshold is None else repr(float(self.image_threshold)),
                "verdict": self.verdict or "",
                "review_threshold": "" if self.review_threshold is None else repr(float(self.review_threshold))}

    def verdict_line(self) -> str:
        """``DEFECT  normalised score 0.7938 >= threshold 0.5385  parts/0001.png`` (REVIEW: ``>= review
        threshold ... < threshold ...``)."""
        from ..visualize import format_apart

        if self.image_threshold is None:
            return f"{self.verdict or '-':<7s} {self.scale} score {self.score:.4f}  {self.input.name}"
        s, t = f"{self.score:.4f}", f"{self.image_threshold:.4g}"
        r = "" if self.review_threshold is None else f"{self.review_threshold:.4g}"

        def same_order(text: str, value: float, other_text: str, other: float) -> bool:
            return (float(text) > float(other_text)) - (float(text) < float(other_text)) == (value > other) - (value < other)

        if not (same_order(s, self.score, t, self.image_threshold)
                and (not r or same_order(s, self.score, r, self.review_threshold))):
            # more digits: a score just below a threshold must never read as equal to it, or above it
            s, t, r = format_apart(self.score, self.image_threshold, self.review_threshold, digits=4)
        if self.verdict == "REVIEW" and self.review_threshold is not None:
            thr = f" >= review threshold {r}, < threshold {t}"
        else:
            thr = f" {'>=' if self.verdict == 'DEFECT' else '<'} threshold {t}"
        return f"{self.verdict or '-':<7s} {self.scale} score {s}{thr}  {self.input.name}"


@dataclass
class FewOutcome:
    """A call's results (in input order, the unreadable ones left out), the inputs that could not be
    read with why, the colour scale of its pictures and notes said once for the call."""

    results: list[FewResult] = field(default_factory=list)
    failed: list[tuple[FewInput, str]] = field(default_factory=list)
    scale: Any = None
    notes: list[str] = field(default_factory=list)


class _Stash:
    """Arrays waiting between two loops: in memory up to ``budget`` bytes, then in ``.npz`` files
    of ``folder()`` (uncompressed; read back and deleted by :meth:`pop`)."""

    def __init__(self, folder: Callable[[], Path], budget: int):
        self._folder, self._budget = folder, int(budget)
        self._mem: dict[str, dict[str, Optional[np.ndarray]]] = {}
        self._used = 0

    def put(self, key: str, **arrays: Optional[np.ndarray]) -> None:
        size = sum(int(a.nbytes) for a in arrays.values() if a is not None)
        if self._used + size <= self._budget:
            self._mem[key] = arrays
            self._used += size
            return
        np.savez(self._folder() / f"stash_{key}.npz", **{k: v for k, v in arrays.items() if v is not None})

    def pop(self, key: str, names: Sequence[str]) -> dict[str, Optional[np.ndarray]]:
        if key in self._mem:
            arrays = self._mem.pop(key)
            self._used -= sum(int(a.nbytes) for a in arrays.values() if a is not None)
            return arrays
        path = self._folder() / f"stash_{key}.npz"
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: (np.asarray(z[n]) if n in z.files else None) for n in names}
        path.unlink()
        return arrays


class _Scratch:
    """The call's temporary folder: inside ``out`` (hidden, removed at the end: nothing is written
    outside the output folder) or, without one, a system temporary folder; made when first needed."""

    def __init__(self, out: Optional[Path]):
        self.out = out
        self.path: Optional[Path] = None

    def __call__(self) -> Path:
        if self.path is None:
            if self.out is not None:
                self.path = Path(self.out) / f".saa_tmp_{secrets.token_hex(4)}"
                self.path.mkdir(parents=True)
            else:
                self.path = Path(tempfile.mkdtemp(prefix="saa_few_"))
        return self.path

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


def _light(pred):
    """``pred`` without its image-size arrays (they are on disk or drawn); keeps scores, regions and
    notes."""
    return dataclasses.replace(pred, anomaly_map_full=np.zeros((0, 0), np.float32), saliency=None,
                               object_masks=None, kept_masks=None, trace={})


class _FewRun:
    """One call of :func:`run_few` in named steps: decode, pass 1 (the images as each other's
    references), predict one image, its scores and mask, its result, its pictures (now, or once
    the colour scale is known)."""

    def __init__(self, method, category, out, decision, bank, options, on_result, on_failure):
        from ..visualize import MapScale

        self.method, self.category, self.out, self.decision, self.bank = method, category, out, decision, bank
        self.options, self.on_result, self.on_failure = options, on_result, on_failure
        self.outcome = FewOutcome()
        self.scratch = _Scratch(out)
        self.stash = _Stash(self.scratch, STASH_MEMORY_BYTES)
        self.norm = decision.normalisation if decision is not None else None
        own_scale = getattr(decision, "map_scale", None)
        self.outcome.scale = (MapScale(0.0, 1.0, "normalised") if self.norm is not None
                              else (own_scale() if own_scale else None))
        self.review_t = getattr(decision, "review_threshold", None)
        self.own_bank = None
        self.passed_one = bank is None and method.needs_references
        self.pictures = bool(options.overlay or options.panels) and (out is not None or options.keep_pictures)
        self.drawn_now = self.outcome.scale is not None
        self.ranges: list[tuple[float, float]] = []

    def fail(self, inp: FewInput, why: str) -> None:
        self.outcome.failed.append((inp, why))
        log.error("%s (skipped)", why)
        if self.on_failure is not None:
            self.on_failure(inp, why)

    def decode(self, inp: FewInput) -> Optional[np.ndarray]:
        if inp.rgb is not None:
            return inp.rgb
        from ..image_io import read_rgb

        try:
            return read_rgb(inp.path)
        except ImageReadError as e:
            self.fail(inp, display_name(str(e)))
            return None

    def pass_one(self, todo: list[FewInput]) -> list[FewInput]:
        """The readable inputs' reference features (their images stashed for the predictions); with
        two or more, the bank they form."""
        from ..saliency.bank import FeatureStore

        store, ok = FeatureStore(self.scratch() / "features"), []
        for inp in todo:
            rgb = self.decode(inp)
            if rgb is None:
                continue
            key = str(len(ok))
            store.put(key, self.method.reference_features(rgb))
            if inp.rgb is None:
                self.stash.put("rgb" + key, rgb=rgb)
            ok.append(inp)
        if len(ok) >= 2:
            self.own_bank = self.method.bank_from_store(store, [str(i) for i in range(len(ok))])
        return ok

    def image(self, i: int, inp: FewInput) -> Optional[np.ndarray]:
        """The decoded image of the ``i``-th input (from pass 1's stash, or decoded now)."""
        if self.passed_one:
            return inp.rgb if inp.rgb is not None else self.stash.pop("rgb" + str(i), ["rgb"])["rgb"]
        return self.decode(inp)

    def predict(self, i: int, inp: FewInput, rgb: np.ndarray):
        bank = self.bank
        if bank is not None and hasattr(bank, "for_image"):  # a ReferenceBank: its per-image scorer
            return bank.predict(self.method, rgb, self.category, path=inp.path)
        if bank is not None:
            return self.method.predict(rgb, self.category, bank=bank, index=None)
        own = self.own_bank
        return self.method.predict(rgb, self.category, bank=own, index=i if own is not None else None)

    def scored(self, amap, full, raw_score: float, shape):
        """(score, the map as drawn, the predicted mask or None): the run's arithmetic on the
        ``out_size`` map as the run stored it, or the raw scale (a bank's thresholds)."""
        from ..metrics import normalize_with
        from ..verdict import predicted_mask

        decision, norm = self.decision, self.norm
        if norm is not None:
            eval_maps, scores = norm.apply([amap])
            mask = predicted_mask(eval_maps[0], decision.pixel_threshold, shape)
            shown = np.zeros_like(full) if norm.constant else normalize_with(full, norm.lo, norm.hi)
            return float(scores[0]), shown, mask
        mask = None
        if decision is not None and decision.pixel_threshold is not None:
            mask = predicted_mask(amap, decision.pixel_threshold, shape)
        return raw_score, full, mask

    def result(self, inp: FewInput, pred, raw_score: float, score: float) -> FewResult:
        d = self.decision
        return FewResult(inp, pred if self.options.keep_arrays else _light(pred), raw_score, score,
                         "normalised" if self.norm is not None else "raw",
                         d.verdict(score) if d is not None else None,
                         d.image_threshold if d is not None else None,
                         d.pixel_threshold if d is not None else None,
                         d.source if d is not None else None, review_threshold=self.review_t)

    def one(self, i: int, inp: FewInput) -> None:
        """Predict, score, write and report one input; draw it now or keep what its pictures need."""
        rgb = self.image(i, inp)
        if rgb is None:
            return
        pred = self.predict(i, inp, rgb)
        amap = np.asarray(pred.anomaly_map, dtype=np.float32)
        full = np.asarray(pred.anomaly_map_full, dtype=np.float32)
        raw_score = float(pred.score)
        score, shown, mask = self.scored(amap, full, raw_score, rgb.shape[:2])
        res = self.result(inp, pred, raw_score, score)
        if self.out is not None:
            _write_files(self.out, res, pred, amap, full, mask, self.options)
        self.outcome.results.append(res)
        if self.on_result is not None:
            self.on_result(res)
        saliency = pred.saliency if self.options.panels and "saliency" in self.options.panels else None
        del pred
        if not self.pictures:
            return
        if self.drawn_now:
            _draw(self.out, res, rgb, shown, saliency, mask, self.outcome.scale, self.options)
        else:
            self.ranges.append((float(shown.min()), float(shown.max())) if shown.size else (0.0, 0.0))
            self.stash.put("draw" + str(len(self.outcome.results) - 1), rgb=rgb if inp.rgb is None else None,
                           shown=shown, saliency=saliency)

    def draw_deferred(self) -> None:
        """The pictures kept for later, on one raw scale from the lowest to the highest map value."""
        from ..visualize import MapScale

        if not (self.pictures and not self.drawn_now and self.outcome.results):
            return
        scale = MapScale(min(r[0] for r in self.ranges), max(r[1] for r in self.ranges), "raw")
        self.outcome.scale = scale
        for j, res in enumerate(self.outcome.results):
            got = self.stash.pop("draw" + str(j), ["rgb", "shown", "saliency"])
            rgb = res.input.rgb if got["rgb"] is None else got["rgb"]
            _draw(self.out, res, rgb, got["shown"], got["saliency"], None, scale, self.options)


def run_few(method, category: str, inputs: Sequence[FewInput], *, out=None, decision=None, bank=None,
            options: FewOptions = FewOptions(), on_result: Optional[Callable[[FewResult], None]] = None,
            on_failure: Optional[Callable[[FewInput, str], None]] = None) -> FewOutcome:
    """``method`` (loaded or not) on ``inputs``, images of ``category``; see the module docstring.

    ``out``: the output folder (created; None: nothing written, e.g. a caller that only wants the
    results). ``decision``: a :class:`~saa.verdict.Decision` (thresholds and, from a run, its
    normalisation) or None (raw scores, no verdict). ``bank``: references made elsewhere (each image
    scored against them with ``index=None``); None: for a method that needs references, the images
    given are each other's (pass 1). ``on_result`` is called with each result as soon as the image
    is predicted (its pictures may come later), ``on_failure`` with an input that could not be read
    and why (it is then left out; the others go on).
    """
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    run = _FewRun(method, category, out, decision, bank, options, on_result, on_failure)
    try:
        todo: list[FewInput] = list(inputs)
        if run.passed_one:
            todo = run.pass_one(todo)
        for i, inp in enumerate(todo):
            run.one(i, inp)
        run.draw_deferred()
    finally:
        run.scratch.remove()
    return run.outcome


def _write_files(out: Path, res: FewResult, pred, amap, full, mask, options: FewOptions) -> None:
    """The image's files, each written once: the map, the saliency, the JSON (with the score and
    verdict) and the predicted mask."""
    from ..image_io import atomic_save_npy as save_npy, atomic_save_png as save_png, atomic_write_text as write_text
    from ..verdict import mask_png

    stem = res.input.stem
    if options.map_file is not None:
        res.files["map"] = OutputNames.file(out, stem, "map")
        save_npy(res.files["map"], full if options.map_file == "full" else amap)
    if options.saliency_file and pred.saliency is not None:
        res.files["saliency"] = OutputNames.file(out, stem, "saliency")
        save_npy(res.files["saliency"], np.asarray(pred.saliency, dtype=np.float32))
    if options.json_file:
        info = pred.regions_dict()
        info.update(image=res.input.name, raw_score=res.raw_score, score=res.score, scale=res.scale,
                    verdict=res.verdict, image_threshold=res.image_threshold, pixel_threshold=res.pixel_threshold,
                    thresholds_from=res.thresholds_from)
        if res.review_threshold is not None:
            info["review_threshold"] = res.review_threshold
        res.files["json"] = OutputNames.file(out, stem, "json")
        write_text(res.files["json"], json.dumps(info, indent=1))
    if options.save_masks and mask is not None:
        res.files["mask"] = OutputNames.file(out, stem, "mask")
        save_png(res.files["mask"], mask_png(mask))


def _draw(out: Optional[Path], res: FewResult, rgb, shown, saliency, mask, scale, options: FewOptions) -> None:
    """The overlay and the panels of one image, from its full-size map ``shown`` on ``scale``."""
    from .. import visualize
    from ..image_io import atomic_save_png

    pictures = {}
    if options.overlay:
        pictures["overlay"] = visualize.prediction_overlay(rgb, res.prediction, scale=scale, anomaly_map=shown,
                                                           defect_mask=mask)
    if options.panels:
        pictures["panels"] = visualize.prediction_panels(
            rgb, res.prediction, panels=options.panels, height=options.panel_height, scale=scale, anomaly_map=shown,
            score=res.score, verdict=res.verdict, threshold=res.image_threshold, defect_mask=mask,
            pixel_threshold=res.pixel_threshold, saliency=saliency, review_threshold=res.review_threshold)
    for kind, picture in pictures.items():
        if out is not None:
            res.files[kind] = OutputNames.file(out, res.input.stem, kind)
            atomic_save_png(res.files[kind], picture)
    if options.keep_pictures:
        res.pictures.update(pictures)
