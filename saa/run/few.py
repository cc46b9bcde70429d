"""The few-images flow: any method on a few images of one category. ``saa predict``, ``saa demo``
and the web UI all call :func:`run_few`; none of them repeats it.

1. **Inputs** (:func:`expand_images`): files, folders and glob patterns, each real file once (by its
   device and inode, so a file reached by two paths or through a link is scored once and is never
   its own reference); ``**`` visits each real folder once (a folder holding a link to itself or to
   an ancestor cannot make it expand forever) and every expansion stops at :data:`MAX_MATCHES`
   files / :data:`MAX_FOLDERS` folders with a one-line error. File names that are not UTF-8 are
   kept: shown with ``\\xNN`` escapes (:func:`display_name`) and written under stems with ``%NN``.
   :class:`OutputNames` gives every input a stem whose output files collide with no other input's
   (``x.png`` and ``x_saliency.png`` given together keep apart; also on case-insensitive disks).
2. **Pass 1**, when the method compares images (``Method.needs_references``) and no ``bank`` is
   handed in: the reference features of every readable image go to a
   :class:`~saa.saliency.bank.FeatureStore` in a temporary folder inside the output folder, and
   the bank of them is built (none with fewer than two readable images: the method then says what
   it did instead). With ``bank=`` (references made elsewhere, e.g. a bank of good parts) each image
   is scored against it with ``index=None`` (``CrossImageBank.scores_for``) and pass 1 is skipped.
3. **Each image** is decoded ONCE (:func:`saa.image_io.read_rgb`; between pass 1 and the
   prediction its pixels wait in a bounded stash), predicted, scored and judged: with a
   :class:`~saa.verdict.Decision` from a run, the score is computed exactly as the run computed it
   (``Normalisation.apply`` of the ``out_size`` map), so the verdicts of the run's own images are the
   run's, bit for bit. Its files are written once each (``.npy``, ``_saliency.npy``, ``.json``,
   ``_mask.png``).
4. **Pictures**, from the FULL-SIZE map (``Prediction.anomaly_map_full``), on ONE colour scale per
   call. With a run's normalisation the scale is the run's ``[0, 1]`` (the run's ``(A - lo) / (hi -
   lo)`` applied to the full-size map; values beyond it are drawn at the ends and the colour bar
   says so), known before any image: each image is drawn as soon as it is predicted. Otherwise the
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
import re
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from ..errors import ImageReadError, SaaError

__all__ = ["IMAGE_SUFFIXES", "MAX_MATCHES", "MAX_FOLDERS", "STASH_MEMORY_BYTES", "DEFAULT_PANELS", "Expansion",
           "expand_images", "display_name", "OutputNames", "FewInput", "FewOptions", "FewResult", "FewOutcome",
           "run_few", "choose_panels"]

log = logging.getLogger("saa.few")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: the most image files one call may expand to (files, folders and patterns together)
MAX_MATCHES = 100_000
#: the most folders the ``**`` of one call may visit
MAX_FOLDERS = 100_000
#: what the stash keeps in memory (decoded images, full-size maps) before it spills to files
STASH_MEMORY_BYTES = 256 * 2 ** 20
DEFAULT_PANELS = ("image", "anomaly_map", "saliency", "boxes")
_MAGIC = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------------------------
# inputs


def display_name(path) -> str:
    """``path`` as text that can always be printed and written as UTF-8: bytes that are not UTF-8
    (surrogate escapes on Linux) as ``\\xNN``, control characters escaped too."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _is_utf8(path: str) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _identity(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing or unreadable: the read error names it later
    return (st.st_dev, st.st_ino)


def _is_image(path: str) -> bool:
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass
class Expansion:
    """What :func:`expand_images` found: ``paths`` (each real file once, in the order given),
    ``duplicates`` (``(path dropped, path kept)``: the same file reached again) and ``not_utf8``
    (paths whose name is not UTF-8, kept)."""

    paths: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of thing the user should know (nothing when all is plain)."""
        out = []
        if self.duplicates:
            eg = "; ".join(f"{display_name(a)} = {display_name(b)}" for a, b in self.duplicates[:3])
            more = f" and {len(self.duplicates) - 3} more" if len(self.duplicates) > 3 else ""
            out.append(f"{len(self.duplicates)} input(s) name a file given before (another path or a link to the "
                       f"same file), each scored once: {eg}{more}")
        if self.not_utf8:
            out.append(f"{len(self.not_utf8)} file name(s) are not UTF-8, kept: shown with \\xNN escapes, their "
                       f"outputs named with %NN (e.g. {display_name(self.not_utf8[0])})")
        return out


class _Budget:
    def __init__(self):
        self.files = 0
        self.folders = 0

    def file(self, what: str) -> None:
        self.files += 1
        if self.files > MAX_MATCHES:
            raise SaaError(f"{display_name(what)}: more than {MAX_MATCHES} image files; saa predict is for a few "
                           "images (narrow the pattern, or run a dataset with `saa run`)")

    def folder(self, what: str) -> None:
        self.folders += 1
        if self.folders > MAX_FOLDERS:
            raise SaaError(f"{display_name(what)}: '**' visited more than {MAX_FOLDERS} folders; narrow the pattern")


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder or "."))
    except OSError:
        return []


def _folders_below(top: str, budget: _Budget, pattern: str) -> Iterable[str]:
    """``top`` and every folder below it (links followed), each REAL folder once (a link back to an
    ancestor, or a second way to a folder, is not entered again); folders reached without a link
    come first, so a file is listed by its real path where it has one; hidden folders are skipped,
    as glob's ``**`` does."""
    seen: set = set()
    real, links = [top], []
    while real or links:
        folder = real.pop() if real else links.pop(0)
        ident = _identity(folder or ".")
        if ident is None or ident in seen:
            continue
        seen.add(ident)
        budget.folder(pattern)
        yield folder
        subs = [os.path.join(folder, n) for n in _listdir(folder) if not n.startswith(".")]
        subs = [s for s in subs if os.path.isdir(s)]
        real.extend(reversed([s for s in subs if not os.path.islink(s)]))
        links.extend(s for s in subs if os.path.islink(s))


