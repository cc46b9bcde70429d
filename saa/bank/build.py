"""Building a reference bank: each good image's reference features computed ONCE with the method
(:meth:`saa.methods.Method.reference_features`), their positions pooled (all of them, or a greedy
coreset when there are more than ``max_positions``), and the folder written with its manifest.

The folder is written under a temporary name beside ``out`` and renamed at the end: an interrupted
build leaves no half bank. Inputs with the content of an earlier input (same file bytes or same
decoded pixels: a file reached twice, a copy) are left out and named in ``manifest.skipped``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..image_io import atomic_write_text, read_rgb
from ..saliency.cross import _as_grid, global_descriptors
from .coreset import greedy_coreset, random_projection
from .identity import file_sha256, method_record, pixels_sha256
from .records import (MANIFEST, BankError, BankManifest, CoresetRecord, ImageRecord, KShotRecord, ScoringRecord,
                      record_json, shown)
from .store import CONFIG, DESCRIPTORS, ORIGIN, POSITIONS, README, ReferenceBank

__all__ = ["build_bank", "DEFAULT_MAX_POSITIONS", "CORESET_DIMS", "CORESET_SEED", "describe_bank"]

log = logging.getLogger("saa.bank")

#: a bank keeps at most this many feature positions (a greedy coreset of them when there are more):
#: the query cost is proportional to it (docs/references.md: 16,384 lite positions, about 16 images'
#: worth, is under 0.1 s per query on one core, and measured no less accurate than all of 200 images)
DEFAULT_MAX_POSITIONS = 16_384
#: the coreset compares positions after a seeded random projection to this many dimensions
CORESET_DIMS = 16
CORESET_SEED = 0
#: the search's tiles: query rows and kept positions per product (a 256 x 4096 tile, 4 MiB, stays in
#: the processor's cache: 1.6 times faster than the cross-image search's 1024 x 16384 on this machine)
SEARCH_CHUNK, SEARCH_BLOCK = 256, 4096


@dataclass(frozen=True)
class _Ref:
    path: Path
    name: str
    sha256: str
    size: int
    pixels: str
    height: int
    width: int
    grid: tuple[int, int]
    part: Path


def _bank_id(fingerprint: str, category: str, shas: Sequence[str], scoring: ScoringRecord, positions_sha: str) -> str:
    h = hashlib.sha256()
    for part in (fingerprint, category, *shas, record_json(scoring), positions_sha):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _prepare_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise BankError(f"{out}: exists and is a file; choose another --out")
    if not any(out.iterdir()):
        return
    if not (out / MANIFEST).exists():
        raise BankError(f"{out}: exists and is not a reference bank; choose another --out (nothing is deleted)")
    if not force:
        raise BankError(f"{out}: a reference bank is already there; pass --force to replace it or choose another --out")


def build_bank(method, category: str, images: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike], *,
               max_positions: int = DEFAULT_MAX_POSITIONS, coreset_dims: int = CORESET_DIMS,
               kshot: Optional[KShotRecord] = None, source: str = "", force: bool = False,
               progress: bool = False) -> ReferenceBank:
    """Compute ``method``'s reference features of the good ``images`` of ``category`` once and
    write the bank folder ``out``; returns it opened.

    ``max_positions``: keep at most this many positions (greedy coreset beyond it; 0 = keep all).
    ``kshot``: where the images come from in a k-shot run (recorded). ``force``: replace a bank
    already at ``out`` (never a folder that is not a bank)."""
    if not method.needs_references:
        raise BankError(f"method {method.name!r} compares no images (it does not use references): a reference "
                        "bank is of no use to it; use `--method lite`, `--preset improved` or a method with references")
    if int(max_positions) < 0:
        raise BankError(f"--max-positions must be 0 (keep all) or more, got {max_positions}")
    if not images:
        raise BankError("no reference image given")
    out = Path(os.path.expanduser(os.fspath(out)))
    _prepare_out(out, force)
    record = method_record(method, category)
    settings = method.bank_settings()
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "parts").mkdir(parents=True)
    try:
        refs, skipped, channels = _features(method, images, tmp / "parts", progress)
        bank = _assemble(method, category, record, settings, refs, skipped, channels, tmp, out, max_positions,
                         coreset_dims, kshot, source, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bank


def _features(method, images, parts: Path, progress: bool) -> tuple[list[_Ref], list[str], int]:
    from tqdm.auto import tqdm

    refs: list[_Ref] = []
    skipped: list[str] = []
    seen_sha: dict[str, str] = {}
    seen_pix: dict[str, str] = {}
    channels = None
    for item in tqdm(list(images), desc="reference features", unit="img", disable=not progress, dynamic_ncols=True):
        path = Path(os.fspath(item))
        rgb = read_rgb(path)  # a one-line error naming the file when it cannot be read
        sha, size = file_sha256(path)
        pix = pixels_sha256(rgb)
        if sha in seen_sha or pix in seen_pix:
            first = seen_sha.get(sha) or seen_pix.get(pix)
            what = "the same file content" if sha in seen_sha else "the same pixels"
            skipped.append(f"{path}: {what} as {first}; left out (a reference counts once)")
            log.warning("%s", skipped[-1])
            continue
        seen_sha[sha], seen_pix[pix] = str(path), str(path)
        g = _as_grid(method.reference_features(rgb)).detach().cpu().float()
        if not torch.isfinite(g).all():
            raise BankError(f"{path}: the method's reference features are not finite numbers")
        if channels is None:
            channels = int(g.shape[0])
        elif int(g.shape[0]) != channels:
            raise BankError(f"{path}: {g.shape[0]} feature channels, the earlier images {channels}")
        part = parts / f"{len(refs):06d}.npy"
        flat = g.reshape(channels, -1).T.contiguous().numpy()
        np.save(part, flat)
        refs.append(_Ref(path.resolve(), path.name, sha, size, pix, int(rgb.shape[0]), int(rgb.shape[1]),
                         (int(g.shape[1]), int(g.shape[2])), part))
    if not refs:
        raise BankError("no reference image left")
    return refs, skipped, int(channels)


def _assemble(method, category, record, settings, refs, skipped, channels, tmp: Path, out: Path, max_positions,
              coreset_dims, kshot, source, force) -> ReferenceBank:
    counts = [r.grid[0] * r.grid[1] for r in refs]
    total = int(sum(counts))
    origin_all = np.repeat(np.arange(len(refs), dtype=np.int32), counts)
    descriptors = np.zeros((len(refs), channels), dtype=np.float32)
    coreset = None
    keep = np.arange(total)
    if max_positions and total > int(max_positions):
        t0 = time.perf_counter()
        proj = random_projection(channels, int(coreset_dims), CORESET_SEED)
        dims = channels if proj is None else int(coreset_dims)
        small = torch.empty(total, dims, dtype=torch.float32)
        at = 0
        for r in refs:
            x = torch.from_numpy(np.load(r.part))
            small[at:at + x.shape[0]] = x if proj is None else x @ proj
            at += x.shape[0]
        keep = greedy_coreset(small, int(max_positions)).numpy()
        del small
        coreset = CoresetRecord(dims=dims, seed=CORESET_SEED, seconds=round(time.perf_counter() - t0, 3))
    positions = np.lib.format.open_memmap(tmp / POSITIONS, mode="w+", dtype=np.float32, shape=(len(keep), channels))
    at = start = 0
    kept_counts = []
    for i, r in enumerate(refs):
        x = np.load(r.part)
        descriptors[i] = global_descriptors([torch.from_numpy(np.ascontiguousarray(x.T))])[0].numpy()
        stop = start + x.shape[0]
        lo, hi = np.searchsorted(keep, [start, stop])
        rows = keep[lo:hi] - start
        positions[at:at + len(rows)] = x[rows]
        at += len(rows)
        kept_counts.append(int(len(rows)))
        start = stop
        r.part.unlink()
    positions.flush()
    del positions
    shutil.rmtree(tmp / "parts", ignore_errors=True)
    np.save(tmp / ORIGIN, origin_all[keep])
    np.save(tmp / DESCRIPTORS, descriptors)
    positions_sha = file_sha256(tmp / POSITIONS)[0]
    scoring = ScoringRecord(k=int(settings.get("k", 1)), positions_total=total, positions_kept=int(len(keep)),
                            max_positions=int(max_positions), coreset=coreset,
                            chunk=SEARCH_CHUNK, block=SEARCH_BLOCK)
    from .. import __version__

    manifest = BankManifest(
        bank_id=_bank_id(record.fingerprint, category, [r.sha256 for r in refs], scoring, positions_sha),
        saa_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        category=str(category), method=record, channels=channels, device=str(settings.get("device", "cpu")),
        images=[ImageRecord(name=r.name, path=str(r.path), size=r.size, sha256=r.sha256, pixels_sha256=r.pixels,
                            height=r.height, width=r.width, grid=r.grid, kept=k) for r, k in zip(refs, kept_counts)],
        skipped=list(skipped), kshot=kshot, scoring=scoring, source=str(source), positions_sha256=positions_sha)
    atomic_write_text(tmp / MANIFEST, record_json(manifest))
    atomic_write_text(tmp / CONFIG, method.resolved_config().to_yaml(
        comment=f"The configuration reference bank {out.name} was built with (method {method.name}: {method.label})."))
    atomic_write_text(tmp / README, describe_bank(manifest, None))
    if out.exists():
        old = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return ReferenceBank.open(out)


def describe_bank(manifest: BankManifest, calibration) -> str:
    """The bank in words: what ``README.txt`` holds and ``saa bank show`` prints."""
    m, s = manifest, manifest.scoring
    lines = [f"saa reference bank: category {m.category}, {len(m.images)} good reference image(s)",
             f"method: {m.method.label} (fingerprint {m.method.fingerprint}, out_size {m.method.out_size})"]
    for k, v in m.method.settings.items():
        lines.append(f"  method_options.{m.method.name}.{k}: {v}")
    for k, v in m.method.described.items():
        lines.append(f"  {k}: {v}")
    for f in m.method.model_files:
        lines.append(f"  model file {f.what}: {f.resolved} ({f.kind}, {f.size} bytes, digest {f.digest[:12]})")
    lines.append(f"built {m.created} with saa {m.saa_version} on {m.device}; {m.channels} feature channels")
    lines.append("scoring (the bank's own rule; the method's reference rule above is for images scored against "
                 "each other):")
    if s.coreset is not None:
        lines.append(f"  mean 1 - cos to the {s.k} nearest of {s.positions_kept} kept positions (a greedy coreset "
                     f"of all {s.positions_total}, random projection to {s.coreset.dims} dims, {s.coreset.seconds:.1f} s)")
    else:
        lines.append(f"  mean 1 - cos to the {s.k} nearest of all {s.positions_total} reference positions")
    if m.kshot is not None:
        k = m.kshot
        lines.append(f"k-shot: k = {k.k}, seed run {k.run}, ids {' '.join(k.ids)} (seed list {k.seed_file}; dataset "
                     f"{k.dataset_kind} {k.dataset_root})")
    if m.source:
        lines.append(f"references given as: {m.source}")
    lines.append("references (name, size WxH, sha256 of the file, positions kept):")
    for i, r in enumerate(m.images, 1):
        lines.append(f"  {i:4d} {r.name}  {r.width}x{r.height}  {r.sha256[:16]}  {r.kept}/{r.grid[0] * r.grid[1]}  {r.path}")
    for line in m.skipped:
        lines.append(f"  left out: {line}")
    if calibration is None:
        lines.append("calibration: none (run `saa bank calibrate BANK` for OK / REVIEW / DEFECT thresholds)")
    else:
        c = calibration
        band = (f"REVIEW when {c.t_review:.6g} <= score < {c.t_defect:.6g} (rate {c.review_rate:g}), else OK"
                if c.t_review < c.t_defect else "no REVIEW band (see the note), else OK")
        lines.append(f"calibration ({c.mode}, {c.n} good image(s), {c.created}): DEFECT when score >= {c.t_defect:.6g} "
                     f"(false-alarm rate {c.false_alarm_rate:g}), {band}")
        lines.append(f"  on the calibration images: {c.false_alarms} false alarm(s) of {c.n} (measured rate "
                     f"{c.measured_far:.4f}, 95% interval {c.far_ci95[0]:.4f}-{c.far_ci95[1]:.4f}); expected rate on new "
                     f"good parts like them: {c.expected_far_new:.4f}")
        if c.pixel_threshold is not None:
            lines.append(f"  pixel threshold {c.pixel_threshold:.6g} (good-pixel false-alarm rate {c.pixel_false_alarm_rate:g})")
        for note in c.notes:
            lines.append(f"  note: {note}")
    lines.append(f"bank id {m.bank_id}")
    return shown("\n".join(lines) + "\n")
