"""Hostile and careless input II (issue #13): size limits, ground-truth integrity, one-line OS errors,
output permissions."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from saa import image_io
from saa.config import MAX_EVAL_SIZE, MAX_OUT_SIZE, load_config
from saa.datasets import build_dataset, validate_dataset
from saa.errors import ConfigError, DatasetError, ImageReadError, ImageTooLargeError
from saa.image_io import (atomic_save_npy, atomic_save_png, atomic_write_bytes, atomic_write_text, read_header,
                          read_mask, read_rgb, set_max_pixels)

REPO = Path(__file__).resolve().parents[1]
MVTEC_CFG = REPO / "configs" / "mvtec.yaml"
BOTTLE = REPO.parent / "shared" / "realdata" / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection"


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.delenv(image_io.MAX_PIXELS_ENV, raising=False)
    set_max_pixels(None)
    yield
    set_max_pixels(None)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A valid-looking grey PNG declaring width x height pixels, a few hundred bytes on disk."""
    idat = zlib.compress(b"\x00" * (width + 1) * 8, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def truncated_png(path: Path, shape=(64, 96, 3), keep: float = 0.6) -> Path:
    """A PNG cut short: its header (size) is intact, its pixels are not all there."""
    rng = np.random.default_rng(1)
    cv2.imwrite(str(path), rng.integers(0, 255, size=shape, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert Image.open(path).size == (shape[1], shape[0])  # the header alone looks fine
    return path


def exif_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> Path:
    ex = Image.Exif()
    ex[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=ex.tobytes())
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def run_cli(*args, env=None, cwd=REPO):
    e = dict(os.environ)
    e.pop(image_io.MAX_PIXELS_ENV, None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "saa.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=300)


# ---------------------------------------------------------------------------------------------
# 1. pixel limit, checked from the header


def test_decompression_bomb_refused_from_the_header(tmp_path, capfd):
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


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
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


def test_no_limit_still_gives_a_clear_error_not_an_opencv_one(tmp_path, monkeypatch):
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


def test_truncated_png_is_named_without_a_libpng_message(tmp_path, capfd):
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


def test_ui_upload_check_uses_the_shared_limit(tmp_path):
    from saa import ui

    p = write_png(tmp_path / "up.png", np.zeros((20, 30, 3), np.uint8))
    ui.check_upload(p)
    set_max_pixels(500)
    with pytest.raises(ui.InputRejected, match="500 pixels"):
        ui.check_upload(p)
    set_max_pixels(None)
    bomb = bomb_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ui.InputRejected, match="100 Mpx"):
        ui.check_upload(bomb)


def test_predict_skips_a_bomb_and_processes_the_others(tmp_path):
    from test_evaluator import make_mvtec

    data = make_mvtec(tmp_path / "data")
    imgs = sorted(str(p) for p in (data / "bottle" / "test").glob("*/*.png"))[:2]
    bomb = bomb_png(tmp_path / "bomb.png")
    out = tmp_path / "out"
    r = run_cli("predict", "--config", MVTEC_CFG, "--category", "bottle", "--method", "lite", "--out", out,
                imgs[0], bomb, imgs[1], "--set", f"models.weights_dir={tmp_path}/none", "--panels", "none")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "bomb.png" in r.stderr and "over the limit of 100 Mpx" in r.stderr
    assert "Traceback" not in r.stderr and "cv2.error" not in r.stderr
    assert len(list(out.glob("*.json"))) == 2 and not list(out.glob("bomb*"))
    # the limit from the command line
    r = run_cli("--max-pixels", "1000", "predict", "--config", MVTEC_CFG, "--category", "bottle", "--method", "lite",
                "--out", tmp_path / "out2", imgs[0], "--set", f"models.weights_dir={tmp_path}/none")
    assert r.returncode == 1 and "over the limit of 1000 pixels" in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# 2. sizes that size an allocation; typed fields


@pytest.mark.parametrize("key,value,limit", [
    ("out_size", 100000, MAX_OUT_SIZE),
    ("dataset.options.eval_size", 100000, MAX_EVAL_SIZE),
    ("behaviour.single_object_size", 100000, 1024),
    ("behaviour.multi_object_size", 100000, 2048),
    ("behaviour.cross_image_k", 10**9, 1024),
])
def test_allocation_sizes_have_upper_bounds(key, value, limit):
    with pytest.raises(ConfigError) as e:
        load_config(MVTEC_CFG, [f"{key}={value}"])
    msg = str(e.value)
    assert f"{key}: must be at most {limit}" in msg and (" GB" in msg or " TB" in msg)
    cfg = load_config(MVTEC_CFG, [f"{key}={limit}"])  # the bound itself is allowed
    assert cfg is not None


def test_eval_size_checked_at_load_as_the_evaluator_reads_it():
    from saa.evaluator import eval_size_of

    for ok, size in (("256", 256), ("2048", 2048), ("'300'", 300), ("512.0", 512)):
        assert eval_size_of(load_config(MVTEC_CFG, [f"dataset.options.eval_size={ok}"])) == size
    for bad in ("0", "-3", "2.5", "true", "[1]", "full", ".inf", "2049"):
        with pytest.raises(ConfigError, match="dataset.options.eval_size"):
            load_config(MVTEC_CFG, [f"dataset.options.eval_size={bad}"])


@pytest.mark.parametrize("name", ["a/b", "..", "/abs", "a\\b", "c:x", "nul\x00x", "x" * 200])
def test_names_that_become_folders_are_plain(name):
    with pytest.raises(ConfigError, match="dataset.options.category"):
        load_config(MVTEC_CFG, [f"dataset.options.category={json.dumps(name)}"])
    with pytest.raises(ConfigError, match="dataset.options.vand_experiment"):
        load_config(MVTEC_CFG, [f"dataset.options.vand_experiment={json.dumps(name)}"])
    data = {"categories": {name: {"object": "o", "n_objects": 1, "k_mask": 1, "area_ratio": 0.5}}}
    from saa.config import config_from_dict

    with pytest.raises(ConfigError, match="categories key"):
        config_from_dict(data)


def test_dataset_options_are_typed():
    for bad in ("dataset.options.category=[1, 2]", "dataset.options.split=[test]",
                "dataset.options.normal_dir={a: 1}", "dataset.options.mask_suffix=a/b",
                "dataset.options.defect_dirs=[1, 2]", 'dataset.root="a\\0b"'):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(MVTEC_CFG, [bad])
    cfg = load_config(MVTEC_CFG, ["dataset.options.category=part_1", "dataset.options.defect_dirs=[a, 'b/*']",
                                  "dataset.options.n=3"])
    assert cfg.dataset.options == {"category": "part_1", "defect_dirs": ["a", "b/*"], "n": 3}


# ---------------------------------------------------------------------------------------------
# 3. the YAML loader: input size, alias bombs


_LAUGHS = "[" + ", ".join(["&a0 [" + ", ".join(['"lol"'] * 9) + "]"] + [
    f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "]"
#: < 1 KB, 9^10 strings once the aliases are copied out; the value goes to a real key
BILLION_LAUGHS = ("categories: {x: {object: o, n_objects: 1, k_mask: 1, area_ratio: 0.5}}\n"
                  f"dataset: {{options: {{category: {_LAUGHS}}}}}\n")


def _limited_python(code: str, mem_gib: int = 4, timeout: int = 120):
    """Run ``code`` in a Python process limited to ``mem_gib`` of address space, so that a
    regression fails the test (MemoryError / killed) instead of exhausting the machine."""
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_gib << 30, mem_gib << 30))

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                       preexec_fn=limit)
    return r, time.perf_counter() - t0


_LOAD = """
import sys, time
from saa.config import load_config
from saa.errors import ConfigError
t0 = time.perf_counter()
try:
    load_config(sys.argv[1] if len(sys.argv) > 1 else {path!r}, {overrides!r})
except ConfigError as e:
    print(f"{{time.perf_counter() - t0:.3f}}"); print(e); sys.exit(3)
sys.exit(0)
"""


def test_alias_bomb_refused_quickly_with_a_short_message(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BILLION_LAUGHS)
    assert p.stat().st_size < 1024
    r, _ = _limited_python(_LOAD.format(path=str(p), overrides=[]))
    assert r.returncode == 3, r.stderr[-2000:]
    seconds, msg = r.stdout.split("\n", 1)
    assert float(seconds) < 3.0
    assert len(msg) < 400 and "alias" in msg and str(p) in msg and "lol" not in msg
    # the same through --set
    r, _ = _limited_python(_LOAD.format(path=str(MVTEC_CFG), overrides=["dataset.options.category=" + _LAUGHS]))
    assert r.returncode == 3 and "alias" in r.stdout and len(r.stdout) < 600, r.stderr[-2000:]


def test_recursive_and_deep_yaml_refused(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text("a: &a [*a]\ncategories: {}\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_config(p)
    p.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(p)


def test_config_input_size_bounded(tmp_path):
    r, _ = _limited_python(_LOAD.format(path="/dev/zero", overrides=[]), mem_gib=2, timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    seconds, msg = r.stdout.split("\n", 1)
    assert float(seconds) < 3.0 and "larger than 1 MB" in msg and msg.count("\n") == 1
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_config(big)
    code = "import sys; from saa.cli import main; sys.exit(main(['run', '/dev/zero', '--out', %r]))" % str(
        tmp_path / "never")
    r, _ = _limited_python(code, mem_gib=6, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "larger than 1 MB" in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# 4. one orientation rule for images and masks


def _stored_with_block(h, w):
    a = np.full((h, w, 3), 20, np.uint8)
    a[:16, :16] = 235  # a bright defect in the top-left corner of the stored pixels
    m = np.zeros((h, w), np.uint8)
    m[:16, :16] = 255
    return a, m


def _folder_with_exif_image(root: Path, h: int, w: int) -> Path:
    stored, mask = _stored_with_block(h, w)
    (root / "bad").mkdir(parents=True)
    exif_jpeg(root / "bad" / "x.jpg", stored, orientation=6)
    write_png(root / "masks" / "x.png", mask)
    write_png(root / "good" / "g.png", np.full((h, w, 3), 20, np.uint8))
    return root


def test_square_exif_rotated_jpeg_stays_aligned_with_its_mask(tmp_path, caplog):
    root = _folder_with_exif_image(tmp_path / "parts", 64, 64)
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


def test_non_square_exif_jpeg_passes_check_and_loads(tmp_path):
    root = _folder_with_exif_image(tmp_path / "parts", 40, 64)
    opts = dict(normal_dir="good", defect_dirs="bad", mask_dir="masks")
    lines = validate_dataset("folder", root, check_sizes=True, **opts)
    assert any(l.startswith("warning:") and "x.jpg" in l and "EXIF orientation 6" in l for l in lines)
    ds = build_dataset("folder", root, **opts)
    s = next(s for s in ds.samples(ds.categories()[0]) if s.label == 1)
    rgb = read_rgb(s.image_path)
    assert rgb.shape[:2] == (40, 64) and ds.load_mask(s, rgb.shape[:2]).shape == (40, 64)


# ---------------------------------------------------------------------------------------------
# 5. masks: any non-zero value; empty masks; prepare check decodes


def test_16bit_mask_with_values_0_1(tmp_path):
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


def _folder_with_empty_mask(root: Path) -> dict:
    write_png(root / "good" / "g.png", np.zeros((16, 16, 3), np.uint8))
    write_png(root / "bad" / "b.png", np.full((16, 16, 3), 90, np.uint8))
    write_png(root / "masks" / "b.png", np.zeros((16, 16), np.uint8))
    return dict(normal_dir="good", defect_dirs="bad", mask_dir="masks")


def test_empty_mask_of_a_defective_image_is_a_warning(tmp_path, caplog):
    root = tmp_path / "p"
    opts = _folder_with_empty_mask(root)
    ds = build_dataset("folder", root, **opts)
    s = next(s for s in ds.samples(ds.categories()[0]) if s.label == 1)
    with caplog.at_level(logging.WARNING, logger="saa.datasets"):
        assert not ds.load_mask(s, (16, 16)).any()
    assert any("empty mask" in r.getMessage() and "b.png" in r.getMessage() for r in caplog.records)
    lines = validate_dataset("folder", root, check_sizes=True, **opts)
    assert any(l.startswith("warning:") and "empty mask" in l and "b.png" in l for l in lines)
    r = run_cli("prepare", "check", "folder", root, "--decode", *[f"--option={k}={v}" for k, v in opts.items()])
    assert r.returncode == 0 and "warning: anomalous image" in r.stdout, r.stderr


def test_prepare_check_decodes_and_finds_corrupt_files(tmp_path):
    root = tmp_path / "p"
    opts = _folder_with_empty_mask(root)
    truncated_png(root / "good" / "cut.png", (16, 16, 3))
    validate_dataset("folder", root, check_sizes=True, **opts)  # cut.png has no mask: not decoded
    with pytest.raises(DatasetError) as e:
        validate_dataset("folder", root, decode=True, **opts)
    assert "cut.png" in str(e.value) and "truncated" in str(e.value)
    r = run_cli("prepare", "check", "folder", root, "--decode", *[f"--option={k}={v}" for k, v in opts.items()])
    assert r.returncode == 1 and "cut.png" in r.stderr and "Traceback" not in r.stderr
    # --check-sizes decodes the masks it compares: a corrupt mask whose header is intact is found
    (root / "good" / "cut.png").unlink()
    truncated_png(root / "masks" / "b.png", (16, 16), keep=0.5)
    with pytest.raises(DatasetError, match="unreadable mask.*b.png"):
        validate_dataset("folder", root, check_sizes=True, **opts)
    # a bomb is refused from its header, before anything is decoded
    bomb_png(root / "masks" / "b.png", 30000, 30000)
    with pytest.raises(DatasetError, match="over the limit of 100 Mpx"):
        validate_dataset("folder", root, check_sizes=True, **opts)


# ---------------------------------------------------------------------------------------------
# 6. OS errors as one line


def _execute(func, debug=False):
    import argparse

    from saa.cli import execute

    return execute(func, argparse.Namespace(debug=debug, quiet=True))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saa: error: ") and "Traceback" not in err, err
    return err


def test_os_errors_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("I am a file")
    # --out is an existing file
    assert _execute(lambda a: atomic_write_text(a_file / "bottle" / "x.json", "{}")) == 1
    err = _one_error_line(capsys)
    assert str(a_file) in err and "is a file, not a folder" in err and "--out" in err
    # a folder where a result file should be
    (tmp_path / "x.json").mkdir()
    assert _execute(lambda a: atomic_write_text(tmp_path / "x.json", "{}")) == 1
    err = _one_error_line(capsys)
    assert f"{tmp_path / 'x.json'}: is a folder where a file is to be written" in err
    # file name too long
    long = tmp_path / ("n" * 300 + ".npz")
    assert _execute(lambda a: atomic_write_bytes(long, b"x")) == 1
    assert "file name too long" in _one_error_line(capsys)
    # disk full (a real ENOSPC from /dev/full, which names no file)
    def fill(a):
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 100000)

    assert _execute(fill) == 1
    err = _one_error_line(capsys)
    assert "no space left on the device" in err and "run the same command again" in err
    # not writable / read-only file system (simulated: the tests run as root)
    for code, text in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):
        def deny(a, code=code):
            raise OSError(code, os.strerror(code), str(tmp_path / "ro" / "maps"))

        assert _execute(deny) == 1
        err = _one_error_line(capsys)
        assert f"{tmp_path / 'ro' / 'maps'}: {text};" in err
    with pytest.raises(OSError):
        _execute(fill, debug=True)


def test_disk_full_during_an_atomic_write_names_the_file(tmp_path, capsys, monkeypatch):
    target = tmp_path / "maps" / "a.npz"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io.os, "replace", full)
    assert _execute(lambda a: atomic_write_bytes(target, b"data")) == 1
    err = _one_error_line(capsys)
    assert f"{target}: no space left on the device" in err
    assert not target.exists() and not list(target.parent.iterdir())  # no temporary file left


def test_cli_out_is_an_existing_file(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("x")
    r = run_cli("demo", "--method", "lite", "--out", f)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"saa: error: {f}: is a file, not a folder;")


@pytest.mark.parametrize("content", [b'{"categories": {"bottle": ', b"[1, 2]", b"\xff\xfe garbage",
                                     b'{"categories": {"bottle": 3}}', b'{"eval_size": "big"}'])
def test_report_on_a_corrupt_metrics_json(tmp_path, content):
    (tmp_path / "metrics.json").write_bytes(content)
    r = run_cli("report", tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"saa: error: {tmp_path / 'metrics.json'}: ") and "saa run" in r.stderr


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


# ---------------------------------------------------------------------------------------------
# 7. output files follow the umask


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
