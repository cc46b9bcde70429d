"""The architecture holds: the layer contracts and the no-cycle contract of pyproject.toml
(import-linter, function-level imports included), the module table of docs/architecture.md matches
the package, and the tests mirror the package: the tests of ``saa/X/Y.py`` are ``tests/X/test_Y.py``
(or ``tests/X/test_Y_<aspect>.py``), those of ``scripts/Y.py`` are ``tests/scripts/test_Y*.py``, and
the few that test no one module are listed in LAYOUT_EXCEPTIONS with the reason; every test file the
docs and the code name exists."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_import_contracts_are_kept():
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "3 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def test_module_table_matches_the_package():
    """Every module has its line in docs/architecture.md, except inside a method's folder
    (saa/methods/<name>/), which describes its own modules in its __init__.py docstring, so that a
    new method touches only its folder and its one registration line."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(saa/[\w/]+\.py)`", section))
    modules = {str(p.relative_to(REPO)) for p in (REPO / "saa").rglob("*.py") if p.name != "__init__.py"}
    in_method_folders = {m for m in modules if re.match(r"saa/methods/[^/]+/", m)}
    left_out = modules - named - in_method_folders
    assert left_out == set(), f"modules the docs/architecture.md table leaves out: {sorted(left_out)}"
    assert named - modules == set(), f"docs/architecture.md names modules that do not exist: {sorted(named - modules)}"
    for folder in sorted({Path(m).parent for m in in_method_folders}):
        doc = ast.get_docstring(ast.parse((REPO / folder / "__init__.py").read_text(encoding="utf-8"))) or ""
        for module in sorted((REPO / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert f".{module.stem}" in doc, f"{folder}/__init__.py's docstring does not describe {module.name}"


def test_a_new_method_touches_its_folder_and_one_registration_line():
    """Each built-in method is a folder of saa/methods/ registered by one line of the registry."""
    from saa.methods.registry import BUILT_IN

    folders = {p.name for p in (REPO / "saa" / "methods").iterdir() if (p / "__init__.py").is_file()}
    assert {m.rsplit(".", 1)[1] for m in BUILT_IN.values()} == folders
    registry = (REPO / "saa" / "methods" / "registry.py").read_text(encoding="utf-8")
    for name, module in BUILT_IN.items():
        assert sum(f'"{module}"' in line for line in registry.splitlines()) == 1, module


#: (folder under tests/, file stem after "test_") -> why those tests live there without a module of
#: that name; a stem also covers test_<stem>_<aspect>.py
LAYOUT_EXCEPTIONS = {
    ("", "architecture"): "the package's layers and docs/architecture.md (pyproject.toml's import contracts)",
    ("", "conftest"): "the suite's own guards (tests/conftest.py)",
    ("", "install_sh"): "install.sh at the repository root",
    ("", "license"): "LICENSE and the licences section of the README",
    ("", "readme_commands"): "the README's command blocks, run as a user runs them (the lite path)",
    ("examples", "notebook"): "examples/quickstart.ipynb, run in a real Jupyter kernel",
    ("methods", "contract"): "one contract over every registered method (each folder of saa/methods/)",
    ("methods/saa_plus", "improved_preset"): "the improved preset end to end: settings, bank, pipeline, run, torchrun",
    ("models", "backends"): "both transformers backends (hf_grounding.py, hf_sam.py) against the reference packages",
    ("scripts", "device_gpu_bench"): "scripts/device_gpu_bench.sh (a shell script), run in its CPU dry run",
    ("", "cuda"): "the CUDA paths end to end (predict, run, lite, precisions, batches, metrics sort, torchrun); "
                  "skipped without a GPU",
}


def _covers(stem: str, names) -> bool:
    return any(stem == n or stem.startswith(n + "_") for n in names)


def test_each_test_file_lives_where_its_module_is():
    tests = REPO / "tests"
    wrong, used = [], set()
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        if rel.parts[0] == "support":
            continue
        folder, stem = "/".join(rel.parts[:-1]), path.stem[len("test_"):]
        exempt = [key for key in LAYOUT_EXCEPTIONS if key[0] == folder and _covers(stem, [key[1]])]
        used.update(exempt)
        if exempt:
            continue
        if folder == "scripts":
            home = REPO / "scripts"
        elif folder == "" or (REPO / "saa" / folder / "__init__.py").is_file():
            home = REPO / "saa" / folder
        else:
            wrong.append(f"tests/{rel}: there is no package saa/{folder}/")
            continue
        modules = [p.stem for p in home.glob("*.py") if p.name != "__init__.py"]
        if not _covers(stem, modules):
            where = home.relative_to(REPO)
            wrong.append(f"tests/{rel}: there is no module {where}/{stem.split('_')[0]}*.py that it could test")
    assert not wrong, ("the tests of saa/X/Y.py live in tests/X/test_Y.py or tests/X/test_Y_<aspect>.py; move these "
                       "files, or list them in LAYOUT_EXCEPTIONS with the reason:\n" + "\n".join(wrong))
    assert set(LAYOUT_EXCEPTIONS) <= used, f"exceptions no test file uses: {sorted(set(LAYOUT_EXCEPTIONS) - used)}"


def test_test_folders_are_packages():
    """Two test files may share a name in two folders (tests/models/test_features.py beside
    tests/methods/lite/test_features.py) only when every folder of tests/ is a package."""
    tests = REPO / "tests"
    missing = sorted(str(d.relative_to(REPO)) for d in [tests, *tests.rglob("*")]
                     if d.is_dir() and d.name not in ("support", "__pycache__") and "support" not in d.parts
                     and any(d.glob("*.py")) and not (d / "__init__.py").is_file())
    assert not missing, f"test folders without __init__.py: {missing}"


#: where a test file may be named for a reader: prose, docstrings, comments, scripts
_NAMED_IN = ["README.md", "docs/*.md", "saa/**/*.py", "scripts/*", "tests/**/*.py", ".ci/*", "pyproject.toml"]
_TEST_PATH = re.compile(r"\btests/(?:[a-z0-9_]+/)*test_[a-z0-9_]+\.py(?:::\w+)?")  # not tests/X/test_Y.py


def test_every_test_file_named_in_the_docs_and_code_exists():
    """A test file (and a test function or class, ``path::name``) named in the README, docs/, the
    code, the scripts or another test exists: moving tests (issue 20) left docs pointing at old paths."""
    stale = []
    for pattern in _NAMED_IN:
        for path in sorted(REPO.glob(pattern)):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            for ref in sorted(set(_TEST_PATH.findall(path.read_text(encoding="utf-8", errors="replace")))):
                file, _, func = ref.partition("::")
                target = REPO / file
                if not target.is_file():
                    stale.append(f"{path.relative_to(REPO)}: {ref} (no such file)")
                elif func and not re.search(rf"^(?:def|class) {func}\b", target.read_text(encoding="utf-8"), re.M):
                    stale.append(f"{path.relative_to(REPO)}: {ref} (no such test in the file)")
    assert not stale, "test files named where they are not:\n" + "\n".join(stale)
