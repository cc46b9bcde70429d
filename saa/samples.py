"""The bundled sample images and the method choice of ``saa demo`` and the web UI: ``auto`` (the
full method when its model files exist, else lite) or any registered method by name or alias.

The two methods ``auto`` chooses between are named by the method registry
(:data:`saa.methods.DEFAULT_METHOD`, :data:`saa.methods.FALLBACK_METHOD`); no module of the
commands or the UI names a method.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO / "assets" / "samples"
DEFAULT_CONFIG = "configs/mvtec.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# ``auto``: the registry's default method when its model files exist, else its fallback
from .methods.registry import DEFAULT_METHOD as AUTO_DEFAULT  # noqa: E402
from .methods.registry import FALLBACK_METHOD as AUTO_FALLBACK  # noqa: E402

AUTO = "auto"

__all__ = ["REPO", "SAMPLES_DIR", "DEFAULT_CONFIG", "AUTO", "AUTO_DEFAULT", "AUTO_FALLBACK", "sample_images",
           "category_of_sample", "default_config_path", "method_choices", "missing_model_files", "choose_method",
           "method_note", "lite_message", "missing_files_message", "require_model_files"]


def sample_images(folder: Path = SAMPLES_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def category_of_sample(path: Path, categories: Sequence[str]) -> Optional[str]:
    """The config category named by the file-name prefix (``bottle_...`` -> ``bottle``), if any."""
    stem = Path(path).stem.lower()
    for c in sorted(categories, key=len, reverse=True):
        if stem == c.lower() or stem.startswith(c.lower() + "_"):
            return c
    return None


def default_config_path() -> Path:
    p = Path(DEFAULT_CONFIG)
    return p if p.is_file() else REPO / DEFAULT_CONFIG


def method_choices() -> list[str]:
    """What ``saa demo --method`` and the web UI offer: ``auto``, then every registered method (the
    built-in ones and every plug-in, :func:`saa.methods.available_methods`)."""
    from .methods import available_methods

    return [AUTO] + list(available_methods())


def missing_model_files(cfg) -> list[str]:
    """Model files of the full method (:data:`AUTO_DEFAULT`) that the config names but that do not
    exist."""
    from .methods import build_method

    return list(build_method(cfg, AUTO_DEFAULT).required_files())


def choose_method(method: str, missing: Sequence[str]) -> str:
    """The registered name of the method chosen: ``auto`` -> :data:`AUTO_FALLBACK` when files of
    the full method are ``missing``, else :data:`AUTO_DEFAULT`; a name or an alias (``full``) ->
    its registered name. An unknown name is a one-line error listing every choice; the full method
    with ``missing`` files one naming them."""
    from .errors import ConfigError, SaaError
    from .methods import canonical_name, get_method

    if str(method).strip() == AUTO:
        return AUTO_FALLBACK if missing else AUTO_DEFAULT
    try:
        get_method(method)
    except ConfigError as e:
        raise ConfigError(f"--method: {e}, or {AUTO} (the full method when its model files exist, else "
                          f"{AUTO_FALLBACK})") from None
    name = canonical_name(method)
    if name == AUTO_DEFAULT and missing:
        raise SaaError(missing_files_message(missing))
    return name


def method_note(choice: str, name: str, missing: Sequence[str], method, chosen_with: str = "--method") -> Optional[str]:
    """What to say about the method chosen (None: nothing beyond its label): why ``auto`` fell back
    to :data:`AUTO_FALLBACK` (the missing files), or what a method chosen by name other than the
    full one does (``chosen_with``: where the user chose it)."""
    if name == AUTO_FALLBACK and missing:
        return lite_message(missing)
    if name != AUTO_DEFAULT:
        return (f"{name.upper()} METHOD (chosen with {chosen_with} {choice}): "
                f"{method.describe().get('summary') or method.label}")
    return None


def missing_files_message(missing: Sequence[str], what: Optional[Sequence[str]] = None,
                          folders: Optional[Sequence[tuple[str, Path]]] = None,
                          label: str = "the full method (SAA+)") -> str:
    """One message naming every missing file (``what``: a description of each), the folders looked
    in, the install command and the lite alternative."""
    n = len(missing)
    lines = [f"{label} needs {n} model file{'s' if n != 1 else ''} that {'were' if n != 1 else 'was'} not found:"]
    for i, path in enumerate(missing):
        desc = what[i] if what is not None and i < len(what) and what[i] else None
        lines.append(f"  - {path}" + (f"  ({desc})" if desc else ""))
    if folders:
        lines.append("looked in: " + "; ".join(f"{folder} ({src})" for src, folder in folders))
    lines.append("get them with `bash install.sh` (`bash install.sh --no-package` downloads only the model files; "
                 "`saa doctor` shows where saa looks), or run without them: --method lite")
    return "\n".join(lines)


def require_model_files(method) -> None:
    """Raise a :class:`~saa.errors.CheckpointError` listing ALL model files ``method`` needs but
    that do not exist (call it before any model loads)."""
    from .errors import CheckpointError

    missing = [str(p) for p in method.required_files()]
    if not missing:
        return
    cfg = getattr(method, "config", None)
    what, folders = None, None
    if cfg is not None:
        folders = cfg.weights_dirs()
        names = {str(cfg.resolve_path(f.path)): f.what for f in method.model_files()}
        what = [names.get(p) for p in missing]
    raise CheckpointError(missing_files_message(missing, what, folders, method.display_name))


def lite_message(missing: Sequence[str]) -> str:
    return ("LITE METHOD: saliency-only anomaly maps from the packaged EfficientNet-Lite0 (no Grounding DINO, "
            "no SAM, no regions), because these model files are missing: " + ", ".join(missing)
            + ". Run `bash install.sh` to download them for the full SAA+ method.")
