"""Decisions: the thresholds a labelled run records, their quality, and the OK / DEFECT verdict they
give an image.

A labelled ``saa run`` records per category in ``metrics.json`` (key ``decision``, a typed
:class:`saa.records.DecisionRecord`):

* ``image_threshold`` / ``pixel_threshold``: the F1-optimal thresholds, i.e. the score ``t`` with
  "defect iff score >= t" at which the run's image / pixel F1-max are reached (from the same sort
  as the metric, so F1 at ``t`` IS the reported F1-max), on the run's normalised scale;
* ``normalisation``: how that scale was made (:class:`saa.evaluation.Normalisation`: eval size and
  the category's ``lo`` / ``hi``), so that new maps can be put on it;
* ``method``, ``fingerprint`` (the method's settings, without the image set) and ``out_size``, so that
  a later ``saa predict --thresholds-from RUN`` refuses maps of another method or other settings; a
  record without them is refused;
* ``quality`` (:class:`saa.records.DecisionQuality`): at the image threshold, on the run's own
  images, the false-alarm rate on normal images, the miss rate on defective ones, the share of each
  verdict and the image AUROC.

A decision is **weak** (:func:`weakness`) when it separates nothing on its own run: every image gets
the same verdict, or the image AUROC is no better than chance (<= 50), or under
:data:`WEAK_AUROC_FLOOR` (60), or undefined (no normal image to test it on). A run prints a weak
decision as a warning (console, ``metrics.md``, the report); ``saa predict --thresholds-from``
refuses it in one line unless ``--accept-weak-decision`` is given (:meth:`Decision.check_method`).

An image's verdict is DEFECT when its (normalised) image score is ``>= image_threshold``, else OK;
its predicted defect mask is its eval-size normalised map ``>= pixel_threshold``, resized to the image
with nearest neighbour (so the mask holds exactly the pixels the pixel metric counted).

Limit: a method that scores each image against the others (``lite``; preset ``improved``) gives
scores that depend on the images scored together: the run's thresholds fit new images only when they
are scored among a set like the run's (many, mostly normal images of the category).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import cv2
import numpy as np

from .errors import SaaError
from .evaluation import Normalisation
from .records import DecisionQuality, DecisionRecord
from .results import RunFolder

__all__ = ["DECISION_KEY", "OK", "DEFECT", "WEAK_AUROC_FLOOR", "ACCEPT_WEAK_FLAG", "Decision", "decision_record",
           "decision_quality", "weakness", "quality_line", "load_decision", "verdict_of", "predicted_mask", "mask_png"]

DECISION_KEY = "decision"
#: a run-made decision of a method that compares the images given, with no record of how many
#: images the run had: a call must give at least this many (docs/verdicts.md, Limits)
MIN_BATCH_IMAGES = 33
OK, DEFECT = "OK", "DEFECT"
#: the scale of a threshold given by hand without a run (the method's raw image score)
RAW, NORMALISED = "raw", "normalised"
#: a decision whose image AUROC on its own run is under this (percent) is weak
WEAK_AUROC_FLOOR = 60.0
#: the option of ``saa predict`` that accepts a weak decision
ACCEPT_WEAK_FLAG = "--accept-weak-decision"


def verdict_of(score: float, threshold: Optional[float]) -> Optional[str]:
    """``DEFECT`` when ``score >= threshold``, ``OK`` below it, None without a threshold."""
    if threshold is None:
        return None
    return DEFECT if float(score) >= float(threshold) else OK


def predicted_mask(norm_map: np.ndarray, pixel_threshold: Optional[float],
                   image_hw: Optional[tuple[int, int]] = None) -> Optional[np.ndarray]:
    """``norm_map >= pixel_threshold`` (bool), resized to ``image_hw`` (nearest); None without a
    threshold. The comparison is done in the map's dtype: a float32 map against a threshold that is a
    float32 value (as recorded) is exact."""
    if pixel_threshold is None:
        return None
    m = np.asarray(norm_map) >= pixel_threshold
    if image_hw is not None and m.shape != tuple(image_hw):
        h, w = int(image_hw[0]), int(image_hw[1])
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return m


def mask_png(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as the 0/255 uint8 picture that is written to disk."""
    return np.where(np.asarray(mask), 255, 0).astype(np.uint8)


def decision_quality(labels: Sequence[int], scores: Sequence[float], threshold: Optional[float],
                     image_auroc: Optional[float]) -> Optional[DecisionQuality]:
    """How the image ``threshold`` does on the run's own images (``labels`` 0 / 1, normalised
    ``scores``; ``image_auroc`` in percent or None); None without a threshold."""
    if threshold is None:
        return None
    labels = [int(v) for v in labels]
    verdicts = [verdict_of(s, threshold) for s in scores]
    n, normal, anomalous = len(labels), labels.count(0), labels.count(1)
    ok, defect = verdicts.count(OK), verdicts.count(DEFECT)
    false_alarms = sum(1 for lab, v in zip(labels, verdicts) if lab == 0 and v == DEFECT)
    misses = sum(1 for lab, v in zip(labels, verdicts) if lab == 1 and v == OK)
    q = DecisionQuality(images=n, normal=normal, anomalous=anomalous, ok=ok, defect=defect,
                        false_alarms=false_alarms, misses=misses,
                        false_alarm_rate=false_alarms / normal if normal else None,
                        miss_rate=misses / anomalous if anomalous else None,
                        ok_share=ok / n if n else None, defect_share=defect / n if n else None,
                        image_auroc=image_auroc)
    reasons = weakness(q)
    return q.model_copy(update={"weak": bool(reasons), "reasons": reasons})


