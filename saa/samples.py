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
           "missing_model_files", "choose_method", "lite_message"]


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
        raise SaaError("the full method needs model files that are missing: " + ", ".join(missing)
                       + ". Get them with `bash install.sh`, or use --method lite")
    return method


def lite_message(missing: Sequence[str]) -> str:
    return ("LITE METHOD: saliency-only anomaly maps from the packaged EfficientNet-Lite0 (no Grounding DINO, "
            "no SAM, no regions), because these model files are missing: " + ", ".join(missing)
            + ". Run `bash install.sh` to download them for the full SAA+ method.")
