"""Reading images and masks as the pipeline expects them, and atomic writes.

Images are decoded with OpenCV, like the authors' code (``cv2.imread(path, IMREAD_COLOR)``), so
that JPEG decoding is bit-identical to it; grey, alpha, 16-bit and CMYK files all become 8-bit RGB.

Every read goes through :func:`read_header` first (the file header only, no pixels decoded):

* **Pixel limit.** An image declaring more than :func:`max_pixels` pixels (default 100 Mpx, the
  web UI's limit too) is refused with :class:`~saa.errors.ImageTooLargeError` naming the file, its
  size and how to raise the limit (``saa --max-pixels N``, ``$SAA_MAX_PIXELS``,
  :func:`set_max_pixels`; 0 = no limit), before anything is decoded (decompression bombs).
* **Orientation.** The EXIF orientation tag is ignored for images and masks alike: both are read
  as their pixels are stored, so an image and its mask always share one frame (a viewer may show an
  EXIF-rotated JPEG turned; its mask is not turned either way). A non-trivial tag is logged once
  per file, and ``saa prepare check`` lists such files.
* **Masks.** Any non-zero value in any colour channel is a defect, whatever the bit depth
  (8/16-bit, float); an alpha channel is ignored.
* Every failure (missing, empty, truncated, corrupt, too large, unsupported) is an
  :class:`~saa.errors.ImageReadError` naming the file; no OpenCV or PIL error reaches the user.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import secrets
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .errors import ImageReadError, ImageTooLargeError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Default pixel limit of every image read (width x height), the same as the web UI's.
DEFAULT_MAX_PIXELS = 100_000_000
#: Environment variable overriding the default limit (an integer such as 200000000 or 2e8; 0 = none).
MAX_PIXELS_ENV = "SAA_MAX_PIXELS"
_max_pixels_set: Optional[int] = None

_ORIENTATION_TEXT = {
    2: "mirrored", 3: "rotated 180", 4: "flipped vertically", 5: "transposed",
    6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 counter-clockwise",
}
_warned_orientation: set[str] = set()
_PIL_LOCK = threading.Lock()


def parse_max_pixels(value, source: str = "pixel limit") -> int:
    """A pixel limit from an int or text (``200000000``, ``2e8``, ``0`` or ``none`` = no limit)."""
    if isinstance(value, bool):
        raise ImageReadError(f"{source}: expected a number of pixels, got {value!r}")
    if isinstance(value, str) and value.strip().lower() in ("none", "off", "unlimited"):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageReadError(f"{source}: expected a number of pixels such as 200000000 or 2e8 "
                             f"(0 = no limit), got {value!r}") from None
    if not np.isfinite(number) or number < 0 or number != int(number):
        raise ImageReadError(f"{source}: expected a whole number of pixels >= 0, got {value!r}")
    return int(number)


def max_pixels() -> int:
    """The pixel limit of every image read: :func:`set_max_pixels`, else ``$SAA_MAX_PIXELS``,
    else :data:`DEFAULT_MAX_PIXELS`. 0 means no limit."""
    if _max_pixels_set is not None:
        return _max_pixels_set
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        return parse_max_pixels(env, f"${MAX_PIXELS_ENV}")
    return DEFAULT_MAX_PIXELS


def set_max_pixels(limit) -> None:
    """Set the pixel limit for this process (``None``: back to ``$SAA_MAX_PIXELS`` / the default)."""
    global _max_pixels_set
    _max_pixels_set = None if limit is None else parse_max_pixels(limit)


def _limit_text(limit: int) -> str:
    return f"{limit / 1e6:g} Mpx" if limit >= 1_000_000 else f"{limit} pixels"


def check_pixels(source, width: int, height: int, limit: Optional[int] = None) -> None:
    """Raise :class:`ImageTooLargeError` when ``width x height`` is over the limit (0 = none)."""
    limit = max_pixels() if limit is None else int(limit)
    if limit and int(width) * int(height) > limit:
        px = int(width) * int(height)
        raise ImageTooLargeError(
            f"{source}: {width}x{height} = {px / 1e6:.1f} Mpx is over the limit of {_limit_text(limit)} "
            f"per image (a guard against decompression bombs); to read it, raise the limit: "
            f"`saa --max-pixels {max(px, limit * 2)} ...` or {MAX_PIXELS_ENV}={max(px, limit * 2)} (0 = no limit)")


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels."""

    width: int
    height: int
    format: str
    orientation: int = 1  # EXIF orientation tag (1 = none / as stored)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _exif_orientation(im) -> int:
    # Only from EXIF data already parsed with the header: PIL's PNG getexif() would decode the image.
    try:
        raw = im.info.get("exif")
        if raw:
            from PIL import Image

            ex = Image.Exif()
            ex.load(raw)
            return int(ex.get(0x0112, 1) or 1)
        tags = getattr(im, "tag_v2", None)  # TIFF
        if tags is not None:
            return int(tags.get(0x0112, 1) or 1)
    except Exception:
        pass
    return 1