def weakness(q: DecisionQuality) -> list[str]:
    """Why a decision is weak (empty: it is not), from the numbers of its quality record (the
    ``weak`` / ``reasons`` fields of a file are not trusted: they are recomputed here)."""
    reasons = []
    if q.images and (q.ok == 0 or q.defect == 0):
        reasons.append(f"every image of the run gets the same verdict ({q.ok} OK, {q.defect} DEFECT): the threshold "
                       "separates nothing")
    if q.image_auroc is None:
        reasons.append("its image AUROC is undefined (the run has no normal image to test it on)")
    elif q.image_auroc <= 50.0:
        reasons.append(f"image AUROC {q.image_auroc:.1f} on its own run: no better than chance")
    elif q.image_auroc < WEAK_AUROC_FLOOR:
        reasons.append(f"image AUROC {q.image_auroc:.1f} on its own run, under the floor of {WEAK_AUROC_FLOOR:g}")
    return reasons


def quality_line(q: DecisionQuality) -> str:
    """``false alarms 1/2 normal (50.0%), misses 0/3 defective (0.0%); 1 OK, 4 DEFECT``."""
    def rate(num: int, den: int) -> str:
        return f"{num}/{den}" + (f" ({100.0 * num / den:.1f}%)" if den else "")

    return (f"false alarms {rate(q.false_alarms, q.normal)} normal, misses {rate(q.misses, q.anomalous)} defective; "
            f"{q.ok} OK, {q.defect} DEFECT")


@dataclass(frozen=True)
class Decision:
    """Thresholds and the scale they are on. ``normalisation`` None: the scale is the method's raw
    image score (a ``--threshold`` given by hand without a run). ``quality``: how the run's image
    threshold did on the run's images; ``accept_weak``: a weak decision is used anyway."""

    image_threshold: Optional[float]
    pixel_threshold: Optional[float] = None
    normalisation: Optional[Normalisation] = None
    method: str = ""
    fingerprint: str = ""
    out_size: Optional[int] = None
    source: str = ""
    quality: Optional[DecisionQuality] = None
    accept_weak: bool = True
    from_run: bool = False
    #: how many images the run that made the thresholds had (None: not known)
    run_images: Optional[int] = None

    @property
    def scale(self) -> str:
        return RAW if self.normalisation is None else NORMALISED

    def verdict(self, score: float) -> Optional[str]:
        return verdict_of(score, self.image_threshold)

    def with_image_threshold(self, value: float, source: str) -> "Decision":
        """The run's scale with an image threshold given by hand (its quality is then the user's
        choice: not checked)."""
        return Decision(float(value), self.pixel_threshold, self.normalisation, self.method, self.fingerprint,
                        self.out_size, source, None, True, self.from_run, self.run_images)

    @property
    def weak_reasons(self) -> list[str]:
        """Why the run's image threshold is weak (empty: it is not, or it is not the run's)."""
        if not self.from_run or self.image_threshold is None:
            return []
        if self.quality is None:
            return ["its quality is not recorded (the run was made by an older saa): rerun `saa run` with the same "
                    "--out to record it (the stored maps are reused)"]
        return weakness(self.quality)

    def check_quality(self) -> None:
        """A one-line :class:`SaaError` for a weak decision, unless it was accepted."""
        reasons = self.weak_reasons
        if reasons and not self.accept_weak:
            raise SaaError(f"{self.source}: weak decision: {'; '.join(reasons)}. Its verdicts would not mean "
                           f"anything: make a labelled run on more (and more varied) images, use another method, "
                           f"give your own --threshold, or pass {ACCEPT_WEAK_FLAG} to use it anyway")

    def images_needed(self, max_others: Optional[int] = None) -> Optional[int]:
        """For a method that scores each image against the other images given: how many images a
        call must give for these (run-made) thresholds to apply: as many as the run had, but no more
        than each image's reference cap + 1 (``max_others``: the method's ``bank_settings``; the run's
        images were compared with at most that many others too). None: no such need (a threshold
        by hand, or a run-less decision)."""
        if not self.from_run or self.normalisation is None:
            return None
        made = self.run_images
        cap = int(max_others) + 1 if max_others else None
        known = [v for v in (made, cap) if v]
        return min(known) if known else MIN_BATCH_IMAGES

    def check_batch(self, method_name: str, given: int, max_others: Optional[int] = None) -> None:
        """A one-line :class:`SaaError`, pointing to a reference bank, when ``given`` images are too
        few for this run-made decision of a method that compares the images given with each other."""
        need = self.images_needed(max_others)
        if need is None or given >= need:
            return
        raise SaaError(f"{self.source}: method {method_name} scores each image against the other images given, and "
                       f"these thresholds were set on a run where each image had {need - 1} or more others; "
                       f"{given} image(s) given here would put the scores on another scale. Give at least {need} "
                       "images of the category, or judge parts one at a time against good parts: "
                       "`saa bank build --config CONFIG --category CAT --out BANK GOOD_IMAGES` once, then "
                       "`saa bank calibrate BANK` and `saa predict ... --bank BANK IMAGES` (docs/references.md)")

    def check_method(self, method_name: str, fingerprint: str, out_size: int) -> None:
        """A one-line :class:`SaaError` when the maps of ``method_name`` with these settings are not
        on this decision's scale; then, for a decision of a run, when it is weak and was not
        accepted (:meth:`check_quality`)."""
        if not self.method:
            return
        if method_name != self.method:
            raise SaaError(f"{self.source}: the thresholds are for method {self.method}, but this run uses method "
                           f"{method_name}; pass --method {self.method} (or take thresholds from a run of "
                           f"{method_name})")
        if self.out_size is not None and int(out_size) != int(self.out_size):
            raise SaaError(f"{self.source}: the thresholds were made with out_size {self.out_size}, this run has "
                           f"out_size {out_size}; pass --set out_size={self.out_size}")
        if self.fingerprint and fingerprint != self.fingerprint:
            raise SaaError(f"{self.source}: the thresholds were made with other settings of method {self.method} "
                           f"(fingerprint {self.fingerprint}, now {fingerprint}): the scores would not be on the "
                           "same scale; use the run's config (its config.yaml) or rerun it with these settings")
        self.check_quality()


