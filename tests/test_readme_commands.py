"""Every command block of the README runs as written for the lite path (issue 24).

The ```bash blocks are read from README.md itself. Each command runs in a fresh folder that holds
what a user has beside a clone: ``configs/``, ``assets/`` and the run scripts (linked to this
repository), YOUR folders the README asks for (``my_parts/`` with good and defective parts and
masks, ``new_parts/``, a copy of the config ``my_parts.yaml``, a small MVTec tree in
``../datasets/``), made from real bottle images. ``saa`` and ``python`` run this repository's code.

"The lite path" is a user without the model files: their copy of the config says ``method:
"lite"``, and a line that runs a shipped config with the full method gets ``--method lite``. A few
lines do not run here, each for the reason in ``NOT_HERE`` (the test fails when a README line is
neither run nor listed there, so a new command cannot slip past it)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOTTLE, REPO, put_image, put_mask

README = REPO / "README.md"

#: README lines that do not run here, and why (matched on the start of the command)
NOT_HERE = {
    "git clone": "the clone itself (and cd into it): CI runs the suite on a fresh clone (.ci/run)",
    "python3 -m venv": "the virtual environment (and its activation): made by .ci/run",
    "bash install.sh": "the install: tests/test_install_sh.py and tests/test_install_sh_torch.py",
    "saa ui": "starts a server and waits: tests/test_ui.py and tests/test_ui_browser.py (Chromium)",
    "python -m pytest": "the test suite itself",
}
#: lines that run a shipped config with the full method: the lite path adds ``--method lite``
FULL_METHOD = ("python run_MVTec.py",)
#: lines that read what a later block writes: run after every other line (in README order)
AFTER_ALL = ("saa report",)


def readme_commands() -> list[str]:
    """The commands of the README's ```bash blocks: continuation lines joined, comments and blank
    lines dropped, in README order."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


def _real_bottle(dst_dir: Path, names: list[str], split: str = "test/good", mask_to: Path | None = None) -> None:
    for name in names:
        put_image(BOTTLE / split / name, dst_dir / name)
        if mask_to is not None:
            stem = Path(name).stem
            kind = Path(split).name
            put_mask(BOTTLE / "ground_truth" / kind / f"{stem}_mask.png", mask_to / f"{stem}_mask.png")


def _user_folder(root: Path) -> Path:
    """The folder a user runs the README in (the clone's files linked), with YOUR folders."""
    work = root / "work"
    work.mkdir()
    for name in ("configs", "assets", "run_MVTec.py"):
        (work / name).symlink_to(REPO / name)
    train = sorted(p.name for p in (BOTTLE / "train" / "good").glob("*.png"))
    good = sorted(p.name for p in (BOTTLE / "test" / "good").glob("*.png"))
    broken = sorted(p.name for p in (BOTTLE / "test" / "broken_large").glob("*.png"))
    contamination = sorted(p.name for p in (BOTTLE / "test" / "contamination").glob("*.png"))
    parts = work / "my_parts"
    _real_bottle(parts / "good", train[:5], "train/good")                 # the bank, and the run's good parts
    _real_bottle(parts / "more_good", train[5:10], "train/good")          # the calibration's good parts
    _real_bottle(parts / "defects" / "broken", broken[:3], "test/broken_large", parts / "masks" / "broken")
    # new parts: good and defective, at least as many as the labelled run had (a lite verdict)
    _real_bottle(work / "new_parts", good[:4], "test/good")
    for name in contamination[:4]:
        put_image(BOTTLE / "test" / "contamination" / name, work / "new_parts" / f"contamination_{name}")
    config = (REPO / "configs" / "folder_example.yaml").read_text(encoding="utf-8")
    assert 'method: "saa"' in config
    (work / "my_parts.yaml").write_text(config.replace('method: "saa"', 'method: "lite"', 1), encoding="utf-8")
    mvtec = root / "datasets" / "mvtec_anomaly_detection" / "bottle"
    _real_bottle(mvtec / "test" / "good", good[:2])
    _real_bottle(mvtec / "test" / "broken_large", broken[:2], "test/broken_large", mvtec / "ground_truth" / "broken_large")
    return work


def _shims(root: Path) -> dict:
    """``saa`` and ``python`` on PATH run this repository's code with this interpreter."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "saa").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m saa "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SAA_DECODE_WORKERS="0", NO_COLOR="1")
    return env


def _repo_status() -> str:
    """The repository's changed and new (not ignored) files, as git lists them."""
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                       text=True)
    return r.stdout if r.returncode == 0 else "(not a git checkout)"


def _plan(commands: list[str]) -> tuple[list[str], list[str]]:
    """(the commands to run in order, the lines not run here)."""
    run, later, skipped = [], [], []
    for cmd in commands:
        if any(cmd.startswith(p) for p in NOT_HERE):
            skipped.append(cmd)
        elif any(cmd.startswith(p) for p in AFTER_ALL):
            later.append(cmd)
        else:
            run.append(cmd + " --method lite" if cmd.startswith(FULL_METHOD) else cmd)
    return run + later, skipped


def test_the_readme_blocks_are_read():
    commands = readme_commands()
    run, skipped = _plan(commands)
    assert any(c.startswith("saa demo") for c in run) and any("--bank" in c for c in run)
    assert any(c.startswith("saa predict") and "--thresholds-from" in c for c in run)
    # every line not run here has its reason, and every reason is still used
    assert {p for p in NOT_HERE if any(c.startswith(p) for c in skipped)} == set(NOT_HERE)


def test_every_readme_command_runs_on_the_lite_path(tmp_path):
    work = _user_folder(tmp_path)
    env = _shims(tmp_path)
    run, _ = _plan(readme_commands())
    before = _repo_status()
    outputs = {}
    for cmd in run:
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"README command failed ({r.returncode}): {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        outputs[cmd] = r.stdout
    # nothing written into the clone (configs/ and assets/ are links to it): only the user's folder
    assert _repo_status() == before
    # what the README says they write and print
    assert (work / "saa_demo" / "report.html").is_file()
    assert (work / "banks" / "hazelnut" / "manifest.json").is_file()
    assert (work / "banks" / "metal_part" / "calibration.json").is_file()
    n_new = len(list((work / "new_parts").iterdir()))

    def verdicts(marker):
        return [line.split()[0] for c, out in outputs.items() if marker in c
                for line in out.splitlines() if line.split() and line.split()[0] in ("OK", "REVIEW", "DEFECT")]

    assert len(verdicts("--bank banks/metal_part")) == n_new        # one OK / REVIEW / DEFECT per new part
    assert len(verdicts("--thresholds-from")) == n_new
    assert (work / "results" / "parts" / "metrics.json").is_file()
    assert (work / "results" / "mvtec" / "report.html").is_file()