def _header_from(fp) -> Optional[ImageHeader]:
    from PIL import Image

    with _PIL_LOCK:  # PIL's own bomb check is global state; ours below names the file and the limit
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(fp) as im:
                w, h = im.size
                return ImageHeader(int(w), int(h), str(im.format or "?"), _exif_orientation(im))
        except Exception:
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _check_file(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    limit = max_pixels()
    if limit and st.st_size > 8 * limit + (64 << 20):
        raise ImageTooLargeError(
            f"{path}: the file is {st.st_size / 2**30:.1f} GiB, more than an image within the limit of "
            f"{_limit_text(limit)} can need; raise the limit with `saa --max-pixels N` or {MAX_PIXELS_ENV}=N "
            f"(0 = no limit)")
    return st.st_size


def read_header(path: str | os.PathLike, check_limit: bool = True) -> ImageHeader:
    """Size, format and EXIF orientation from the file header (no pixels decoded).

    Raises :class:`ImageReadError` for a missing, empty or unidentifiable file and, with
    ``check_limit``, :class:`ImageTooLargeError` over :func:`max_pixels`.
    """
    path = Path(path)
    _check_file(path)
    try:
        header = _header_from(path)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if header is None:
        raise ImageReadError(f"{path}: not a readable image (unknown format, truncated or corrupt header)")
    if check_limit:
        check_pixels(path, header.width, header.height)
    return header


def _png_problem(data: bytes) -> Optional[str]:
    """Why a PNG's chunk structure is cut short or a critical chunk is damaged (CRC), so that libpng
    never prints its own error; None when the structure is sound."""
    pos, n = 8, len(data)
    view = memoryview(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        name = kind.decode("latin-1") if kind.isalpha() else "?"
        if end > n:
            return f"truncated PNG: chunk {name} at byte {pos} ends at byte {end}, the file has {n} bytes"
        if kind[:1].isupper() and zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"corrupt PNG: chunk {name} at byte {pos} fails its checksum (CRC)"
        if kind == b"IEND":
            return None
        pos = end
    return None if pos == n else f"truncated PNG: the file ends inside a chunk header at byte {pos}"


def _warn_orientation(path: Path, orientation: int) -> None:
    key = str(path)
    if orientation in (0, 1) or key in _warned_orientation:
        return
    _warned_orientation.add(key)
    what = _ORIENTATION_TEXT.get(orientation, f"tag value {orientation}")
    log.warning("%s: EXIF orientation %d (%s) is ignored: saa reads images and masks as their pixels are "
                "stored, so a viewer may show this file turned (docs/limits.md)", path, orientation, what)


_COLOR, _MASK = "color", "mask"


def _decode(path: Path, kind: str, warn_orientation: bool = True) -> np.ndarray:
    _check_file(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from None
    header = _header_from(io.BytesIO(data))
    if header is not None:
        check_pixels(path, header.width, header.height)
        if warn_orientation:
            _warn_orientation(path, header.orientation)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        problem = _png_problem(data)
        if problem:
            raise ImageReadError(f"{path}: not a readable image ({problem})")
    flags = (cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if kind == _COLOR else cv2.IMREAD_UNCHANGED
    reason = ""
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # OpenCV's own size limit (2^30 pixels), or a decoder failure
        img = None
        if "MAX_IMAGE_PIXELS" in str(e):
            reason = ("OpenCV decodes at most 2^30 pixels; set the environment variable "
                      "OPENCV_IO_MAX_IMAGE_PIXELS to read larger images")
        else:
            reason = "the decoder failed"
    if img is None and header is not None and not reason:
        img = _decode_with_pil(data, kind)
    if img is None or img.size == 0:
        if reason:
            raise ImageReadError(f"{path}: not decoded ({reason})")
        raise ImageReadError(f"{path}: not a readable image (truncated, corrupt or unsupported format)")
    if header is None:  # sized only now: OpenCV read a format PIL does not know
        check_pixels(path, img.shape[1], img.shape[0])
    return img


def _decode_quiet(path: str | os.PathLike, kind: str = _COLOR) -> np.ndarray:
    """As :func:`read_bgr` (kind ``color``) or the raw mask array (``mask``), without the orientation
    log line (for callers that report it themselves, e.g. ``saa prepare check``)."""
    return _decode(Path(path), kind, warn_orientation=False)


def _decode_with_pil(data: bytes, kind: str):
    """Fallback for files OpenCV cannot decode (some TIFF/WebP variants); the size was checked."""
    try:
        from PIL import Image

        with _PIL_LOCK:
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = old
        with im:
            im.load()
            if kind == _MASK:
                if im.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr"):
                    im = im.convert("RGB") if im.mode != "LA" else im.convert("L")
                arr = np.asarray(im)
                if arr.ndim == 3:
                    arr = arr[:, :, ::-1]
            else:
                arr = np.asarray(im.convert("RGB"))[:, :, ::-1]
            return np.ascontiguousarray(arr)
    except Exception:
        return None


def read_bgr(path: str | os.PathLike) -> np.ndarray:
    """The image as an 8-bit BGR array (H, W, 3), as ``cv2.imread(path, IMREAD_COLOR |
    IMREAD_IGNORE_ORIENTATION)``: the pixels as stored (EXIF orientation ignored, like masks)."""
    return _decode(Path(path), _COLOR)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The image as an 8-bit RGB array (H, W, 3)."""
    return np.ascontiguousarray(read_bgr(path)[:, :, ::-1])


def mask_from_array(m: np.ndarray) -> np.ndarray:
    """Boolean (H, W): any non-zero value in any colour channel (alpha ignored), any bit depth."""
    m = np.asarray(m)
    if m.ndim == 3:
        m = m[:, :, :3] if m.shape[2] >= 3 else m[:, :, :1]
        m = np.nan_to_num(m) != 0 if np.issubdtype(m.dtype, np.floating) else m != 0
        return m.any(axis=2)
    return np.nan_to_num(m) != 0 if np.issubdtype(m.dtype, np.floating) else m != 0


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask as a boolean array (H, W): any non-zero value is anomalous, whatever the
    bit depth (a 16-bit PNG with values 0/1 works); the pixels as stored (EXIF orientation ignored)."""
    return mask_from_array(_decode(Path(path), _MASK))


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


_NAME_MAX = 255


def safe_file_name(name: str, reserve: int = 0, limit: int = _NAME_MAX) -> str:
    """``name`` unchanged when ``name`` plus ``reserve`` more bytes (a suffix such as ``_overlay.png``)
    fits the file-name limit of ``limit`` bytes (UTF-8); otherwise a prefix of it, ``~`` and 16 hex
    digits of its SHA-256, so that every long name gets its own short stored name (distinct long names
    give distinct stored names barring a hash collision) and the same name always the same one."""
    import hashlib

    if len(name.encode("utf-8", "surrogateescape")) + reserve <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    room = limit - reserve - len(digest) - 1
    if room < 1:
        raise ValueError(f"no room for a file name: limit {limit}, reserve {reserve}")
    prefix = name
    while len(prefix.encode("utf-8", "surrogateescape")) > room:
        prefix = prefix[:-1]
    return f"{prefix}~{digest}"


def _temp_name(name: str) -> str:
    """A hidden temporary name beside ``name`` that fits the file-name limit even when ``name``
    nearly fills it (the final name may be up to 255 bytes; the temporary one never longer)."""
    tag = secrets.token_hex(4)
    room = _NAME_MAX - len(f"..{tag}.tmp".encode())
    stem = name
    while len(stem.encode("utf-8", "surrogateescape")) > room:
        stem = stem[: max(1, len(stem) - 8)] if len(stem) > 8 else stem[:-1]
    return f".{stem}.{tag}.tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The file is created with mode 0o666 filtered by the process umask (like ``open(path, "w")``), so
    results in a shared folder are readable as the user's umask allows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / _temp_name(path.name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random collisions
        raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # write() errors (e.g. a full disk) name no file
        raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
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
