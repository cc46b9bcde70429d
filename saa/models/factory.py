"""Build the detector and the box refiner named by a config (``models.grounding.backend``,
``models.sam.backend`` / ``models.sam.variant``). A config switch alone moves a run between
backends; every backend loads local files only."""
from __future__ import annotations

import torch

from ..errors import CheckpointError

__all__ = ["build_detector", "build_refiner", "require_transformers_5"]


def require_transformers_5(what: str) -> None:
    """The transformers backends are written against transformers 5 (its module and weight names)."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise CheckpointError(f"{what} needs transformers>=5 (installed: {transformers.__version__}); "
                              f"pip install -U 'transformers>=5' or use the default backend")


def build_detector(config, device: torch.device | str):
    """Grounding DINO of ``config.models.grounding`` (paths resolved against ``models.weights_dir``)."""
    g = config.models.grounding
    cfg_py = config.resolve_path(g.config)
    ckpt = config.resolve_path(g.checkpoint)
    text = config.resolve_path(g.text_encoder)
    if g.backend == "transformers":
        require_transformers_5("models.grounding.backend=transformers")
        from .hf_grounding import HFGroundingDetector

        return HFGroundingDetector(cfg_py, ckpt, text, device)
    from .grounding import GroundingDetector

    return GroundingDetector(cfg_py, ckpt, text, device, kernels=g.kernels)


def build_refiner(config, device: torch.device | str):
    """SAM (or SAM-HQ / SAM 2) of ``config.models.sam``."""
    s = config.models.sam
    ckpt = config.resolve_path(s.checkpoint)
    if s.backend == "transformers":
        require_transformers_5("models.sam.backend=transformers")
        from .hf_sam import HFBoxRefiner

        return HFBoxRefiner(ckpt, device, variant=s.variant)
    from .sam import BoxRefiner

    return BoxRefiner(ckpt, device)