def decision_record(thresholds: Mapping[str, Optional[float]], normalisation: Normalisation, method: str,
                    fingerprint: str, out_size: int, quality: Optional[DecisionQuality] = None) -> DecisionRecord:
    """The ``decision`` entry of a category in ``metrics.json``."""
    return DecisionRecord(
        image_threshold=thresholds.get("image_threshold"),
        pixel_threshold=thresholds.get("pixel_threshold"),
        scale="normalised image score / normalised map (the scale of the metrics: eval-size maps, "
              "(A - lo) / (hi - lo) over the category); defect iff value >= threshold",
        normalisation=normalisation.to_record(),
        method=method,
        fingerprint=fingerprint,
        out_size=int(out_size),
        quality=quality,
    )


def load_decision(run_dir, category: str, missing_ok: bool = False, accept_weak: bool = False) -> Optional[Decision]:
    """The recorded decision of ``category`` in ``run_dir/metrics.json`` (or the ``.json`` file
    given), read through :class:`saa.results.RunFolder`; a one-line :class:`SaaError` naming the file
    and the problem otherwise (``missing_ok``: None when the run has no such category).
    ``accept_weak``: a weak decision is not refused by :meth:`Decision.check_method`."""
    run = Path(run_dir)
    folder = RunFolder(run.parent if run.suffix == ".json" and not run.is_dir() else run)
    mpath = run if run.suffix == ".json" and not run.is_dir() else folder.metrics_json
    if not mpath.is_file():
        state = None
        try:
            state = folder.read_state()
        except SaaError:
            pass
        if state is not None and state.status == "running":
            raise SaaError(f"{mpath} not found: the run started in {folder.root} at {state.started} has not finished, "
                           f"so it has no thresholds yet; finish it: saa run {folder.config_yaml} --out {folder.root}")
        raise SaaError(f"{mpath} not found: --thresholds-from needs the output folder of a labelled `saa run`")
    result = folder.read_metrics(mpath)
    cats = result.categories
    if category not in cats:
        if missing_ok:
            return None
        raise SaaError(f"{mpath}: no category {category!r} in this run (it has: {', '.join(cats) or 'none'})")
    where = f"{mpath} [{category}]"
    refs = cats[category].references
    if refs is not None:  # its maps came from a bank of good parts: another scale than images scored together
        raise SaaError(f"{where}: this run scored its images against reference bank {refs.bank} (good parts), so "
                       f"its thresholds are not on the scale of images scored against each other; judge new images "
                       f"against the same bank: saa predict --bank {refs.bank} ... (thresholds from `saa bank "
                       f"calibrate {refs.bank}`)")
    rec = cats[category].decision
    if rec is None:
        why = ("the run's test set is unlabelled" if not result.labelled
               else "the run was made before saa recorded thresholds")
        raise SaaError(f"{where}: no thresholds recorded ({why}); run `saa run` on a labelled set "
                       f"(rerunning with the same --out reuses the stored maps), or set them from good parts "
                       f"alone: saa bank build, saa bank calibrate, then saa predict --bank BANK")
    images = rec.quality.images if rec.quality is not None else cats[category].counts.images
    return Decision(rec.image_threshold, rec.pixel_threshold, Normalisation.from_record(rec.normalisation),
                    rec.method, rec.fingerprint, rec.out_size, where, rec.quality, bool(accept_weak), True,
                    int(images) if images else None)