def _glob(pattern: str, budget: _Budget) -> list[str]:
    """The image files ``pattern`` matches (``*``, ``?``, ``[...]`` within a name; ``**``: any
    folders, each real one once), sorted; names starting with ``.`` only for a part that starts
    with ``.``."""
    import fnmatch

    seps = "/" + (os.sep if os.sep != "/" else "") + (os.altsep if os.altsep and os.altsep != "/" else "")
    anchor = os.sep if pattern[:1] in seps else ""
    parts = [p for p in re.split("[" + re.escape(seps) + "]", pattern) if p]
    found: set[str] = set()

    def walk(base: str, i: int) -> None:
        if i == len(parts):
            if _is_image(base) and base not in found:
                found.add(base)
                budget.file(pattern)
            return
        part = parts[i]
        if part == "**":
            for folder in list(_folders_below(base, budget, pattern)):
                walk(folder, i + 1)
        elif _MAGIC.search(part):
            for name in _listdir(base):
                if name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatchcase(name, part):
                    child = os.path.join(base, name)
                    if i + 1 == len(parts) or os.path.isdir(child):
                        walk(child, i + 1)
        else:
            child = os.path.join(base, part) if base else part
            if i + 1 == len(parts) or os.path.isdir(child):
                walk(child, i + 1)

    walk(anchor, 0)
    return sorted(found)


