"""Shared fixtures and data of the whole suite.

* constants (``REPO``, ``SHARED``, the real sample folders ``BOTTLE`` / ``MTD`` / ``PCB`` /
  ``HAZELNUT``): import them, ``from tests.conftest import BOTTLE, REPO``;
* ``tiny_models``: the tiny random-weight model files, built once per session;
* tiny trees of real images in each dataset layout (``make_mvtec``, ``make_visa_public``, ...,
  ``dataset_trees``), the pictures they are made of (``put_image``, ``put_mask``, ``real_image``) and
  forged files (``write_png``, ``bomb_png``, ``truncated_png``, ``exif_jpeg``,
  ``folder_with_exif_image``): fixtures that return the builder function, so a test asks for
  ``make_mvtec`` and calls ``make_mvtec(tmp_path / "data")``;
* small run helpers (``no_weights``, ``stored_maps``, ``run_cli``) and ``toy_methods`` (two toy
  plug-ins from ``tests/support/toy_methods.py``, registered for one test);
* guards every test runs under: no per-user settings file, no network.

``tests/support/`` (on ``sys.path``, set here) holds modules that tests and the processes they start
import by name: the plug-in ``plugin_method`` (also loaded through an entry point) and
``toy_methods``, ``brute_force``. Fixtures of one folder only live in that folder's conftest.py.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

#: the repository (this file is tests/conftest.py)
REPO = Path(__file__).resolve().parents[1]
#: importable helper modules of the tests (plugin_method, toy_methods, brute_force)
SUPPORT = REPO / "tests" / "support"
#: ../shared beside the repository: real sample images and the fidelity kit
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"
BOTTLE = REALDATA / "mvtec_ad__doanthai161_Bottle-Anomaly-Detection" / "bottle"
MTD = REALDATA / "mtd__abin24_Magnetic-tile-defect-datasets"
PCB = REALDATA / "visa_pcb_samples__rezafarjad_industrial-pcb-anomaly-detection"
HAZELNUT = REALDATA / "hazelnut_toy_docs__openvinotoolkit_anomalib" / "hazelnut_toy"
VISA_CSV = REALDATA / "visa_split_csv__amazon-science_spot-diff" / "split_csv" / "1cls.csv"
MVTEC_CONFIG = REPO / "configs" / "mvtec.yaml"


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (``-n N``) the N workers share the machine's cores: each worker, and each
    process a test starts (through OMP_NUM_THREADS), computes with its share of the threads instead
    of all of them, so workers do not fight over the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = share
    import torch

    torch.set_num_threads(int(share))


_share_the_cores_between_workers()


def free_port() -> str:
    """A TCP port of 127.0.0.1 free right now (torchrun's --master_port, the UI's port): no fixed port
    that another test, another pytest-xdist worker or another program may hold."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


#: side of the images of the dataset trees (Grounding DINO still works at 800 px: each costs seconds)
TREE_SIDE = 160
#: fewer detector calls per image: the general prompts dropped
FAST = ["general_prompts=[]"]

if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))



