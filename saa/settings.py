"""Per-user settings and the folders where model files are looked up.

The **settings file** is a small JSON object kept per user. ``install.sh`` records in it the
folder it downloaded the model files into, for the clone (source checkout) it was run from, so
that saa finds them from any working directory::

    {"weights_dir": "/home/me/saa/weights",
     "recorded_by": "/home/me/saa",
     "clones": {"/home/me/saa": "/home/me/saa/weights", "/home/me/saa2": "/data/weights"}}

``clones`` maps each clone that ran ``install.sh`` to its weights folder; ``weights_dir`` is the
folder of the latest ``install.sh`` run (of clone ``recorded_by``), the user-wide record used by a
copy of saa that has no record of its own (a clone that never ran ``install.sh``, a non-editable
``pip install``). Other keys are kept as they are.

Its location: ``$SAA_SETTINGS`` (a file path) when set, else
``${XDG_CONFIG_HOME:-~/.config}/saa/settings.json``. A missing file means "nothing recorded". A file
that is not UTF-8 JSON, or whose values have the wrong type (it is validated as a typed record),
is ignored with a one-line warning naming the file and the problem: saa goes on as if nothing
were recorded (``saa doctor`` says what is wrong with it; ``install.sh`` keeps it aside as
``settings.json.unusable`` and writes a new one).

**Where a model file is looked up** (the ``models.*`` paths of a config; see
:meth:`saa.config.SaaConfig.resolve_path`):

1. An absolute path (``~`` expanded) is used as it is.
2. When the config sets ``models.weights_dir``, a relative path is joined to that folder and to no
   other. A relative ``weights_dir`` written in a config *file* is relative to that file's folder;
   one given with ``--set`` (or in a config built in code) is relative to the current directory.
3. Otherwise, when ``$SAA_WEIGHTS_DIR`` is set, it is joined to that folder and to no other.
4. Otherwise the file is taken from the first of these folders that holds it ("this clone" is the
   folder the running saa package sits in, :data:`REPO_ROOT`):

   a. when ``install.sh`` of this clone recorded a folder: that folder, this clone's ``weights/``,
      then the user-wide record (another clone's folder) as a last resort;
   b. else, when this clone's ``weights/`` holds something: that folder, then the user-wide record;
   c. else: the user-wide record, then this clone's ``weights/``.

   A file no folder holds is reported missing under the first folder, so a clone's messages name
   its own folder whenever it has one. Two clones never redirect each other.

Run as ``python -m saa.settings --record-weights-dir DIR [--clone REPO]`` (what ``install.sh``
does) to record a folder, ``python -m saa.settings`` to show the file.
"""
from __future__ import annotations

import codecs
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["SETTINGS_ENV", "WEIGHTS_DIR_ENV", "REPO_ROOT", "REPO_WEIGHTS_DIR", "Settings", "settings_path",
           "read_settings", "load_settings", "settings_problem", "record_weights_dir", "recorded_folders",
           "weights_dirs", "find_model_file", "model_path_exists"]

log = logging.getLogger("saa.settings")

#: environment variable naming the settings file (overrides the XDG location)
SETTINGS_ENV = "SAA_SETTINGS"
#: environment variable naming a weights folder (looked in before the recorded one)
WEIGHTS_DIR_ENV = "SAA_WEIGHTS_DIR"
#: the folder the package sits in: a clone (source checkout), the key of its record
REPO_ROOT = Path(__file__).resolve().parents[1]
#: the ``weights/`` folder next to the package (a source checkout; install.sh's default)
REPO_WEIGHTS_DIR = REPO_ROOT / "weights"
#: a settings file is a few hundred bytes; anything larger is not one (and is not read whole)
MAX_SETTINGS_BYTES = 1 << 20

_warned: set[str] = set()


def _absolute_path(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty path")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if not Path(value).expanduser().is_absolute():
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]


class Settings(BaseModel):
    """The settings file as a typed record (unknown keys are kept, not checked)."""

    model_config = ConfigDict(extra="allow", strict=True)

    #: the weights folder of the latest install.sh run (the user-wide record)
    weights_dir: Optional[AbsolutePath] = None
    #: the clone whose install.sh recorded ``weights_dir`` (absent in files of older versions)
    recorded_by: Optional[AbsolutePath] = None
    #: clone folder -> the weights folder its install.sh recorded
    clones: dict[AbsolutePath, AbsolutePath] = Field(default_factory=dict)


def settings_path() -> Path:
    """The settings file (it need not exist)."""
    explicit = os.environ.get(SETTINGS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base).expanduser() / "saa" / "settings.json"


