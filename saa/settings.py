"""Per-user settings and the folders where model files are looked up.

The **settings file** is a small JSON object kept per user. ``install.sh`` records in it the
folder it downloaded the model files into, so that saa finds them from any working directory::

    {"weights_dir": "/home/me/saa/weights"}

Its location: ``$SAA_SETTINGS`` (a file path) when set, else
``${XDG_CONFIG_HOME:-~/.config}/saa/settings.json``. A missing file means "nothing recorded"; an
unreadable or malformed one is ignored with a warning (``saa doctor`` says what is wrong with it).

**Where a model file is looked up** (the ``models.*`` paths of a config; see
:meth:`saa.config.SaaConfig.resolve_path`):

1. An absolute path (``~`` expanded) is used as it is.
2. When the config sets ``models.weights_dir``, a relative path is joined to that folder and to no
   other. A relative ``weights_dir`` written in a config *file* is relative to that file's folder;
   one given with ``--set`` (or in a config built in code) is relative to the current directory.
3. Otherwise, when ``$SAA_WEIGHTS_DIR`` is set, it is joined to that folder and to no other.
4. Otherwise the file is taken from the first of these folders that holds it: the folder recorded
   in the settings file (when recorded), the ``weights/`` folder of the repository the package
   runs from (a source checkout). When neither holds it, it is reported missing under the first.

Run as ``python -m saa.settings --record-weights-dir DIR`` (what ``install.sh`` does) to record a
folder; only the standard library is used, so this works before the package's dependencies are
installed.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["SETTINGS_ENV", "WEIGHTS_DIR_ENV", "REPO_WEIGHTS_DIR", "settings_path", "read_settings",
           "settings_problem", "record_weights_dir", "weights_dirs", "find_model_file", "model_path_exists"]

log = logging.getLogger("saa.settings")

#: environment variable naming the settings file (overrides the XDG location)
SETTINGS_ENV = "SAA_SETTINGS"
#: environment variable naming a weights folder (looked in before the recorded one)
WEIGHTS_DIR_ENV = "SAA_WEIGHTS_DIR"
#: the ``weights/`` folder next to the package (a source checkout; install.sh's default)
REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

_warned: set[str] = set()


def settings_path() -> Path:
    """The settings file (it need not exist)."""
    explicit = os.environ.get(SETTINGS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base).expanduser() / "saa" / "settings.json"


def _load(path: Path) -> tuple[dict[str, Any], Optional[str]]:
    """(settings, problem): ``problem`` is None when the file is absent or fine."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        return {}, f"cannot read it ({e.strerror or e})"
    try:
        data = json.loads(text)
    except ValueError as e:
        return {}, f"not valid JSON ({e})"
    if not isinstance(data, dict):
        return {}, f"expected a JSON object, got {type(data).__name__}"
    wd = data.get("weights_dir")
    if wd is not None and (not isinstance(wd, str) or not wd.strip()):
        return {}, f"weights_dir must be a non-empty string, got {wd!r}"
    return data, None


def read_settings() -> dict[str, Any]:
    """The settings ({} when none are recorded or the file is unusable; warned once per file)."""
    path = settings_path()
    data, problem = _load(path)
    if problem and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("settings file %s ignored: %s; fix or delete it (`bash install.sh --no-package` writes "
                    "a new one)", path, problem)
    return data


def settings_problem() -> Optional[str]:
    """What is wrong with the settings file (None: absent or fine)."""
    return _load(settings_path())[1]


def record_weights_dir(folder: Union[str, os.PathLike]) -> Path:
    """Record ``folder`` (made absolute) as the weights folder; other settings are kept. Returns
    the settings file. The file is replaced atomically."""
    path = settings_path()
    data, problem = _load(path)
    if problem:
        data = {}  # an unusable file is replaced
    data["weights_dir"] = str(Path(folder).expanduser().resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def weights_dirs() -> list[tuple[str, Path]]:
    """The folders a relative model path is looked up in when the config sets no
    ``models.weights_dir``, in order, each with where it comes from: ``$SAA_WEIGHTS_DIR`` alone
    when it is set, else the recorded folder (if any) and the repository's ``weights/``."""
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        return [(f"${WEIGHTS_DIR_ENV}", p if p.is_absolute() else Path.cwd() / p)]
    out: list[tuple[str, Path]] = []
    recorded = read_settings().get("weights_dir")
    if recorded:
        p = Path(recorded).expanduser()
        if p.is_absolute():
            out.append((f"settings file {settings_path()}", p))
    out.append(("repository weights/ folder", REPO_WEIGHTS_DIR))
    return out


def model_path_exists(path: Union[str, os.PathLike]) -> bool:
    """A model file, or a model folder with something in it (an empty folder, as a failed download
    can leave, does not count)."""
    p = Path(path)
    if p.is_dir():
        try:
            return any(p.iterdir())
        except OSError:
            return False
    return p.exists()


def find_model_file(relative: Union[str, os.PathLike]) -> Path:
    """``relative`` under the first of :func:`weights_dirs` that holds it, else under the first."""
    folders = [p for _, p in weights_dirs()]
    for folder in folders:
        candidate = folder / relative
        if model_path_exists(candidate):
            return candidate
    return folders[0] / relative


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m saa.settings", description="Show or change saa's per-user settings.")
    p.add_argument("--record-weights-dir", metavar="DIR", help="record DIR as the folder of the model files")
    args = p.parse_args(argv)
    if args.record_weights_dir:
        try:
            path = record_weights_dir(args.record_weights_dir)
        except OSError as e:
            print(f"saa.settings: error: cannot write {settings_path()}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"recorded weights folder {Path(args.record_weights_dir).expanduser().resolve()} in {path}")
        return 0
    path = settings_path()
    data, problem = _load(path)
    print(f"settings file: {path}" + (" (not written yet)" if not path.exists() else ""))
    if problem:
        print(f"  unusable: {problem}")
    for k, v in data.items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
