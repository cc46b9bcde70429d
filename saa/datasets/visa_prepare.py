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


_SUBFOLDERS = {("train", "normal"): "train/good", ("test", "normal"): "test/good", ("test", "anomaly"): "test/bad"}


def _user_path(path: str | os.PathLike) -> Path:
    """A path the user gave, ``~`` expanded."""
    return Path(os.path.expanduser(os.fspath(path)))


def _find_split_csv(raw: Path, split_csv: str | os.PathLike | None) -> Path:
    """The ``1cls.csv`` file: given, inside the folder given, or ``<raw>/split_csv/1cls.csv``."""
    if split_csv is None:
        csv_path = raw / "split_csv" / "1cls.csv"
    else:
        csv_path = _user_path(split_csv)
        if csv_path.is_dir():
            csv_path = csv_path / "1cls.csv"
    if not csv_path.is_file():
        raise _visa_error("split csv not found", csv_path)
    return csv_path


def _row_subfolder(row: dict[str, str], where: str) -> str:
    """The output subfolder (``train/good``, ``test/good``, ``test/bad``) of one csv row."""
    sub = _SUBFOLDERS.get((row["split"].lower(), row["label"].lower()))
    if sub is None:
        raise _visa_error(
            f"unexpected split/label {row['split']!r}/{row['label']!r} (expected train/normal, "
            f"test/normal or test/anomaly)", where,
        )
    return sub


class _VisaPlan:
    """The files ``prepare_visa`` will write, every source checked before anything is written."""

    def __init__(self, raw: Path, out: Path, csv_path: Path) -> None:
        self.raw, self.out, self.csv_path = raw, out, csv_path
        self.steps: list[tuple[str, Path, Path]] = []  # (kind, src, dst)
        self.targets: dict[Path, Path] = {}
        self.counts = {"categories": 0, "train_good": 0, "test_good": 0, "test_bad": 0, "masks": 0,
                       "written": 0, "unchanged": 0}
        self.categories: set[str] = set()

    def add_row(self, row: dict[str, str]) -> None:
        """Plan the image of one csv row (and its mask when it is anomalous)."""
        where = f"{self.csv_path} line {row['_line']}"
        obj = row["object"]
        if not obj or not row["image"]:
            raise _visa_error("split csv row without object or image", where)
        sub = _row_subfolder(row, where)
        src = self._add_image(row, obj, sub, where)
        if sub == "test/bad":
            self._add_mask(row, obj, src, where)

    def _add_image(self, row: dict[str, str], obj: str, sub: str, where: str) -> Path:
        """Plan one image copy; two rows writing one output file are refused."""
        src = self.raw / row["image"]
        if not src.is_file():
            raise _visa_error(f"image listed in the split csv ({where}) not found", src)
        dst = self.out / obj / sub / src.name
        if dst in self.targets and self.targets[dst] != src:
            raise _visa_error(f"two csv rows write the same output file ({self.targets[dst]} and {src})", dst)
        self.targets[dst] = src
        self.steps.append(("image", src, dst))
        self.counts[sub.replace("/", "_")] += 1
        self.categories.add(obj)
        return src

    def _add_mask(self, row: dict[str, str], obj: str, image: Path, where: str) -> None:
        """Plan the 0/255 PNG mask of an anomalous image."""
        if not row["mask"]:
            raise _visa_error("anomalous image without a mask in the split csv", where)
        msrc = self.raw / row["mask"]
        if not msrc.is_file():
            raise _visa_error(f"mask listed in the split csv ({where}) not found", msrc)
        self.steps.append(("mask", msrc, self.out / obj / "ground_truth" / "bad" / f"{image.stem}.png"))
        self.counts["masks"] += 1

    def write(self) -> dict[str, int]:
        """Write every planned file not already up to date; the counts."""
        self.counts["categories"] = len(self.categories)
        for kind, src, dst in self.steps:
            changed = _copy_preserving(src, dst) if kind == "image" else _write_binary_mask(src, dst)
            self.counts["written" if changed else "unchanged"] += 1
        return self.counts


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
    raw = _user_path(raw_root)
    out = _user_path(out_root)
    if not raw.is_dir():
        raise _visa_error("raw VisA folder does not exist", raw)
    csv_path = _find_split_csv(raw, split_csv)
    rows = _read_split_csv(csv_path)
    wanted = set(categories) if categories is not None else None
    plan = _VisaPlan(raw, out, csv_path)
    for row in rows:
        if wanted is None or row["object"] in wanted:
            plan.add_row(row)
    if wanted is not None and not plan.categories:
        raise _visa_error(f"none of the categories {sorted(wanted)} appears in the split csv", csv_path)
    return plan.write()
