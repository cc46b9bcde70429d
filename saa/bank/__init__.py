"""Reference banks of good parts: a method's reference features of good images computed once and
stored in a folder, queried by any later image (the image's map then depends on the bank only,
never on the other images scored with it), thresholds set from good images only, and the
OK / REVIEW / DEFECT verdict they give. docs/references.md is the user guide.

    from saa.bank import build_bank, open_bank, calibrate_bank

    bank = build_bank(method, "bottle", good_paths, "banks/bottle")     # once
    bank = open_bank("banks/bottle", method, "bottle")                   # checks method, settings, model files
    calibrate_bank(bank, method, other_good_paths, false_alarm_rate=0.01)
    pred = bank.predict(method, rgb, "bottle", path=path)               # leave-one-out for a reference
    verdict = bank.verdict(pred.score)                                   # OK / REVIEW / DEFECT (None: uncalibrated)

Modules: ``records`` (the typed manifest and calibration records), ``identity`` (image, model file
and method identities; what differs), ``coreset`` (greedy k-center subsampling), ``store`` (the
folder opened: :class:`ReferenceBank`, :class:`BankScorer`), ``build`` (:func:`build_bank`),
``calibrate`` (thresholds, verdicts). The package sits above :mod:`saa.methods` (it calls a
method's ``reference_features`` / ``predict``) and below :mod:`saa.run`.
"""
from .build import CORESET_DIMS, DEFAULT_MAX_POSITIONS, build_bank, describe_bank
from .calibrate import (DEFAULT_FALSE_ALARM_RATE, DEFAULT_PIXEL_FALSE_ALARM_RATE, REVIEW, VERDICTS, BankDecision,
                        bank_decision, bank_verdict, calibrate_bank, calibration_from_scores, clopper_pearson,
                        threshold_at)
from .coreset import greedy_coreset, random_projection
from .identity import file_sha256, pixels_sha256
from .records import BankError, BankManifest, Calibration, KShotRecord
from .store import BankScorer, ReferenceBank, open_bank

__all__ = ["build_bank", "open_bank", "calibrate_bank", "ReferenceBank", "BankScorer", "BankManifest", "Calibration",
           "KShotRecord", "BankError", "BankDecision", "bank_decision", "REVIEW", "VERDICTS", "bank_verdict", "calibration_from_scores",
           "clopper_pearson", "threshold_at", "greedy_coreset", "random_projection", "file_sha256", "pixels_sha256",
           "describe_bank", "DEFAULT_MAX_POSITIONS", "CORESET_DIMS", "DEFAULT_FALSE_ALARM_RATE",
           "DEFAULT_PIXEL_FALSE_ALARM_RATE"]
