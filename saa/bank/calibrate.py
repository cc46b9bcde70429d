"""Thresholds from good parts only, and the OK / REVIEW / DEFECT verdict they give.

``saa bank calibrate BANK`` scores good images against the bank exactly as a query is scored
(:meth:`ReferenceBank.predict`): good images that are not in the bank (``--images``), or, without
them, each reference against the other references (leave-one-out). From those ``n`` image scores:

* ``t_defect``: the lowest threshold at which at most ``floor(false_alarm_rate * n)`` of them are
  ``>= t_defect`` (just above the ``(m + 1)``-th largest score, ``m = floor(rate * n)``);
* ``t_review``: the same at ``review_rate`` (default 5 x the false-alarm rate, at most 0.5);

and the verdict of a score ``s``: ``DEFECT`` if ``s >= t_defect``, ``REVIEW`` if
``t_review <= s < t_defect``, else ``OK`` (:func:`bank_verdict`). On the calibration images the
share of DEFECT is exactly ``m / n`` (fewer with tied scores): the requested rate whenever
``rate * n`` is a whole number.

What the estimate is worth (docs/references.md): the smallest non-zero rate ``n`` images can show is
``1 / n``; the two-sided 95 % Clopper-Pearson interval of the measured rate is recorded; and for new
good parts exchangeable with the calibration images the mean false-alarm rate is
``(m + 1) / (n + 1)`` (conformal prediction), e.g. 1/30 = 3.3 % for 29 images even when 1 % is asked.
"""
from __future__ import annotations

import logging
import math
import os
from datetime import datetime, timezone
from typing import Optional, Sequence, Union

from dataclasses import dataclass

import numpy as np

from ..image_io import atomic_write_text, read_rgb
from ..verdict import Decision
from .identity import file_sha256, pixels_sha256
from .records import CALIBRATION, REVIEW, VERDICTS, BankError, Calibration, CalibrationImage, bank_verdict, record_json
from .store import README, ReferenceBank

__all__ = ["REVIEW", "VERDICTS", "threshold_at", "clopper_pearson", "bank_verdict", "calibrate_bank",
           "calibration_from_scores", "BankDecision", "bank_decision", "DEFAULT_FALSE_ALARM_RATE",
           "DEFAULT_PIXEL_FALSE_ALARM_RATE"]

log = logging.getLogger("saa.bank")

DEFAULT_FALSE_ALARM_RATE = 0.01
DEFAULT_PIXEL_FALSE_ALARM_RATE = 0.001


def _just_above(v: float) -> float:
    """The next representable value above ``v``: in float32 when ``v`` is a float32 value (so that
    comparisons in float32 and float64 agree), else in float64."""
    v = float(v)
    if float(np.float32(v)) == v and math.isfinite(v):
        return float(np.nextafter(np.float32(v), np.float32(np.inf)))
    return float(np.nextafter(v, np.inf))


def threshold_at(scores: Union[Sequence[float], np.ndarray], rate: float) -> tuple[float, int]:
    """(threshold, m): the lowest threshold ``t`` with at most ``m = floor(rate * n)`` of ``scores``
    at or above it, i.e. just above the ``(m + 1)``-th largest score."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = s.size
    if n == 0:
        raise BankError("no score to set a threshold on")
    if not np.isfinite(s).all():
        raise BankError("a calibration score is not a finite number")
    if not 0.0 < float(rate) < 1.0:
        raise BankError(f"a false-alarm rate must be between 0 and 1 (exclusive), got {rate}")
    m = int(math.floor(float(rate) * n + 1e-9))
    m = min(m, n - 1)
    v = float(np.partition(s, n - 1 - m)[n - 1 - m])  # the (m + 1)-th largest
    return _just_above(v), m


def _binom_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if x >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(0, x + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _bisect(f, lo: float = 0.0, hi: float = 1.0) -> float:
    """The root of an increasing ``f`` on [lo, hi] (f(lo) <= 0 <= f(hi))."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def clopper_pearson(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval of a binomial proportion: ``x`` events in ``n``."""
    x, n = int(x), int(n)
    if n < 1 or not 0 <= x <= n:
        raise ValueError(f"need 0 <= x <= n and n >= 1, got x={x}, n={n}")
    a = (1.0 - float(confidence)) / 2.0
    # lower: P(X >= x | p) = a  <=>  1 - cdf(x - 1, p) = a ; upper: cdf(x, p) = a
    lower = 0.0 if x == 0 else _bisect(lambda p: (1.0 - _binom_cdf(x - 1, n, p)) - a)
    upper = 1.0 if x == n else _bisect(lambda p: a - _binom_cdf(x, n, p))
    return lower, upper


