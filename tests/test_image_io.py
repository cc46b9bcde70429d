"""saa.image_io: images of odd formats become 8-bit RGB and masks booleans; an unreadable, truncated
or oversized file is named in one line (the pixel limit is checked from the header, before anything
is decoded); one orientation rule for images and masks; background prefetch; atomic writes whose
temporary names fit and whose files follow the umask. (Issue #13 and the hardening tests.)"""
from __future__ import annotations

import logging
import os
import shutil
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from saa import image_io
from saa.datasets import build_dataset
from saa.errors import ImageReadError, ImageTooLargeError
from saa.image_io import (atomic_save_npy, atomic_save_png, atomic_write_bytes, atomic_write_text, read_header,
                          read_mask, read_rgb, set_max_pixels)


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


# ---------------------------------------------------------------------------------------------
# the pixel limit, checked from the header


def test_decompression_bomb_refused_from_the_header(tmp_path, capfd, bomb_png):
    p = bomb_png(tmp_path / "bomb.png")
    assert p.stat().st_size < 2000
    for reader in (read_rgb, read_mask, image_io.read_bgr):
        t0 = time.perf_counter()
        with pytest.raises(ImageTooLargeError) as e:
            reader(p)
        assert time.perf_counter() - t0 < 2.0  # nothing decoded
        msg = str(e.value)
        assert str(p) in msg and "60000x60000" in msg and "100 Mpx" in msg
        assert "--max-pixels" in msg and "SAA_MAX_PIXELS" in msg and "\n" not in msg
    assert isinstance(e.value, ImageReadError)
    err = capfd.readouterr().err
    assert "cv2" not in err and "libpng" not in err and "OpenCV" not in err


def test_pixel_limit_is_configurable(tmp_path, monkeypatch, write_png):
    p = write_png(tmp_path / "small.png", np.zeros((20, 30, 3), np.uint8))  # 600 px
    assert read_rgb(p).shape == (20, 30, 3)
    monkeypatch.setenv("SAA_MAX_PIXELS", "500")
    assert image_io.max_pixels() == 500
    with pytest.raises(ImageTooLargeError, match="30x20 .* over the limit of 500 pixels"):
        read_rgb(p)
    with pytest.raises(ImageTooLargeError):
        read_header(p)
    assert read_header(p, check_limit=False).pixels == 600
    set_max_pixels(600)  # the process setting wins over the environment
    assert read_rgb(p).shape == (20, 30, 3)
    set_max_pixels("1e2")
    with pytest.raises(ImageTooLargeError):
        read_mask(p)
    set_max_pixels(None)
    monkeypatch.setenv("SAA_MAX_PIXELS", "0")  # 0 = no limit
    assert image_io.max_pixels() == 0 and read_rgb(p).shape == (20, 30, 3)
    monkeypatch.setenv("SAA_MAX_PIXELS", "lots")
    with pytest.raises(ImageReadError, match="SAA_MAX_PIXELS"):
        read_rgb(p)


def test_no_limit_still_gives_a_clear_error_not_an_opencv_one(tmp_path, monkeypatch, bomb_png, write_png):
    p = bomb_png(tmp_path / "bomb.png")
    set_max_pixels(0)
    with pytest.raises(ImageReadError) as e:
        read_rgb(p)
    assert str(p) in str(e.value) and "validateInputImageSize" not in str(e.value)

    good = write_png(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))

    def boom(*a, **k):
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp: error: (-215:Assertion failed) in function 'imdecode_'")

    monkeypatch.setattr(image_io.cv2, "imdecode", boom)
    with pytest.raises(ImageReadError, match="good.png"):
        read_rgb(good)


