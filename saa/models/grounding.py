"""Grounding DINO: text-prompted box proposals.

The detector is built from a config ``.py`` file (SLConfig format), a checkpoint holding
``{"model": state_dict}`` and a LOCAL text-encoder folder (BERT saved with ``save_pretrained``).
The image backbone runs once per image (:meth:`GroundingDetector.set_image`); every caption then
reuses those features, which gives the same outputs as a full forward per caption.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import load_state_dict, require_dir, require_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def normalize_caption(caption: str) -> str:
    """Lower-case, strip, and end with a period (the detector's sentence convention)."""
    c = caption.lower().strip()
    return c if c.endswith(".") else c + "."


@dataclass
class DetectorOutput:
    """Raw detector output for one caption on one image."""

    caption: str  # the caption as sent to the model
    input_ids: list[int]  # its token ids ([CLS] ... [SEP])
    boxes: torch.Tensor  # (Q, 4) normalised cx, cy, w, h (float32, CPU)
    token_probs: torch.Tensor  # (Q, 256) sigmoid token probabilities (0 beyond the caption)

    @property
    def scores(self) -> torch.Tensor:
        """Box score = max token probability of each query."""
        return self.token_probs.max(dim=1)[0]


def _find_config(path: Path) -> Path:
    if path.exists():
        return path
    # A bare name like "GroundingDINO_SwinT_OGC.py" also resolves to the package's own copy.
    import groundingdino

    builtin = Path(groundingdino.__file__).parent / "config" / path.name
    if builtin.exists():
        return builtin
    return require_file(path, "Grounding DINO config")


class GroundingDetector:
    """Grounding DINO loaded from local files, with the image features cached per image."""

    def __init__(self, config: str | Path, checkpoint: str | Path, text_encoder: str | Path,
                 device: torch.device | str = "cpu"):
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        cfg_path = _find_config(Path(config).expanduser())
        text_dir = require_dir(text_encoder, "Grounding DINO text encoder (BERT)")
        require_file(text_dir / "config.json", "text encoder file config.json")
        state = load_state_dict(checkpoint, "Grounding DINO checkpoint")
        state = state.get("model", state)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}

        try:
            args = SLConfig.fromfile(str(cfg_path))
        except Exception as e:  # SLConfig executes the file: report which one failed
            raise CheckpointError(f"Grounding DINO config {cfg_path} cannot be read: {e}") from None
        args.device = str(device)
        args.text_encoder_type = str(text_dir)
        self.device = torch.device(device)
        # the package prints diagnostics on build; keep the console clean
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                model = build_model(args)
            except Exception as e:
                raise CheckpointError(f"building Grounding DINO from {cfg_path} failed: {e}") from None
        own = model.state_dict()
        shape_errors = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        detector_keys = [k for k in own if not k.startswith("bert.")]
        missing = [k for k in detector_keys if k not in state]
        if shape_errors or len(missing) > len(detector_keys) // 2:
            detail = (f"{len(shape_errors)} tensors of the wrong shape (e.g. {shape_errors[:2]})"
                      if shape_errors else f"{len(missing)} of {len(detector_keys)} detector tensors missing")
            raise CheckpointError(
                f"{checkpoint} is not a Grounding DINO checkpoint matching config {cfg_path}: {detail}")
        if missing:
            log.warning("Grounding DINO checkpoint %s lacks %d tensors (kept at init): %s",
                        checkpoint, len(missing), missing[:5])
        model.load_state_dict(state, strict=False)
        model.eval()
        self.model = model.to(self.device)
        self.tokenizer = model.tokenizer
        self._features = None
        self._poss = None
        self._image = None
        self._token_cache: dict[str, list[int]] = {}

        import groundingdino.datasets.transforms as T

        self._transform = T.Compose([
            T.RandomResize([800], max_size=1333),  # a single size: deterministic
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    # ------------------------------------------------------------------ image
    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised tensor (3, h, w), short side 800, long side <= 1333."""
        from PIL import Image

        x, _ = self._transform(Image.fromarray(rgb), None)
        return x

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> torch.Tensor:
        """Run the image backbone once; following :meth:`detect` calls reuse its features."""
        x = self.preprocess(rgb).to(self.device)
        self.model.set_image_tensor(x[None])
        self._features, self._poss = self.model.features, list(self.model.poss)
        self.model.unset_image_tensor()
        self._image = x
        return x

    def reset_image(self) -> None:
        self._features = self._poss = self._image = None

    def tokenize(self, caption: str) -> list[int]:
        ids = self._token_cache.get(caption)
        if ids is None:
            ids = list(self.tokenizer(caption)["input_ids"])
            self._token_cache[caption] = ids
        return ids

    @torch.no_grad()
    def detect(self, caption: str) -> DetectorOutput:
        """Boxes and token probabilities of every query for one caption on the current image."""
        if self._image is None:
            raise RuntimeError("GroundingDetector.detect called before set_image")
        cap = normalize_caption(caption)
        # a fresh copy of the position list: the model appends to it on every forward
        self.model.set_image_features(self._features, list(self._poss))
        try:
            out = self.model(self._image[None], captions=[cap], unset_image_tensor=False)
        finally:
            self.model.unset_image_tensor()
        probs = out["pred_logits"].sigmoid()[0].float().cpu()
        boxes = out["pred_boxes"][0].float().cpu()
        return DetectorOutput(caption=cap, input_ids=self.tokenize(cap), boxes=boxes, token_probs=probs)

    def phrase(self, token_probs: torch.Tensor, input_ids: list[int], text_threshold: float) -> str:
        """Decode the caption tokens whose probability exceeds ``text_threshold`` ([CLS] included,
        like the authors' decoder)."""
        idx = torch.nonzero(token_probs > text_threshold, as_tuple=True)[0].tolist()
        return self.tokenizer.decode([input_ids[i] for i in idx if i < len(input_ids)])