def calibration_from_scores(scores: Sequence[float], *, bank_id: str, fingerprint: str, mode: str,
                            names: Sequence[str], shas: Sequence[str], false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                            review_rate: Optional[float] = None, pixel_values: Optional[np.ndarray] = None,
                            pixel_false_alarm_rate: Optional[float] = DEFAULT_PIXEL_FALSE_ALARM_RATE,
                            notes: Sequence[str] = ()) -> Calibration:
    """The :class:`Calibration` record of good images' image ``scores`` (and, optionally, the pixel
    values of their maps for a pixel threshold)."""
    from .. import __version__

    far = float(false_alarm_rate)
    if not 0.0 < far < 1.0:
        raise BankError(f"--false-alarm-rate must be between 0 and 1 (exclusive), got {false_alarm_rate}")
    rr = min(0.5, 5.0 * far) if review_rate is None else float(review_rate)
    if not far < rr < 1.0:
        raise BankError(f"--review-rate must be above the false-alarm rate ({far:g}) and below 1, got {rr:g}")
    s = np.asarray(scores, dtype=np.float64)
    n = int(s.size)
    t_defect, m = threshold_at(s, far)
    t_review, m_review = threshold_at(s, rr)
    t_review = min(t_review, t_defect)
    alarms = int((s >= t_defect).sum())
    reviews = int(((s >= t_review) & (s < t_defect)).sum())
    notes = list(notes)
    if m == 0:
        notes.append(f"{n} good image(s) cannot show a false-alarm rate of {far:g} (the smallest non-zero rate they "
                     f"can show is 1/{n} = {1 / n:.4g}): DEFECT is set just above the highest good score; about "
                     f"{math.ceil(1 / far)} good images are needed to measure {far:g}")
    if t_review >= t_defect:
        notes.append(f"the REVIEW band is empty: {n} good image(s) put the review rate {rr:g} and the false-alarm "
                     f"rate {far:g} at the same score; give more good images (at least {math.ceil(1 / rr)})")
    pixel_t = None
    prate = None
    if pixel_values is not None and pixel_false_alarm_rate is not None:
        prate = float(pixel_false_alarm_rate)
        pixel_t, _ = threshold_at(np.asarray(pixel_values, dtype=np.float32).ravel(), prate)
    lo, hi = clopper_pearson(alarms, n)
    return Calibration(
        bank_id=bank_id, fingerprint=fingerprint, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        saa_version=__version__, mode=mode, false_alarm_rate=far, review_rate=rr, t_defect=t_defect,
        t_review=t_review, n=n, false_alarms=alarms, reviews=reviews, measured_far=alarms / n, far_ci95=(lo, hi),
        expected_far_new=(alarms + 1) / (n + 1), pixel_false_alarm_rate=prate, pixel_threshold=pixel_t, notes=notes,
        images=[CalibrationImage(name=a, sha256=b, score=float(c)) for a, b, c in zip(names, shas, s)])


