"""The bundled sample images and the choice between the full and the lite method when model files
are missing (shared by ``saa demo`` and the web UI)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO / "assets" / "samples"
DEFAULT_CONFIG = "configs/mvtec.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

__all__ = ["REPO", "SAMPLES_DIR", "DEFAULT_CONFIG", "sample_images", "category_of_sample", "default_config_path",
           "missing_model_files", "choose_method", "lite_message", "missing_files_message", "require_model_files"]


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


def missing_model_files(cfg) -> list[str]:
    """Model files of the full SAA+ method that the config names but that do not exist."""
    from .methods.saa_plus import required_model_files

    return required_model_files(cfg)


def choose_method(method: str, missing: Sequence[str]) -> str:
    """``auto`` -> ``lite`` when files are missing, else ``saa``; ``full`` / ``saa`` with missing
    files is an error naming them."""
    from .errors import SaaError
    from .methods import canonical_name

    if method == "auto":
        return "lite" if missing else "saa"
    method = canonical_name(method)
    if method == "saa" and missing:
        raise SaaError(missing_files_message(missing))
    return method


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
        if method.name == "saa":
            from .methods.saa_plus import model_files

            names = {str(cfg.resolve_path(p)): desc for desc, p in model_files(cfg)}
            what = [names.get(p) for p in missing]
    label = "the full method (SAA+)" if method.name == "saa" else f"method {method.name}"
    raise CheckpointError(missing_files_message(missing, what, folders, label))


def lite_message(missing: Sequence[str]) -> str:
    return ("LITE METHOD: saliency-only anomaly maps from the packaged EfficientNet-Lite0 (no Grounding DINO, "
            "no SAM, no regions), because these model files are missing: " + ", ".join(missing)
            + ". Run `bash install.sh` to download them for the full SAA+ method.")
