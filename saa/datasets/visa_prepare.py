"""``saa prepare visa``: convert the raw VisA release into the ``1cls`` tree that dataset kind
``visa_public`` reads (:func:`prepare_visa`)."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from ..errors import DatasetError, ImageReadError
from ..image_io import atomic_write_bytes, read_mask

_VISA_COLUMNS = ("object", "split", "label", "image", "mask")
_VISA_LAYOUT = (
    "<raw>/<category>/Data/Images/Normal/*.JPG\n"
    "<raw>/<category>/Data/Images/Anomaly/*.JPG\n"
    "<raw>/<category>/Data/Masks/Anomaly/*.png\n"
    "<raw>/split_csv/1cls.csv   columns: object,split,label,image,mask (paths relative to <raw>)"
)


def _visa_error(message: str, path: Path | str) -> DatasetError:
    return DatasetError(f"{message}: {path}\n\nexpected raw VisA layout:\n{_VISA_LAYOUT}")


def _read_split_csv(csv_path: Path) -> list[dict[str, str]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [(c or "").strip() for c in (reader.fieldnames or [])]
            missing = [c for c in _VISA_COLUMNS if c not in fields]
            if missing:
                raise _visa_error(
                    f"malformed split csv: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(fields) or 'nothing'})",
                    csv_path,
                )
            rows = []
            for i, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                if not any(row.values()):
                    continue
                row["_line"] = str(i)
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _visa_error(f"cannot read the split csv ({e})", csv_path) from e
    if not rows:
        raise _visa_error("the split csv has no rows", csv_path)
    return rows


def _copy_preserving(src: Path, dst: Path) -> bool:
    """Copy bytes and mtime; False (nothing written) when ``dst`` already has them."""
    st = src.stat()
    if dst.is_file():
        dt = dst.stat()
        if dt.st_size == st.st_size and int(dt.st_mtime) == int(st.st_mtime):
            return False
    atomic_write_bytes(dst, src.read_bytes())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return True


def _write_binary_mask(src: Path, dst: Path) -> bool:
    try:
        m = read_mask(src)
    except ImageReadError as e:
        raise _visa_error(f"cannot read a mask listed in the split csv ({e})", src) from e
    ok, buf = cv2.imencode(".png", m.astype(np.uint8) * 255)
    if not ok:
        raise OSError(f"{dst}: PNG encoding failed")
    data = buf.tobytes()
    if dst.is_file() and dst.read_bytes() == data:
        return False
    atomic_write_bytes(dst, data)
    return True


def prepare_visa(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    split_csv: str | os.PathLike | None = None,
    categories: Optional[Iterable[str]] = None,
) -> dict[str, int]:
    """Build the VisA ``1cls`` tree (what ``visa_public`` reads) from the raw release.

    ``split_csv`` is the ``1cls.csv`` file or the folder holding it (default
    ``<raw_root>/split_csv/1cls.csv``). Images are copied byte for byte; masks are written as PNG
    with values 0/255. Files already up to date are left alone, so running it again is cheap and
    changes nothing. ``categories`` limits the work to some objects (e.g. a partial download).
    Every referenced file is checked before anything is written.

    Returns counts: categories, train_good, test_good, test_bad, masks, written, unchanged.
    """
    raw = Path(os.path.expanduser(os.fspath(raw_root)))
    out = Path(os.path.expanduser(os.fspath(out_root)))
    if not raw.is_dir():
        raise _visa_error("raw VisA folder does not exist", raw)
    if split_csv is None:
        csv_path = raw / "split_csv" / "1cls.csv"
    else:
        csv_path = Path(os.path.expanduser(os.fspath(split_csv)))
        if csv_path.is_dir():
            csv_path = csv_path / "1cls.csv"
    if not csv_path.is_file():
        raise _visa_error("split csv not found", csv_path)
    rows = _read_split_csv(csv_path)
    wanted = set(categories) if categories is not None else None

    # plan and check everything first
    plan: list[tuple[str, Path, Path]] = []  # (kind, src, dst)
    targets: dict[Path, Path] = {}
    counts = {"categories": 0, "train_good": 0, "test_good": 0, "test_bad": 0, "masks": 0,
              "written": 0, "unchanged": 0}
    cats: set[str] = set()
    for row in rows:
        where = f"{csv_path} line {row['_line']}"
        obj, split, label = row["object"], row["split"].lower(), row["label"].lower()
        if wanted is not None and obj not in wanted:
            continue
        if not obj or not row["image"]:
            raise _visa_error("split csv row without object or image", where)
        if (split, label) == ("train", "normal"):
            sub = "train/good"
        elif (split, label) == ("test", "normal"):
            sub = "test/good"
        elif (split, label) == ("test", "anomaly"):
            sub = "test/bad"
        else:
            raise _visa_error(
                f"unexpected split/label {row['split']!r}/{row['label']!r} (expected train/normal, "
                f"test/normal or test/anomaly)", where,
            )
        src = raw / row["image"]
        if not src.is_file():
            raise _visa_error(f"image listed in the split csv ({where}) not found", src)
        dst = out / obj / sub / src.name
        if dst in targets and targets[dst] != src:
            raise _visa_error(f"two csv rows write the same output file ({targets[dst]} and {src})", dst)
        targets[dst] = src
        plan.append(("image", src, dst))
        counts[sub.replace("/", "_")] += 1
        cats.add(obj)
        if sub == "test/bad":
            if not row["mask"]:
                raise _visa_error("anomalous image without a mask in the split csv", where)
            msrc = raw / row["mask"]
            if not msrc.is_file():
                raise _visa_error(f"mask listed in the split csv ({where}) not found", msrc)
            plan.append(("mask", msrc, out / obj / "ground_truth" / "bad" / f"{src.stem}.png"))
            counts["masks"] += 1
    if wanted is not None and not cats:
        raise _visa_error(f"none of the categories {sorted(wanted)} appears in the split csv", csv_path)
    counts["categories"] = len(cats)

    for kind, src, dst in plan:
        changed = _copy_preserving(src, dst) if kind == "image" else _write_binary_mask(src, dst)
        counts["written" if changed else "unchanged"] += 1
    return counts