def calibrate_bank(bank: ReferenceBank, method, images: Optional[Sequence[Union[str, os.PathLike]]] = None, *,
                   false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, review_rate: Optional[float] = None,
                   pixel_false_alarm_rate: Optional[float] = DEFAULT_PIXEL_FALSE_ALARM_RATE,
                   progress: bool = False, write: bool = True) -> Calibration:
    """Score good ``images`` (not in the bank) against ``bank`` -- or, with none, each reference
    against the others -- and record the thresholds in ``BANK/calibration.json`` (``write``).
    ``bank`` must be checked against ``method`` (:func:`saa.bank.open_bank`)."""
    from tqdm.auto import tqdm

    from .build import describe_bank

    if images:
        mode, items = "images", [os.fspath(p) for p in images]
    else:
        if len(bank) < 2:
            raise BankError(f"bank {bank.folder} holds {len(bank)} reference: leave-one-out needs at least 2; give good "
                            "images that are not in the bank with --images")
        mode, items = "leave-one-out", [r.path for r in bank.manifest.images]
    names, shas, scores, pixels, notes = [], [], [], [], []
    seen: dict[str, str] = {}
    for i, path in enumerate(tqdm(items, desc="calibration", unit="img", disable=not progress, dynamic_ncols=True)):
        try:
            sha = file_sha256(path)[0]
        except OSError as e:
            if mode == "leave-one-out":
                raise BankError(f"{path}: reference {i + 1} of bank {bank.folder} cannot be read ({e.strerror or e}); give "
                                "good images that are not in the bank with --images") from None
            raise
        if mode == "leave-one-out" and sha != bank.manifest.images[i].sha256:
            raise BankError(f"{path}: this file changed since bank {bank.folder} was built (another sha256); give good "
                            "images that are not in the bank with --images, or build the bank again")
        rgb = read_rgb(path)
        pix = pixels_sha256(rgb)
        if mode == "images":
            j = bank.find(rgb, sha256=sha)
            if j is not None:
                raise BankError(f"{path}: is reference {j + 1} of bank {bank.folder} ({bank.manifest.images[j].name}); "
                                "calibration images must not be in the bank (leave --images out to calibrate "
                                "leave-one-out within the bank)")
            if sha in seen or pix in seen:
                notes.append(f"{path}: the same image as {seen.get(sha) or seen.get(pix)}; counted once")
                log.warning("%s", notes[-1])
                continue
            seen[sha] = seen[pix] = str(path)
        pred = bank.predict(method, rgb, bank.category, sha256=sha)
        names.append(os.path.basename(str(path)))
        shas.append(sha)
        scores.append(float(pred.score))
        if pixel_false_alarm_rate is not None:
            pixels.append(np.asarray(pred.anomaly_map, dtype=np.float32).ravel())
    if mode == "leave-one-out":
        how = ("its own kept positions left out of the coreset, which leaves its neighbourhood less covered"
               if bank.manifest.scoring.coreset is not None else "one reference fewer than a new part gets")
        notes.append(f"leave-one-out: each reference was scored against the other references ({how}): these scores "
                     "come out a little higher than a new good part's, so the thresholds err towards fewer false "
                     "alarms; separate good images (--images) are better")
    cal = calibration_from_scores(
        scores, bank_id=bank.manifest.bank_id, fingerprint=bank.manifest.method.fingerprint, mode=mode, names=names,
        shas=shas, false_alarm_rate=false_alarm_rate, review_rate=review_rate,
        pixel_values=np.concatenate(pixels) if pixels else None, pixel_false_alarm_rate=pixel_false_alarm_rate,
        notes=notes)
    if write:
        atomic_write_text(bank.folder / CALIBRATION, record_json(cal))
        atomic_write_text(bank.folder / README, describe_bank(bank.manifest, cal))
        bank.calibration = cal
    return cal


@dataclass(frozen=True)
class BankDecision(Decision):
    """A bank's calibration as the thresholds of a few-images call (:func:`saa.run.few.run_few`): on
    the method's raw scale (no normalisation), ``image_threshold`` = ``t_defect``,
    ``review_threshold`` = ``t_review`` and the pixel threshold; :meth:`verdict` is
    :func:`bank_verdict` (OK / REVIEW / DEFECT)."""

    review_threshold: Optional[float] = None
    calibration: Optional[Calibration] = None

    def verdict(self, score: float) -> Optional[str]:
        if self.calibration is None:  # a threshold by hand on the bank's scale: OK / DEFECT
            return super().verdict(score)
        return bank_verdict(score, self.calibration)

    def map_scale(self):
        """The colour scale of the pictures: 0 to the DEFECT threshold (a value at the top colour
        alone makes the image DEFECT: the image score is the map's maximum), the same for every call,
        so an image's pictures do not depend on the batch either."""
        from ..visualize import MapScale

        return MapScale(0.0, float(self.image_threshold), "raw")


def bank_decision(bank: ReferenceBank) -> Optional[BankDecision]:
    """The thresholds of ``bank``'s calibration (None: the bank is not calibrated)."""
    c = bank.calibration
    if c is None:
        return None
    review = c.t_review if c.t_review < c.t_defect else None
    source = (f"bank {bank.folder} (calibration {c.mode}, {c.n} good image(s), false-alarm rate "
              f"{c.false_alarm_rate:g})")
    return BankDecision(float(c.t_defect), c.pixel_threshold, None, bank.manifest.method.name,
                        bank.manifest.method.fingerprint, bank.manifest.method.out_size, source,
                        review_threshold=review, calibration=c)