def expand_images(items: Sequence) -> Expansion:
    """Image files from the command line: a file as given; a folder: its image files (suffixes of
    :data:`IMAGE_SUFFIXES`), sorted by name, not recursive; a pattern with ``*``, ``?`` or ``[``:
    the image files it matches, sorted (``**`` recurses, each real folder once). A folder or pattern
    with no image, too many files, or a path that does not exist is a one-line :class:`SaaError`
    (a missing plain file is kept: its read error names it). Each real file is kept once."""
    budget = _Budget()
    exp = Expansion()
    ids: dict[tuple[int, int], str] = {}
    texts: set[str] = set()
    for item in items:
        text = os.fsdecode(item) if isinstance(item, bytes) else str(item)
        if os.path.isdir(text):
            found = [os.path.join(text, n) for n in _listdir(text) if _is_image(os.path.join(text, n))]
            for f in found:
                budget.file(text)
            if not found:
                raise SaaError(f"{display_name(text)}: folder has no image file ({', '.join(IMAGE_SUFFIXES)}; "
                               "sub-folders are not searched: pass 'DIR/**/*.png' for those)")
        elif os.path.lexists(text) or not _MAGIC.search(text):
            found = [text]  # a file (or a missing one: its read error names it)
            budget.file(text)
        else:
            found = _glob(text, budget)
            if not found:
                raise SaaError(f"{display_name(text)}: no image file matches this pattern")
        for f in found:
            if f in texts:
                continue  # the same text twice: said only when two different paths meet
            texts.add(f)
            ident = _identity(f)
            if ident is not None and ident in ids:
                exp.duplicates.append((f, ids[ident]))
                continue
            if ident is not None:
                ids[ident] = f
            exp.paths.append(f)
            if not _is_utf8(f):
                exp.not_utf8.append(f)
    return exp


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

    def row(self) -> dict[str, str]:
        """The ``predictions.csv`` row (full precision)."""
        return {"image": self.input.name, "stem": self.input.stem, "raw_score": repr(self.raw_score),
                "score": repr(self.score), "scale": self.scale,
                "threshold": "" if self.image_threshold is None else repr(float(self.image_threshold)),
                "verdict": self.verdict or ""}

    def verdict_line(self) -> str:
        """``DEFECT  normalised score 0.7938 >= threshold 0.5385  parts/0001.png``."""
        thr = "" if self.image_threshold is None else (
            f" {'>=' if self.verdict == 'DEFECT' else '<'} threshold {self.image_threshold:.4g}")
        return f"{self.verdict or '-':<7s} {self.scale} score {self.score:.4f}{thr}  {self.input.name}"


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
    from ..metrics import normalize_with
    from ..verdict import predicted_mask
    from ..visualize import MapScale

    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    outcome = FewOutcome()
    scratch = _Scratch(out)
    stash = _Stash(scratch, STASH_MEMORY_BYTES)
    norm = decision.normalisation if decision is not None else None
    outcome.scale = MapScale(0.0, 1.0, "normalised") if norm is not None else None

    def fail(inp: FewInput, why: str) -> None:
        outcome.failed.append((inp, why))
        log.error("%s (skipped)", why)
        if on_failure is not None:
            on_failure(inp, why)

    def decode(inp: FewInput) -> Optional[np.ndarray]:
        if inp.rgb is not None:
            return inp.rgb
        from ..image_io import read_rgb

        try:
            return read_rgb(inp.path)
        except ImageReadError as e:
            fail(inp, display_name(str(e)))
            return None

    try:
        todo: list[FewInput] = list(inputs)
        own_bank = None
        if bank is None and method.needs_references:  # pass 1: the images given are each other's references
            from ..saliency.bank import FeatureStore

            store, ok = FeatureStore(scratch() / "features"), []
            for inp in todo:
                rgb = decode(inp)
                if rgb is None:
                    continue
                key = str(len(ok))
                store.put(key, method.reference_features(rgb))
                if inp.rgb is None:
                    stash.put("rgb" + key, rgb=rgb)
                ok.append(inp)
            todo = ok
            if len(ok) >= 2:
                own_bank = method.bank_from_store(store, [str(i) for i in range(len(ok))])

        passed_one = bank is None and method.needs_references
        pictures = bool(options.overlay or options.panels) and (out is not None or options.keep_pictures)
        drawn_now = norm is not None
        ranges: list[tuple[float, float]] = []
        for i, inp in enumerate(todo):
            if passed_one:
                rgb = inp.rgb if inp.rgb is not None else stash.pop("rgb" + str(i), ["rgb"])["rgb"]
            else:
                rgb = decode(inp)
                if rgb is None:
                    continue
            if bank is not None:
                pred = method.predict(rgb, category, bank=bank, index=None)
            else:
                pred = method.predict(rgb, category, bank=own_bank, index=i if own_bank is not None else None)
            amap = np.asarray(pred.anomaly_map, dtype=np.float32)
            full = np.asarray(pred.anomaly_map_full, dtype=np.float32)
            raw_score = float(pred.score)
            mask = None
            if norm is not None:  # the run's arithmetic, on the out_size map as the run stored it
                eval_maps, scores = norm.apply([amap])
                score = float(scores[0])
                mask = predicted_mask(eval_maps[0], decision.pixel_threshold, rgb.shape[:2])
                shown = np.zeros_like(full) if norm.constant else normalize_with(full, norm.lo, norm.hi)
            else:
                score, shown = raw_score, full
            res = FewResult(inp, pred if options.keep_arrays else _light(pred), raw_score, score,
                            "normalised" if norm is not None else "raw",
                            decision.verdict(score) if decision is not None else None,
                            decision.image_threshold if decision is not None else None,
                            decision.pixel_threshold if decision is not None else None,
                            decision.source if decision is not None else None)
            if out is not None:
                _write_files(out, res, pred, amap, full, mask, options)
            outcome.results.append(res)
            if on_result is not None:
                on_result(res)
            saliency = pred.saliency if options.panels and "saliency" in options.panels else None
            del pred
            if not pictures:
                continue
            if drawn_now:
                _draw(out, res, rgb, shown, saliency, mask, outcome.scale, options)
            else:
                ranges.append((float(shown.min()), float(shown.max())) if shown.size else (0.0, 0.0))
                stash.put("draw" + str(len(outcome.results) - 1), rgb=rgb if inp.rgb is None else None,
                          shown=shown, saliency=saliency)
        if pictures and not drawn_now and outcome.results:
            outcome.scale = MapScale(min(r[0] for r in ranges), max(r[1] for r in ranges), "raw")
            for j, res in enumerate(outcome.results):
                got = stash.pop("draw" + str(j), ["rgb", "shown", "saliency"])
                rgb = res.input.rgb if got["rgb"] is None else got["rgb"]
                _draw(out, res, rgb, got["shown"], got["saliency"], None, outcome.scale, options)
    finally:
        scratch.remove()
    return outcome


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
            pixel_threshold=res.pixel_threshold, saliency=saliency)
    for kind, picture in pictures.items():
        if out is not None:
            res.files[kind] = OutputNames.file(out, res.input.stem, kind)
            atomic_save_png(res.files[kind], picture)
    if options.keep_pictures:
        res.pictures.update(pictures)