def _decode(raw: bytes) -> tuple[Optional[str], Optional[str]]:
    """(text, problem) of the file's bytes: UTF-8 (a UTF-8 byte-order mark is allowed)."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            return None, f"it is {name} text; saa reads it as UTF-8 (save it as UTF-8)"
    if len(raw) >= 2 and (raw[0] == 0) != (raw[1] == 0):
        return None, "it is UTF-16 text without a byte-order mark; saa reads it as UTF-8 (save it as UTF-8)"
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        return None, (f"it is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}; Latin-1 or another "
                      "legacy encoding?); save it as UTF-8")


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "the file"
        msg = err["msg"].removeprefix("Value error, ")
        got = repr(err.get("input"))
        parts.append(f"{loc}: {msg}" + (f" (got {got[:60]}{'...' if len(got) > 60 else ''})"
                                        if "got " not in msg else ""))
    return "; ".join(parts)


def _load(path: Path) -> tuple[Settings, Optional[str]]:
    """(settings, problem): ``problem`` is None when the file is absent or fine; the settings are
    empty when it is not fine."""
    empty = Settings()
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        return empty, None
    except IsADirectoryError:
        return empty, "it is a folder, not a file"
    except (OSError, ValueError) as e:
        return empty, f"cannot read it ({getattr(e, 'strerror', None) or e})"
    if len(raw) > MAX_SETTINGS_BYTES:
        return empty, f"it is larger than {MAX_SETTINGS_BYTES // 1024} kB, not a settings file"
    text, problem = _decode(raw)
    if problem:
        return empty, problem
    try:
        data = json.loads(text)
    except RecursionError:
        return empty, "not valid JSON (nested too deeply)"
    except ValueError as e:
        return empty, f"not valid JSON ({e})"
    if not isinstance(data, dict):
        return empty, f"expected a JSON object ({{...}}), got {type(data).__name__}"
    try:
        return Settings.model_validate(data), None
    except ValidationError as e:
        return empty, _one_line(e)
    except RecursionError:
        return empty, "a value is nested too deeply"


def load_settings() -> Settings:
    """The settings (empty when none are recorded or the file is unusable; warned once per file)."""
    path = settings_path()
    settings, problem = _load(path)
    if problem and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("settings file %s ignored: %s; saa goes on as if no weights folder were recorded (fix or delete "
                    "it; `bash install.sh --no-package` writes a new one)", path, problem)
    return settings


def read_settings() -> dict[str, Any]:
    """The settings as a plain dict ({} when none are recorded or the file is unusable)."""
    return load_settings().model_dump(exclude_defaults=True)


def settings_problem() -> Optional[str]:
    """What is wrong with the settings file (None: absent or fine)."""
    return _load(settings_path())[1]


def _clone_key(clone: Union[str, os.PathLike, None]) -> str:
    return str(Path(clone).expanduser().resolve()) if clone is not None else str(REPO_ROOT)


def record_weights_dir(folder: Union[str, os.PathLike], clone: Union[str, os.PathLike, None] = None) -> Path:
    """Record ``folder`` (made absolute) as the weights folder of ``clone`` (default: this clone,
    :data:`REPO_ROOT`) and as the user-wide record; other clones' records and other keys are kept.
    An unusable file is moved aside to ``NAME.unusable`` first. Returns the settings file; the file
    is replaced atomically."""
    path = settings_path()
    settings, problem = _load(path)
    if problem and path.is_file():
        os.replace(path, path.with_name(path.name + ".unusable"))
    folder_s = str(Path(folder).expanduser().resolve())
    key = _clone_key(clone)
    data = settings.model_dump(exclude_defaults=True)
    data.update(weights_dir=folder_s, recorded_by=key, clones={**settings.clones, key: folder_s})
    Settings.model_validate(data)  # what is written reads back
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def recorded_folders() -> list[dict[str, Any]]:
    """Every weights folder the settings file records: ``clone`` (None for a record of an older
    install.sh that did not say), ``folder``, ``this`` (the record of this clone), ``latest`` (the
    user-wide record)."""
    s = load_settings()
    me = str(REPO_ROOT)
    out = [{"clone": c, "folder": Path(f), "this": c == me, "latest": (s.weights_dir == f and s.recorded_by == c)}
           for c, f in s.clones.items()]
    if s.weights_dir and not any(r["latest"] for r in out):
        out.append({"clone": s.recorded_by, "folder": Path(s.weights_dir), "this": s.recorded_by == me,
                    "latest": True})
    return out


def _by(clone: Optional[str]) -> str:
    if clone is None:
        return "an install.sh that did not say which clone (an older saa)"
    return "this clone's install.sh" if clone == str(REPO_ROOT) else f"install.sh of the clone {clone}"


def weights_dirs() -> list[tuple[str, Path]]:
    """The folders a relative model path is looked up in when the config sets no
    ``models.weights_dir``, in order, each with where it comes from: ``$SAA_WEIGHTS_DIR`` alone
    when it is set, else this clone's record, its ``weights/`` folder and the user-wide record in
    the order the module docstring gives."""
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        return [(f"${WEIGHTS_DIR_ENV}", p if p.is_absolute() else Path.cwd() / p)]
    s = load_settings()
    sp = settings_path()
    me = str(REPO_ROOT)
    own_record = s.clones.get(me)
    own = ("weights/ folder of this clone", REPO_WEIGHTS_DIR)
    latest = None
    if s.weights_dir:
        latest = (f"settings file {sp}, recorded by {_by(s.recorded_by)}", Path(s.weights_dir).expanduser())
    if own_record:
        order = [(f"settings file {sp}, recorded by {_by(me)}", Path(own_record).expanduser()), own, latest]
    elif model_path_exists(REPO_WEIGHTS_DIR):
        order = [own, latest]
    else:
        order = [latest, own]
    out: list[tuple[str, Path]] = []
    for item in order:
        if item is not None and all(item[1] != p for _, p in out):
            out.append(item)
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
    p.add_argument("--clone", metavar="REPO", default=None,
                   help="the clone DIR is recorded for (default: the one this saa package sits in)")
    args = p.parse_args(argv)
    path = settings_path()
    if args.record_weights_dir:
        problem = settings_problem() if path.is_file() else None
        try:
            path = record_weights_dir(args.record_weights_dir, args.clone)
        except OSError as e:
            print(f"saa.settings: error: cannot write {path}: {e.strerror or e}", file=sys.stderr)
            return 1
        aside = f" (the unusable old file, {problem}, was kept as {path.name}.unusable)" if problem else ""
        print(f"recorded for the clone {_clone_key(args.clone)} in {path}{aside}")
        return 0
    settings, problem = _load(path)
    print(f"settings file: {path}" + (" (not written yet)" if not path.exists() else ""))
    if problem:
        print(f"  unusable, ignored: {problem}")
    for k, v in settings.model_dump(exclude_defaults=True).items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
