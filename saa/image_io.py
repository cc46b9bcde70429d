"""Reading images and masks as the pipeline expects them, and atomic writes.

Images are decoded with OpenCV, like the authors' code (``cv2.imread(path, IMREAD_COLOR)``), so
that JPEG decoding is bit-identical to it; grey, alpha, 16-bit and CMYK files all become 8-bit RGB.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _decode(path: Path, flags: int) -> np.ndarray:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    data = path.read_bytes()
    if len(data) == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        img = _decode_with_pil(path, flags)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a readable image (truncated, corrupt or unsupported format)")
    return img


def _decode_with_pil(path: Path, flags: int):
    """Fallback for files OpenCV cannot decode (some TIFF/WebP variants)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            if flags == cv2.IMREAD_GRAYSCALE:
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))[:, :, ::-1]
            return np.ascontiguousarray(arr)
    except Exception:
        return None


def read_bgr(path: str | os.PathLike) -> np.ndarray:
    """The image as an 8-bit BGR array (H, W, 3), exactly as ``cv2.imread(path, IMREAD_COLOR)``."""
    return _decode(Path(path), cv2.IMREAD_COLOR)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image as an 8-bit RGB array (H, W, 3)."""
    return np.ascontiguousarray(read_bgr(path)[:, :, ::-1])


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask as a boolean array (H, W): any non-zero grey value is anomalous."""
    m = _decode(Path(path), cv2.IMREAD_GRAYSCALE)
    return m > 0


def as_rgb_uint8(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Validate/convert an in-memory image (H, W), (H, W, 3) or (H, W, 4) to 8-bit RGB."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{source}: expected an (H, W, 3) RGB array, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]) if rgb.ndim == 3 else rgb)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def prefetch(items, load, depth: int = 2):
    """Yield ``(item, load(item))`` in order, with the next ``depth`` loads running in a background
    thread while the caller works on the current one (image decoding overlaps the models).

    A load that raises re-raises in the caller at that item, in order, so errors name the same file
    as without prefetching; items after it are not loaded by the caller. ``depth <= 0``: no thread.
    """
    items = list(items)
    if depth <= 0 or len(items) < 2:
        for it in items:
            yield it, load(it)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="saa-prefetch") as pool:
        pending = [pool.submit(load, it) for it in items[:depth]]
        nxt = len(pending)
        try:
            for i, it in enumerate(items):
                fut = pending[i]
                if nxt < len(items):
                    pending.append(pool.submit(load, items[nxt]))
                    nxt += 1
                yield it, fut.result()
                pending[i] = None  # drop the reference: memory stays at ~depth images
        finally:
            for f in pending:
                if f is not None:
                    f.cancel()
