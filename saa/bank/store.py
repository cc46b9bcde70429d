"""A reference bank folder, opened: :class:`ReferenceBank` (its records, its kept feature positions)
and :class:`BankScorer`, what a method's ``predict(rgb, category, bank=..., index=None)`` gets.

The folder::

    BANK/manifest.json      BankManifest: method, settings, model files, images, k-shot, scoring
    BANK/positions.npy      (M, C) float32: the kept unit feature positions of the references
    BANK/origin.npy         (M,) int32: which reference image each position comes from
    BANK/descriptors.npy    (N, C) float32: each reference's global descriptor (mean feature, unit)
    BANK/config.yaml        the resolved config the bank was built with (rebuilds its method)
    BANK/README.txt         the manifest in words (``saa bank show BANK`` prints the same)
    BANK/calibration.json   thresholds from good parts (after ``saa bank calibrate``)

Scoring a query (:meth:`BankScorer.scores_for`): each of its positions gets the mean ``1 - cos``
to its ``k`` nearest kept positions (:func:`saa.saliency.cross.nearest_search`, exact, float32),
so an image's map depends on the bank and the image only: the same image gives the same map alone
or in any batch. An image is never its own reference: a query whose file or decoded pixels are
those of a reference (:meth:`ReferenceBank.find`) is scored without that reference's positions
(leave-one-out, said in a note), and a query whose feature descriptor equals a reference's (the
same picture, reached without its identity) is too.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

from ..saliency.cross import _as_grid, global_descriptors, nearest_search
from .identity import file_sha256, method_mismatch, method_record, pixels_sha256
from .records import CALIBRATION, MANIFEST, BankError, BankManifest, Calibration, bank_verdict, read_record

__all__ = ["ReferenceBank", "BankScorer", "open_bank", "POSITIONS", "ORIGIN", "DESCRIPTORS", "CONFIG", "README",
           "IN_MEMORY_BYTES", "SAME_DESCRIPTOR"]

log = logging.getLogger("saa.bank")

POSITIONS, ORIGIN, DESCRIPTORS, CONFIG, README = "positions.npy", "origin.npy", "descriptors.npy", "config.yaml", \
    "README.txt"
#: kept positions up to this size are read into memory when opened; larger ones stay memory-mapped
IN_MEMORY_BYTES = 512 * (1 << 20)
#: a query whose global descriptor is this close (max abs difference) to a reference's is that reference
SAME_DESCRIPTOR = 1e-6


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BankError(f"{path}: missing ({what}); the bank is incomplete: build it again") from None
    except (OSError, ValueError) as e:
        raise BankError(f"{path}: cannot read {what}: {e}; the bank is damaged: build it again") from None


class BankScorer:
    """The kept positions of a bank, less one reference when ``exclude`` is set: the ``bank=``
    argument of :meth:`saa.methods.Method.predict` (with ``index=None``). ``len()`` is the number of
    references it holds; :meth:`scores_for` is the only query."""

    def __init__(self, bank: "ReferenceBank", exclude: Optional[int] = None):
        self.bank = bank
        self.exclude = exclude
        self.excluded_by_descriptor: Optional[int] = None

    def __len__(self) -> int:
        return len(self.bank) - (1 if self.exclude is not None else 0)

    def scores_for(self, features) -> Optional[np.ndarray]:
        """(h, w) float32 score grid of a query's unit feature grid (C, h, w); None when no
        reference is left (a one-image bank queried with its own image)."""
        g = _as_grid(features)
        bank = self.bank
        if g.shape[0] != bank.channels:
            raise BankError(f"{bank.folder}: the query has {g.shape[0]} feature channels, the bank {bank.channels}: "
                            "the bank was built with other settings")
        exclude = self.exclude
        if exclude is None:
            same = bank.same_descriptor(g)
            if same is not None:
                exclude = self.excluded_by_descriptor = same
                log.warning("%s: the query has the features of reference %s: scored without it (leave-one-out)",
                            bank.folder, bank.manifest.images[same].name)
        if exclude is not None and len(bank) - 1 < 1:
            return None
        s = bank.manifest.scoring
        pieces = list(bank.pieces(exclude))
        if not pieces:
            return None
        return nearest_search(g, pieces, k=s.k, chunk=s.chunk, block=s.block, device=bank.device,
                              n_others=len(pieces))


class ReferenceBank:
    """A bank folder, opened and checked (:meth:`open`). Usable directly as ``bank=`` (it scores
    against every reference, leaving out one whose features the query has); :meth:`for_image` /
    :meth:`predict` also leave out a reference with the query's file or pixel content."""

    def __init__(self, folder: Path, manifest: BankManifest, positions: np.ndarray, origin: np.ndarray,
                 descriptors: np.ndarray, calibration: Optional[Calibration]):
        self.folder = folder
        self.manifest = manifest
        self._positions = positions
        self._origin = np.asarray(origin, dtype=np.int64)
        self.descriptors = torch.from_numpy(np.array(descriptors, dtype=np.float32))
        self.calibration = calibration
        self.device = torch.device("cpu")
        self._resident: Optional[torch.Tensor] = None
        self._by_sha = {r.sha256: i for i, r in enumerate(manifest.images)}
        self._by_pixels = {r.pixels_sha256: i for i, r in enumerate(manifest.images)}

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Union[str, os.PathLike]) -> "ReferenceBank":
        """Read and check a bank folder (records valid, arrays of the recorded shapes); one-line
        :class:`BankError` otherwise. Does not check the method: :meth:`check` / :func:`open_bank`."""
        f = Path(os.path.expanduser(os.fspath(folder)))
        if not f.exists():
            raise BankError(f"{f}: reference bank not found (build one with `saa bank build`)")
        if not f.is_dir():
            raise BankError(f"{f}: is a file, not a reference bank folder")
        if not (f / MANIFEST).exists():
            raise BankError(f"{f}: not a reference bank (no {MANIFEST}); build one with `saa bank build`")
        manifest = read_record(f / MANIFEST, BankManifest, "bank manifest")
        pos = _load_npy(f / POSITIONS, "the kept feature positions")
        origin = _load_npy(f / ORIGIN, "the positions' images")
        desc = _load_npy(f / DESCRIPTORS, "the image descriptors")
        n, c, m = len(manifest.images), manifest.channels, manifest.scoring.positions_kept
        if pos.dtype != np.float32 or pos.shape != (m, c):
            raise BankError(f"{f / POSITIONS}: holds {pos.dtype} {tuple(pos.shape)}, the manifest says float32 ({m}, {c}); "
                            "the bank is damaged: build it again")
        if origin.shape != (m,) or (m and (int(origin.min()) < 0 or int(origin.max()) >= n)):
            raise BankError(f"{f / ORIGIN}: does not match the manifest ({m} positions of {n} images); "
                            "the bank is damaged: build it again")
        if desc.shape != (n, c):
            raise BankError(f"{f / DESCRIPTORS}: holds {tuple(desc.shape)}, the manifest says ({n}, {c}); "
                            "the bank is damaged: build it again")
        counts = np.bincount(np.asarray(origin), minlength=n)
        if [int(v) for v in counts] != [r.kept for r in manifest.images]:
            raise BankError(f"{f / ORIGIN}: positions per image differ from the manifest; the bank is damaged: "
                            "build it again")
        calibration = None
        if (f / CALIBRATION).exists():
            calibration = read_record(f / CALIBRATION, Calibration, "bank calibration")
            if calibration.bank_id != manifest.bank_id:
                raise BankError(f"{f / CALIBRATION}: belongs to another bank (id {calibration.bank_id[:12]}, this bank "
                                f"{manifest.bank_id[:12]}): run `saa bank calibrate {f}` again")
        return cls(f, manifest, pos, origin, desc, calibration)

    def check(self, method, category: Optional[str] = None) -> None:
        """A one-line :class:`BankError` unless ``method`` makes the features this bank holds (same
        method, settings, ``out_size`` and model files) and ``category`` (when given) is its category."""
        m = self.manifest
        if category is not None and str(category) != m.category:
            raise BankError(f"bank {self.folder} holds references of category {m.category!r}, not {category!r}")
        if not method.needs_references:
            raise BankError(f"method {method.name!r} compares no images (it does not use references): "
                            f"a reference bank is of no use to it")
        why = method_mismatch(m.method, method_record(method, m.category), f"bank {self.folder}")
        if why:
            raise BankError(why)
        device = method.bank_settings().get("device")
        if device is not None:
            self.device = torch.device(device)

    # -- what it holds --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.manifest.images)

    @property
    def channels(self) -> int:
        return int(self.manifest.channels)

    @property
    def category(self) -> str:
        return self.manifest.category

    @property
    def bank_id(self) -> str:
        """The bank's identity (SHA-256 of its method fingerprint, category, images, scoring and
        kept positions): what a run's stored maps record as their references."""
        return self.manifest.bank_id

    def positions(self) -> Union[torch.Tensor, np.ndarray]:
        """The kept positions: a tensor in memory (up to :data:`IN_MEMORY_BYTES`), else the memory map."""
        if self._positions.nbytes > IN_MEMORY_BYTES:
            return self._positions
        if self._resident is None:
            self._resident = torch.from_numpy(np.array(self._positions, dtype=np.float32))
        return self._resident

    def pieces(self, exclude: Optional[int] = None) -> Iterator[torch.Tensor]:
        """The kept positions (less those of reference ``exclude``) as pseudo feature grids
        (C, rows, 1) of at most ``block`` rows each, in bank order (the search's grouping, and so its
        arithmetic, depends only on the bank and ``exclude``)."""
        pos = self.positions()
        block = int(self.manifest.scoring.block)
        if exclude is None:
            rows = np.arange(pos.shape[0])
        else:
            rows = np.flatnonzero(self._origin != int(exclude))
        for a in range(0, len(rows), block):
            r = rows[a:a + block]
            contiguous = len(r) and r[-1] - r[0] == len(r) - 1
            if isinstance(pos, torch.Tensor):
                part = pos[int(r[0]):int(r[-1]) + 1] if contiguous else pos[torch.from_numpy(r)]
            else:
                part = torch.from_numpy(np.array(pos[int(r[0]):int(r[-1]) + 1] if contiguous else pos[r],
                                                 dtype=np.float32))
            yield part.T.unsqueeze(-1)

    def same_descriptor(self, grid: torch.Tensor) -> Optional[int]:
        """The reference whose global descriptor equals that of ``grid`` (within
        :data:`SAME_DESCRIPTOR`): the query is that picture."""
        if not len(self):
            return None
        d = global_descriptors([grid])[0]
        diff = (self.descriptors - d[None]).abs().max(dim=1).values
        j = int(torch.argmin(diff))
        return j if float(diff[j]) <= SAME_DESCRIPTOR else None

    def find(self, rgb: Optional[np.ndarray] = None, path: Optional[Union[str, os.PathLike]] = None,
             sha256: Optional[str] = None) -> Optional[int]:
        """The reference that is this image: the same file content (``path`` or its ``sha256``) or
        the same decoded pixels (``rgb``); None otherwise."""
        if sha256 is None and path is not None:
            try:
                sha256 = file_sha256(path)[0]
            except OSError:
                sha256 = None
        if sha256 is not None and sha256 in self._by_sha:
            return self._by_sha[sha256]
        if rgb is not None:
            return self._by_pixels.get(pixels_sha256(rgb))
        return None

    # -- scoring ------------------------------------------------------------------------------
    def scorer(self, exclude: Optional[int] = None) -> BankScorer:
        if exclude is not None and not 0 <= int(exclude) < len(self):
            raise IndexError(f"reference {exclude} outside a bank of {len(self)}")
        return BankScorer(self, None if exclude is None else int(exclude))

    def scores_for(self, features) -> Optional[np.ndarray]:
        """The bank as ``bank=``: a query against every reference (less one with its features)."""
        return self.scorer().scores_for(features)

    def for_image(self, rgb: np.ndarray, path: Optional[Union[str, os.PathLike]] = None,
                  sha256: Optional[str] = None) -> tuple[BankScorer, Optional[str]]:
        """(what to pass as ``bank=`` for this image, a note or None). An image that is a reference
        of the bank (:meth:`find`) is scored without it: leave-one-out, and the note says so."""
        j = self.find(rgb, path, sha256)
        if j is None:
            return self.scorer(), None
        r = self.manifest.images[j]
        left = len(self) - 1
        note = (f"this image is reference {j + 1} of the bank ({r.name}, same content): scored against the other "
                f"{left} reference(s) only, never against itself")
        return self.scorer(j), note

    def predict(self, method, rgb: np.ndarray, category: Optional[str] = None,
                path: Optional[Union[str, os.PathLike]] = None, sha256: Optional[str] = None):
        """``method.predict`` of one image against this bank (leave-one-out for a reference, with a
        note in ``Prediction.notes``). Call :meth:`check` (or :func:`open_bank`) with the method first."""
        scorer, note = self.for_image(rgb, path, sha256)
        pred = method.predict(rgb, category or self.category, bank=scorer, index=None)
        if note is None and scorer.excluded_by_descriptor is not None:
            r = self.manifest.images[scorer.excluded_by_descriptor]
            note = (f"this image has the features of reference {scorer.excluded_by_descriptor + 1} of the bank "
                    f"({r.name}): scored against the other {len(self) - 1} reference(s) only")
        if note is not None:
            pred.notes.append(note)
        return pred

    def verdict(self, score: float) -> Optional[str]:
        """OK / REVIEW / DEFECT from the bank's calibration; None when it has none."""
        return bank_verdict(score, self.calibration) if self.calibration is not None else None


def open_bank(folder: Union[str, os.PathLike], method, category: Optional[str] = None) -> ReferenceBank:
    """:meth:`ReferenceBank.open` and :meth:`ReferenceBank.check` in one call."""
    bank = ReferenceBank.open(folder)
    bank.check(method, category)
    return bank