def test_truncated_png_is_named_without_a_libpng_message(tmp_path, capfd, truncated_png, write_png):
    p = truncated_png(tmp_path / "cut.png")
    for reader in (read_rgb, read_mask):
        with pytest.raises(ImageReadError, match="cut.png.*truncated"):
            reader(p)
    assert "libpng" not in capfd.readouterr().err
    rng = np.random.default_rng(2)
    write_png(tmp_path / "flip.png", rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8))
    data = bytearray((tmp_path / "flip.png").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte inside the pixel data
    (tmp_path / "flip.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="flip.png.*corrupt PNG.*IDAT"):
        read_rgb(tmp_path / "flip.png")
    assert "libpng" not in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------
# one orientation rule for images and masks


def test_square_exif_rotated_jpeg_stays_aligned_with_its_mask(tmp_path, caplog, folder_with_exif_image):
    root = folder_with_exif_image(tmp_path / "parts", 64, 64)
    ds = build_dataset("folder", root, normal_dir="good", defect_dirs="bad", mask_dir="masks")
    s = next(s for s in ds.samples(ds.categories()[0]) if s.label == 1)
    with caplog.at_level(logging.WARNING, logger="saa.image_io"):
        rgb = read_rgb(s.image_path)
    assert any("EXIF orientation 6" in r.getMessage() for r in caplog.records)
    mask = ds.load_mask(s, rgb.shape[:2])
    bright = rgb.mean(axis=2) > 128
    iou = (bright & mask).sum() / (bright | mask).sum()
    assert iou > 0.9  # the defect and its mask coincide (the stored pixels of both)
    assert np.array_equal(rgb, np.asarray(Image.open(s.image_path).convert("RGB")))  # no transpose applied


# ---------------------------------------------------------------------------------------------
# masks: any non-zero value


def test_16bit_mask_with_values_0_1(tmp_path, write_png):
    m = np.zeros((12, 10), np.uint16)
    m[2:5, 3:6] = 1
    p = write_png(tmp_path / "m16.png", m)
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    got = read_mask(p)
    assert got.dtype == bool and got.sum() == 9 and got[3, 4]
    # KSDD2 labels an image by its ground truth: a 16-bit 0/1 GT is a defect
    root = tmp_path / "ksdd2"
    write_png(root / "test" / "10.png", np.zeros((12, 10, 3), np.uint8))
    shutil.copyfile(p, root / "test" / "10_GT.png")
    (s,) = build_dataset("ksdd2", root).samples("ksdd2")
    assert s.label == 1


# ---------------------------------------------------------------------------------------------
# atomic writes: temporary names that fit, the umask


def test_long_file_names_fit_the_temporary_name(tmp_path):
    name = "n" * 246 + ".npz"  # 250 bytes: the final name fits, a longer temporary name would not
    atomic_write_bytes(tmp_path / name, b"abc")
    assert (tmp_path / name).read_bytes() == b"abc" and len(list(tmp_path.iterdir())) == 1
    uni = "é" * 124 + ".json"  # 253 bytes in UTF-8
    atomic_write_text(tmp_path / uni, "{}")
    assert (tmp_path / uni).read_text() == "{}"


def test_safe_file_name_is_short_stable_and_distinct(tmp_path):
    from saa.image_io import safe_file_name

    assert safe_file_name("000") == "000" and safe_file_name("a" * 240, reserve=15) == "a" * 240
    long_a, long_b = "x" * 300 + "_a", "x" * 300 + "_b"  # same first 300 characters
    sa, sb = safe_file_name(long_a, reserve=20), safe_file_name(long_b, reserve=20)
    assert sa != sb and sa == safe_file_name(long_a, reserve=20)
    assert len(sa.encode()) + 20 <= 255 and sa.startswith("x" * 100)
    uni = safe_file_name("é" * 200, reserve=4)
    assert len(uni.encode()) + 4 <= 255
    atomic_write_bytes(tmp_path / (sa + "_saliency.npy"), b"x")  # a real file system takes it
    assert (tmp_path / (sa + "_saliency.npy")).read_bytes() == b"x"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        atomic_save_npy(tmp_path / "m.npy", np.zeros((2, 2), np.float32))
        atomic_save_png(tmp_path / "o.png", np.zeros((4, 4, 3), np.uint8))
        atomic_write_text(tmp_path / "config.yaml", "a: 2\n")  # replacing a file too
    finally:
        os.umask(old)
    for name in ("a.bin", "config.yaml", "m.npy", "o.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# ---------------------------------------------------------------------------------------------
# odd formats, unreadable files, prefetch


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)


def test_grey_rgba_16bit_and_cmyk_become_8bit_rgb(tmp_path, rgb):
    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out == grey[:, :, None]).all()

    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    assert (read_rgb(tmp_path / "a.png") == rgb).all()

    deep = rgb.astype(np.uint16) * 257  # 16-bit with the same visible values
    cv2.imwrite(str(tmp_path / "d.png"), deep[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "d.tif"), deep[:, :, ::-1])
    for name in ("d.png", "d.tif"):
        got = read_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and np.abs(got.astype(int) - rgb).max() <= 1, name

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    got = read_rgb(tmp_path / "c.jpg")
    assert got.shape == (20, 30, 3) and np.abs(got.astype(int) - rgb).mean() < 12


@pytest.mark.parametrize("content,reason", [(None, "not found"), (b"", "empty"),
                                            (b"hello, not an image", "not a readable image")])
def test_unreadable_images_name_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_rgb(p)
    assert str(p) in str(e.value) and reason in str(e.value)


def test_truncated_png(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / "t.png"), rgb)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_rgb(tmp_path / "t.png")


def test_masks_non_binary_values_are_anomalous(tmp_path):
    m = np.zeros((5, 5), np.uint8)
    m[1, 1], m[2, 2] = 1, 200
    cv2.imwrite(str(tmp_path / "m.png"), m)
    assert read_mask(tmp_path / "m.png").sum() == 2


def test_very_large_image_reads(tmp_path):
    big = np.zeros((8000, 8000), np.uint8)
    big[::97, :] = 200
    cv2.imwrite(str(tmp_path / "big.png"), big)
    out = read_rgb(tmp_path / "big.png")
    assert out.shape == (8000, 8000, 3) and out.dtype == np.uint8 and out[97, 5, 1] == 200


def test_prefetch_order_background_thread_and_errors(tmp_path, rgb):
    """Images decode in a background thread, at most `depth` ahead, in order; a bad file raises
    at its own position with its own path."""
    import threading

    from saa.image_io import prefetch

    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), rgb[:, :, ::-1])
        paths.append(p)
    (tmp_path / "2.png").write_bytes(b"not an image")
    loaded, threads = [], set()

    def load(p):
        loaded.append(p.name)
        threads.add(threading.current_thread().name)
        return read_rgb(p)

    seen = []
    with pytest.raises(ImageReadError, match="2.png"):
        for i, (p, img) in enumerate(prefetch(paths, load, depth=2)):
            assert len(loaded) <= i + 3  # never more than depth ahead (+ the one being yielded)
            assert img.shape == rgb.shape
            seen.append(p.name)
    assert seen == ["0.png", "1.png"]
    assert threads and all(t.startswith("saa-prefetch") for t in threads)
    # depth 0: no thread, same results
    out = [(p.name, img.shape) for p, img in prefetch(paths[:2], read_rgb, depth=0)]
    assert out == [("0.png", rgb.shape), ("1.png", rgb.shape)]