@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-weight model files (saa.testing), built once per test session (~10 s on a CPU)."""
    from saa.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"), seed=0)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (restored after): on a shared 2-core machine many small CNN calls
    are several times faster so. Use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch, tmp_path_factory):
    """No test reads the real per-user settings file (the weights folder install.sh recorded) or a
    weights folder of the shell: model files are looked up where each test says."""
    monkeypatch.setenv("SAA_SETTINGS", str(tmp_path_factory.getbasetemp() / "no_user_settings.json"))
    monkeypatch.delenv("SAA_WEIGHTS_DIR", raising=False)


LOCALHOST = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, request):
    """The suite runs offline: any attempt to open a network connection fails loudly.

    Tests marked ``allow_localhost`` (the web UI test: a local server and browser driver) may
    connect to 127.0.0.1 / localhost / ::1, and only there.
    """
    import socket

    real_connect = socket.socket.connect
    real_create = socket.create_connection
    local_ok = request.node.get_closest_marker("allow_localhost") is not None

    def is_local(address) -> bool:
        return local_ok and isinstance(address, tuple) and str(address[0]) in LOCALHOST

    def guarded(self, address):
        if self.family == getattr(socket, "AF_UNIX", None) or is_local(address):
            return real_connect(self, address)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    def guarded_create(address, *a, **k):
        if is_local(address):
            return real_create(address, *a, **k)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "create_connection", guarded_create)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


# ---------------------------------------------------------------------------------------------
# tiny trees of real images, one per dataset layout (plain functions; the fixtures below hand
# them to tests)


def put_image(src: Path, dst: Path, side: int | None = TREE_SIDE) -> None:
    im = cv2.imread(str(src), cv2.IMREAD_COLOR)
    assert im is not None, src
    if side:
        im = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), im)


def put_mask(src: Path, dst: Path, side: int | None = TREE_SIDE, empty: bool = False, shape=None) -> None:
    if empty:
        m = np.zeros(shape, np.uint8)
    else:
        m = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
        assert m is not None, src
        m = np.where(m > 127, 255, 0).astype(np.uint8)  # JPEG masks: binarise
        if side:
            m = cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST)
    dst.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(dst), m)


def make_mvtec(root: Path) -> Path:
    """bottle: good/000, broken_large/000, contamination/000 (two files share the stem 000)."""
    for rel in ("good/000.png", "broken_large/000.png", "contamination/000.png"):
        put_image(BOTTLE / "test" / rel, root / "bottle" / "test" / rel)
        if not rel.startswith("good"):
            m = rel.replace(".png", "_mask.png")
            put_mask(BOTTLE / "ground_truth" / m, root / "bottle" / "ground_truth" / m)
    return root


def _pcb_normal(cat: str) -> np.ndarray:
    """A defect-free version of the real VisA sample: the defect inpainted (as its manifest says)."""
    img = cv2.imread(str(PCB / cat / "defective.jpg"))
    m = (cv2.imread(str(PCB / cat / "ground_truth.jpg"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    return cv2.inpaint(img, m, 7, cv2.INPAINT_TELEA)


def make_visa_public(root: Path) -> Path:
    d = root / "pcb1"
    put_image(PCB / "pcb1" / "defective.jpg", d / "test" / "bad" / "000.JPG")
    put_mask(PCB / "pcb1" / "ground_truth.jpg", d / "ground_truth" / "bad" / "000.png")
    (d / "test" / "good").mkdir(parents=True)
    cv2.imwrite(str(d / "test" / "good" / "0000.JPG"), cv2.resize(_pcb_normal("pcb1"), (TREE_SIDE, TREE_SIDE)))
    return root


#: the stems of make_visa_challenge's images, by category
CHALLENGE_STEMS = {"pcb1": "000-a.b", "pcb2": "0001"}


def make_visa_challenge(root: Path) -> Path:
    for cat, stem in CHALLENGE_STEMS.items():
        put_image(PCB / cat / "defective.jpg", root / "Test" / cat / "Images" / f"{stem}.JPG")
    return root


def make_ksdd2(root: Path) -> Path:
    # KSDD2 layout, filled with real magnetic-tile images (one defective, one normal)
    bad = MTD / "MT_Blowhole" / "Imgs" / "exp1_num_108719"
    free = sorted((MTD / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    t = root / "test"
    put_image(bad.with_suffix(".jpg"), t / "10000.png", side=None)
    put_mask(bad.with_suffix(".png"), t / "10000_GT.png", side=None)
    put_image(free, t / "10001.png", side=None)
    h, w = cv2.imread(str(free)).shape[:2]
    put_mask(None, t / "10001_GT.png", empty=True, shape=(h, w))
    return root


def make_mtd(root: Path) -> Path:
    bad = MTD / "MT_Blowhole" / "Imgs" / "exp1_num_108889"
    free = sorted((MTD / "MT_Free" / "Imgs").glob("*.jpg"))[0]
    put_image(bad.with_suffix(".jpg"), root / "MT_Blowhole" / "Imgs" / (bad.name + ".jpg"), side=None)
    put_mask(bad.with_suffix(".png"), root / "MT_Blowhole" / "Imgs" / (bad.name + ".png"), side=None)
    put_image(free, root / "MT_Free" / "Imgs" / free.name, side=None)
    return root


def make_folder(root: Path) -> Path:
    put_image(HAZELNUT / "good.jpg", root / "good" / "good.jpg")
    put_image(HAZELNUT / "crack.jpg", root / "bad" / "crack.jpg")
    put_mask(HAZELNUT / "crack_mask.jpg", root / "masks" / "crack.png")
    return root


#: dataset kind -> (tree builder, shipped config of that kind)
DATASET_TREES = {
    "mvtec": (make_mvtec, "mvtec.yaml"),
    "visa_public": (make_visa_public, "visa_public.yaml"),
    "visa_challenge": (make_visa_challenge, "visa_challenge.yaml"),
    "ksdd2": (make_ksdd2, "ksdd2.yaml"),
    "mtd": (make_mtd, "mtd.yaml"),
    "folder": (make_folder, "mvtec.yaml"),
}


def real_image(pattern: str, tmp_path: Path, size: int = 256) -> Path:
    """The first real sample image matching ``pattern`` (under ../shared/realdata), its longer side
    resized to ``size``, as a PNG in ``tmp_path``."""
    hits = sorted(REALDATA.glob(pattern))
    assert hits, f"real sample images missing: {REALDATA}/{pattern}"
    img = cv2.imread(str(hits[0]), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(img, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
    out = tmp_path / hits[0].name.replace(" ", "_")
    cv2.imwrite(str(out.with_suffix(".png")), small)
    return out.with_suffix(".png")


@pytest.fixture(scope="session")
def dataset_trees():
    """{kind: (builder, config file name)} for every dataset layout."""
    return DATASET_TREES


# one fixture per builder: a test asks for the function by its name
@pytest.fixture(scope="session", name="put_image")
def _put_image_fixture():
    return put_image


@pytest.fixture(scope="session", name="put_mask")
def _put_mask_fixture():
    return put_mask


@pytest.fixture(scope="session", name="make_mvtec")
def _make_mvtec_fixture():
    return make_mvtec


@pytest.fixture(scope="session", name="make_visa_challenge")
def _make_visa_challenge_fixture():
    return make_visa_challenge


@pytest.fixture(scope="session", name="real_image")
def _real_image_fixture():
    return real_image


# ---------------------------------------------------------------------------------------------
# forged files: images that lie about their size, cut-off PNGs, EXIF-rotated JPEGs


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


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
    from PIL import Image

    rng = np.random.default_rng(1)
    cv2.imwrite(str(path), rng.integers(0, 255, size=shape, dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert Image.open(path).size == (shape[1], shape[0])  # the header alone looks fine
    return path


def exif_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> Path:
    from PIL import Image

    ex = Image.Exif()
    ex[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=ex.tobytes())
    return path


def _stored_with_block(h, w):
    a = np.full((h, w, 3), 20, np.uint8)
    a[:16, :16] = 235  # a bright defect in the top-left corner of the stored pixels
    m = np.zeros((h, w), np.uint8)
    m[:16, :16] = 255
    return a, m


def folder_with_exif_image(root: Path, h: int, w: int) -> Path:
    """A ``folder`` dataset: bad/x.jpg stored h x w with EXIF orientation 6 and a bright block in
    the top-left corner of its stored pixels, masks/x.png marking that block, good/g.png."""
    stored, mask = _stored_with_block(h, w)
    (root / "bad").mkdir(parents=True)
    exif_jpeg(root / "bad" / "x.jpg", stored, orientation=6)
    write_png(root / "masks" / "x.png", mask)
    write_png(root / "good" / "g.png", np.full((h, w, 3), 20, np.uint8))
    return root


@pytest.fixture(scope="session", name="write_png")
def _write_png_fixture():
    return write_png


@pytest.fixture(scope="session", name="bomb_png")
def _bomb_png_fixture():
    return bomb_png


@pytest.fixture(scope="session", name="truncated_png")
def _truncated_png_fixture():
    return truncated_png


@pytest.fixture(scope="session", name="exif_jpeg")
def _exif_jpeg_fixture():
    return exif_jpeg


@pytest.fixture(scope="session", name="folder_with_exif_image")
def _folder_with_exif_image_fixture():
    return folder_with_exif_image


@pytest.fixture()
def default_pixel_limit(monkeypatch):
    """The default pixel limit of saa.image_io, whatever the shell or an earlier test set."""
    from saa import image_io

    monkeypatch.delenv(image_io.MAX_PIXELS_ENV, raising=False)
    image_io.set_max_pixels(None)
    yield
    image_io.set_max_pixels(None)


# ---------------------------------------------------------------------------------------------
# running saa


def run_cli(*args, env=None, cwd=REPO):
    """``python -m saa.cli ARGS`` in a subprocess (no pixel limit from the shell)."""
    from saa import image_io

    e = dict(os.environ)
    e.pop(image_io.MAX_PIXELS_ENV, None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "saa.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=300)


def no_weights(tmp_path: Path) -> list[str]:
    """--set items: model files looked up in an empty folder, no general prompts."""
    return [f"models.weights_dir={tmp_path / 'no_weights'}", "general_prompts=[]"]


def stored_maps(out: Path, cat: str = "bottle") -> dict[str, dict]:
    """The per-image results a run stored for ``cat``: {key: {map, fingerprint, file}}."""
    res = {}
    for p in sorted((out / cat / "maps").glob("*.npz")):
        with np.load(p) as z:
            res[str(z["key"])] = {"map": z["map"].copy(), "fingerprint": str(z["fingerprint"]), "file": p.name}
    return res


@pytest.fixture(scope="session", name="run_cli")
def _run_cli_fixture():
    return run_cli


@pytest.fixture(scope="session", name="no_weights")
def _no_weights_fixture():
    return no_weights


@pytest.fixture(scope="session", name="stored_maps")
def _stored_maps_fixture():
    return stored_maps


@pytest.fixture
def toy_methods():
    """Registers the two toy methods of tests/support/toy_methods.py (toy_brightness, toy_colour_refs)
    for one test."""
    from saa.methods import register_method, unregister_method
    from toy_methods import Brightness, ColourReferences

    register_method(Brightness)
    register_method(ColourReferences)
    try:
        yield
    finally:
        unregister_method(Brightness.name)
        unregister_method(ColourReferences.name)


@pytest.fixture
def toy():
    """The toy methods of tests/support/bank_toys.py registered while the test runs."""
    from bank_toys import NoRefs, ToyRefs

    from saa.methods import register_method, unregister_method

    register_method(ToyRefs, replace=True)
    register_method(NoRefs, replace=True)
    try:
        yield
    finally:
        unregister_method(ToyRefs.name)
        unregister_method(NoRefs.name)
