"""The architecture holds: the layer contracts and the no-cycle contract of pyproject.toml
(import-linter, function-level imports included), and the module table of docs/architecture.md matches
the package."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "3 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def test_module_table_matches_the_package():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(saa/[\w/]+\.py)`", section))
    modules = {str(p.relative_to(REPO)) for p in (REPO / "saa").rglob("*.py") if p.name != "__init__.py"}
    assert modules - named == set(), f"modules the docs/architecture.md table leaves out: {sorted(modules - named)}"
    assert named - modules == set(), f"docs/architecture.md names modules that do not exist: {sorted(named - modules)}"
