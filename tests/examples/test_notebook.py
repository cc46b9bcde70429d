"""examples/quickstart.ipynb runs top to bottom (nbclient, a real Jupyter kernel of this Python),
offline, from a scratch folder: the lite method when the model files are missing, the full method
when they exist (here: the tiny random-weight models), with the panels shown inline."""
from __future__ import annotations

import base64
import sys
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from saa.samples import sample_images
from saa.testing import tiny_config_overrides

from tests.conftest import REPO

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"

# the kernel talks to this process over localhost sockets (ZMQ)
pytestmark = pytest.mark.allow_localhost


@pytest.fixture(autouse=True)
def _jupyter_dirs(tmp_path, monkeypatch):
    """Connection files and the IPython profile in the test's folder, not in the home folder."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def execute(nb, cwd: Path, extra_settings: str | None = None):
    """Run ``nb`` in a fresh python3 kernel with ``cwd`` as its folder; ``extra_settings`` is a cell
    run right after the notebook's settings cell (as a user editing it would)."""
    if extra_settings is not None:
        i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(i + 1, nbformat.v4.new_code_cell(extra_settings))
    nb.cells.append(nbformat.v4.new_code_cell("import sys, saa; print('KERNEL', sys.executable, saa.__file__)"))
    NotebookClient(nb, timeout=300, startup_timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    images = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.output_type == "display_data" and "image/png" in o.data:
                buf = np.frombuffer(base64.b64decode(o.data["image/png"]), np.uint8)
                images.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    # the kernel was this interpreter and this checkout
    assert f"KERNEL {sys.executable} {REPO / 'saa' / '__init__.py'}" in text, text[-2000:]
    return text, images


def test_notebook_is_stored_clean():
    nb = read_notebook()
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code), "store it without outputs"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code)  # every step explained
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])], "the settings cell is tagged"


def test_notebook_runs_lite_without_model_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SAA_WEIGHTS_DIR", str(tmp_path / "no_weights"))  # whatever this machine has installed
    work = tmp_path / "cwd"
    work.mkdir()
    text, images = execute(read_notebook(), work)
    assert "LITE METHOD" in text and "bash install.sh" in text
    assert str(tmp_path / "no_weights") in text  # the missing files are named
    samples = sample_images()
    assert len(samples) == 4 and len(images) == len(samples)
    for name in (p.name for p in samples):
        assert f"{name} [" in text and "image score" in text
    for img in images:  # one strip per image: image and anomaly map (lite has no saliency or region panel)
        assert img is not None and img.shape[1] >= 1.8 * img.shape[0] and img.std() > 10
    assert list(work.iterdir()) == []  # the notebook writes nothing


def test_notebook_runs_the_full_method_when_the_files_exist(tmp_path, tiny_models):
    two = [str(p) for p in sample_images() if p.name.startswith("bottle_")]
    assert len(two) == 2
    settings = f"OVERRIDES = {tiny_config_overrides(tiny_models)!r}\nIMAGES = {two!r}"
    work = tmp_path / "cwd"
    work.mkdir()
    text, images = execute(read_notebook(), work, settings)
    assert "method: saa" in text and "LITE" not in text
    assert text.count("region(s) kept of") == 2  # the detector and SAM ran
    assert len(images) == 2
    for img in images:  # image, anomaly map, saliency, regions
        assert img is not None and img.shape[1] >= 3.5 * img.shape[0]
    assert list(work.iterdir()) == []
