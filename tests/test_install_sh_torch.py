"""install.sh and the user's PyTorch: an importable torch is never replaced; a torch that does not
import is reported (the import error) before anything is installed, with what is installed and
from where (--cpu: PyTorch's CPU wheel index); the summary names the torch build and its size.

No network and no change to the Python environment: install.sh runs with PYTHON set to a wrapper
around this interpreter whose `-m pip` only logs its arguments (and, when asked to install torch,
puts a working stand-in in place, as pip would), and torch / torchvision are small stand-in
packages (with pip metadata and torch/version.py like the real ones) found first on PYTHONPATH.
Everything else -- the import probe, the decision, the pins, the summary -- is install.sh's own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

INSTALL = REPO / "install.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="install.sh needs bash")

IMPORT_ERROR = "libtorch_cpu.so: cannot open shared object file: No such file or directory"


def write_torch(root: Path, version: str = "2.14.1+cpu", cuda: str | None = None, broken: bool = False) -> None:
    """A stand-in torch + torchvision under ``root``: importable (or raising the import error a
    broken install gives), with dist-info metadata and a torch/version.py as pip installs them."""
    vision = "0.29.1" + (version[version.index("+"):] if "+" in version else "")
    files = {
        "torch/__init__.py": (f"raise ImportError({IMPORT_ERROR!r})\n" if broken
                              else f"__version__ = {version!r}\nfrom . import version\n"),
        "torch/version.py": f"__version__ = {version!r}\ndebug = False\ncuda = {cuda!r}\nhip = None\n",
        "torchvision/__init__.py": f"__version__ = {vision!r}\n",
        f"torch-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n",
        f"torch-{version}.dist-info/RECORD": "torch/__init__.py,,\ntorch/version.py,,\n",
        f"torchvision-{vision}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: torchvision\nVersion: {vision}\n",
        f"torchvision-{vision}.dist-info/RECORD": "torchvision/__init__.py,,\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


FAKE_PYTHON = """#!/usr/bin/env bash
# this interpreter, except that `-m pip` logs its arguments (and the pins of every -c file) and,
# when told to install torch, puts a working torch in place as pip would
if [[ "${1:-}" == -m && "${2:-}" == pip ]]; then
  shift 2
  {
    echo "pip $*"
    prev=""
    for a in "$@"; do
      [[ "$prev" == -c ]] && echo "  pins in $(basename "$a"): $(grep -E '^torch(vision)?==' "$a" | tr '\\n' ' ')"
      prev="$a"
    done
  } >> "$FAKE_PIP_LOG"
  case " $* " in *" torch=="*) [[ -n "${FAKE_PIP_FAIL_TORCH:-}" ]] && exit 1; rm -rf "$FAKE_STUBS"/torch*; cp -r "$FAKE_PIP_TORCH"/. "$FAKE_STUBS"/ ;; esac
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def run_install(tmp_path: Path, *args: str, **env_extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    good = tmp_path / "pip_would_install"
    write_torch(good)
    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAA_")}
    env.update(PYTHON=str(fake), REAL_PYTHON=sys.executable, FAKE_PIP_LOG=str(log), FAKE_STUBS=str(tmp_path / "stubs"),
               FAKE_PIP_TORCH=str(good), PYTHONPATH=f"{tmp_path / 'stubs'}{os.pathsep}{REPO}", HOME=str(home),
               XDG_CONFIG_HOME=str(home / ".config"))
    env.update(env_extra)
    r = subprocess.run(["bash", str(INSTALL), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    return r, (log.read_text().splitlines() if log.exists() else [])


def test_importable_cpu_torch_is_kept_ci_command_line(tmp_path):
    """The README's order: the CPU build first, then install.sh -- here with CI's command line."""
    write_torch(tmp_path / "stubs", "2.14.1+cpu")
    r, pip = run_install(tmp_path, "--no-weights", "--constraints", str(REPO / ".ci" / "constraints.txt"))
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert ("==> torch 2.14.1+cpu (CPU build) and torchvision 0.29.1+cpu import: keeping them "
            "(install.sh never replaces an importable torch)") in out
    assert "installing torch" not in out
    # one pip call: the package, with the torch in place pinned next to CI's constraints
    assert len([line for line in pip if line.startswith("pip ")]) == 1, pip
    assert re.fullmatch(r"pip install -c \S+ -c \S+/\.ci/constraints\.txt -e \.\[test\]", pip[0]), pip
    assert pip[1].strip().startswith("pins in tmp") and "torch==2.14.1+cpu torchvision==0.29.1+cpu" in pip[1]
    assert "(torch pinned: torch==2.14.1+cpu torchvision==0.29.1+cpu)" in out
    assert re.search(r"torch: torch 2\.14\.1\+cpu \(CPU build\), torchvision 0\.29\.1\+cpu; \d+ [MG]B on disk "
                     r"\(torch \+ torchvision\); imports; kept: it was installed before and imports", out), out


def test_importable_cuda_torch_is_kept_even_with_cpu_flag(tmp_path):
    write_torch(tmp_path / "stubs", "2.14.1+cu130", cuda="13.0")
    r, pip = run_install(tmp_path, "--no-weights", "--cpu")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "torch 2.14.1+cu130 (CUDA 13.0 build) and torchvision 0.29.1+cu130 import: keeping them" in out
    assert ("--cpu: not applied, this torch imports. To switch to the CPU build: "
            f"{tmp_path / 'bin' / 'python'} -m pip uninstall -y torch torchvision, then bash install.sh --cpu") in out
    assert [line for line in pip if line.startswith("pip ")] == ["pip install -c " + pip[0].split()[3] + " -e .[test]"]
    assert "torch==2.14.1+cu130 torchvision==0.29.1+cu130" in pip[1]
    assert "(CUDA 13.0 build)" in out.split("torch: ", 1)[1]


def test_torch_that_does_not_import_is_reported_then_cpu_build_installed(tmp_path):
    """The user's case: a CPU pair that failed to import. The error is printed, then what is installed
    and from where; with --cpu it is the CPU build from the CPU wheel index (a user-side option)."""
    write_torch(tmp_path / "stubs", "2.14.1+cpu", broken=True)
    index = "http://127.0.0.1:9/mirror/whl/cpu"
    r, pip = run_install(tmp_path, "--no-weights", "--cpu", SAA_TORCH_CPU_INDEX=index)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    said = out.index(f"==> torch is installed but does NOT import: ImportError: {IMPORT_ERROR}")
    assert out.index(f"==> installing torch==2.14.1 torchvision==0.29.1: the CPU build (--cpu), from {index}") > said
    calls = [line for line in pip if line.startswith("pip ")]
    # the broken pair is installed again (pip would call it "already satisfied"), without touching
    # other packages; then the package, with the new torch pinned
    assert calls[0] == f"pip install --force-reinstall --no-deps --index-url {index} torch==2.14.1 torchvision==0.29.1"
    assert calls[1] == f"pip install --index-url {index} torch==2.14.1 torchvision==0.29.1"
    assert re.fullmatch(r"pip install -c \S+ -e \.\[test\]", calls[2]) and len(calls) == 3
    assert "torch==2.14.1+cpu torchvision==0.29.1+cpu" in pip[-1]
    assert re.search(r"torch: torch 2\.14\.1\+cpu \(CPU build\), .*; imports; installed by install\.sh \(--cpu\)", out)


def test_without_cpu_flag_says_what_it_installs_and_fails_loudly_if_still_broken(tmp_path):
    """Without --cpu the PyPI pair is named as such; when the installed torch still does not import,
    install.sh stops with the import error instead of going on."""
    write_torch(tmp_path / "stubs", "2.14.1", broken=True)
    write_torch(tmp_path / "stubs_broken", "2.14.1", broken=True)
    r, pip = run_install(tmp_path, "--no-weights", FAKE_PIP_TORCH=str(tmp_path / "stubs_broken"))
    # pip "installs" the broken pair again
    assert "==> installing torch==2.14.1 torchvision==0.29.1 from PyPI (on Linux x86_64 the CUDA build: 6-7 GB" in r.stdout
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"install.sh: error: torch was installed but still does not import: ImportError: {IMPORT_ERROR}")
    assert not any("-e .[test]" in line for line in pip)  # the package install is not attempted


def test_cpu_build_that_pip_cannot_get_names_the_index_and_the_way_out(tmp_path):
    """A torch that does not import, --cpu, and pip cannot install from the CPU index (e.g. it cannot
    be reached): one line that names the index, the mirror variable and installing torch oneself."""
    write_torch(tmp_path / "stubs", "2.14.1+cpu", broken=True)
    index = "http://127.0.0.1:9/mirror/whl/cpu"
    r, pip = run_install(tmp_path, "--no-weights", "--cpu", SAA_TORCH_CPU_INDEX=index, FAKE_PIP_FAIL_TORCH="1")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("install.sh: error: pip could not install torch again (see its message above)")
    assert f"The CPU build comes from {index}" in last and "SAA_TORCH_CPU_INDEX" in last
    assert "install torch yourself" in last
    assert [line for line in pip if line.startswith("pip ")] == [  # and nothing after it
        f"pip install --force-reinstall --no-deps --index-url {index} torch==2.14.1 torchvision==0.29.1"]
