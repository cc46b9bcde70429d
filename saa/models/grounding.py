"""Grounding DINO: text-prompted box proposals.

The detector is built from a config ``.py`` file (SLConfig format), a checkpoint holding
``{"model": state_dict}`` and a LOCAL text-encoder folder (BERT saved with ``save_pretrained``).
The image half of the model (Swin backbone, input projections, position embeddings) runs once per
image (:meth:`GroundingDetector.set_image`) and the text half (tokens, masks, BERT, projection)
once per caption (:meth:`GroundingDetector.encode_text`, cached); :meth:`GroundingDetector.detect`
then runs only the encoder/decoder and the last layer's heads. With ``kernels="reference"`` this is
bit-identical to a full forward per caption; with ``kernels="fast"`` (default) the deformable
attention and the image-text fusion use :mod:`saa.models.dino_kernels` (same formulas, float32
rounding differences; about twice as fast on a CPU).
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import check_tokenizer, load_state_dict, require_dir, require_file
from .dino_kernels import fast_kernels
from .features import same_shape_groups

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


def _output_size(w: int, h: int, size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """(height, width) of Grounding DINO's resize: short side ``size``, long side at most
    ``max_size`` (the rule of ``groundingdino.datasets.transforms.resize``)."""
    lo, hi = float(min(w, h)), float(max(w, h))
    if hi / lo * size > max_size:
        size = int(round(max_size * lo / hi))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize_like_groundingdino(image):
    """PIL image -> PIL image resized as the detector's preprocessing does (bilinear, antialiased:
    torchvision's PIL resize), without importing the ``groundingdino`` package."""
    import torchvision.transforms.functional as TF

    return TF.resize(image, list(_output_size(*image.size)))


def _find_config(path: Path) -> Path:
    if path.exists():
        return path
    # A bare name like "GroundingDINO_SwinT_OGC.py" also resolves to the package's own copy.
    import groundingdino

    builtin = Path(groundingdino.__file__).parent / "config" / path.name
    if builtin.exists():
        return builtin
    return require_file(path, "Grounding DINO config")


class TokenCache:
    """Token ids of a caption, computed once per caption (``self.tokenizer``, ``self._token_cache``)."""

    def tokenize(self, caption: str) -> list[int]:
        ids = self._token_cache.get(caption)
        if ids is None:
            ids = list(self.tokenizer(caption)["input_ids"])
            self._token_cache[caption] = ids
        return ids


class GroundingDetector(TokenCache):
    """Grounding DINO loaded from local files, with the image features cached per image."""

    def __init__(self, config: str | Path, checkpoint: str | Path, text_encoder: str | Path,
                 device: torch.device | str = "cpu", kernels: str = "fast"):
        if kernels not in ("fast", "reference"):
            raise ValueError(f"kernels must be 'fast' or 'reference', not {kernels!r}")
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        from .compat import install as install_compat

        install_compat()  # the package's BERT wrapper under transformers 5
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
        check_tokenizer(text_dir, self.tokenizer)
        self._srcs = self._masks = self._poss = self._image = None
        self._token_cache: dict[str, list[int]] = {}
        self._text_cache: dict[tuple, dict] = {}
        # "fast": saa.models.dino_kernels' deformable attention and fusion; "reference": the package's
        self.kernels = kernels

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
        """Run the image backbone and the input projections once; following :meth:`detect` calls
        reuse them (the same tensors Grounding DINO's forward would compute for every caption)."""
        x = self.preprocess(rgb).to(self.device)
        self._slots = None
        self._srcs, self._masks, self._poss = self._image_features([x])
        self._image = x
        return x

    @torch.no_grad()
    def set_images(self, images: Sequence[np.ndarray]) -> None:
        """:meth:`set_image` for several images at once: the backbone runs on the images of one
        input size as one batch (images of other sizes in their own batches: nothing is padded, so
        each image's features are those of :meth:`set_image`); :meth:`use_image` then selects the
        image the following :meth:`detect` calls see (the first one is selected)."""
        xs = [self.preprocess(rgb).to(self.device) for rgb in images]
        slots: list = [None] * len(xs)
        for idx in same_shape_groups([tuple(x.shape) for x in xs]):
            srcs, masks, poss = self._image_features([xs[j] for j in idx])
            for k, j in enumerate(idx):
                slots[j] = ([s[k:k + 1] for s in srcs], [m[k:k + 1] for m in masks], [p[k:k + 1] for p in poss], xs[j])
        self._slots = slots
        self.use_image(0)

    def use_image(self, j: int) -> None:
        """Select image ``j`` of the last :meth:`set_images` for :meth:`detect`."""
        if not getattr(self, "_slots", None):
            raise RuntimeError("GroundingDetector.use_image called before set_images")
        self._srcs, self._masks, self._poss, self._image = self._slots[j]

    def _image_features(self, xs: list[torch.Tensor]):
        """(srcs, masks, poss) of Grounding DINO's forward for a batch of same-size inputs."""
        from groundingdino.util.misc import NestedTensor, nested_tensor_from_tensor_list

        m = self.model
        samples = nested_tensor_from_tensor_list(xs)
        features, poss = m.backbone(samples)
        poss = list(poss)
        srcs, masks = [], []
        for lvl, feat in enumerate(features):
            src, mask = feat.decompose()
            srcs.append(m.input_proj[lvl](src))
            masks.append(mask)
        for lvl in range(len(srcs), m.num_feature_levels):  # extra levels, as in the model's forward
            src = m.input_proj[lvl](features[-1].tensors if lvl == len(features) else srcs[-1])
            mask = torch.nn.functional.interpolate(samples.mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            poss.append(m.backbone[1](NestedTensor(src, mask)).to(src.dtype))
            srcs.append(src)
            masks.append(mask)
        return srcs, masks, poss

    def reset_image(self) -> None:
        self._srcs = self._masks = self._poss = self._image = None
        self._slots = None


    @torch.no_grad()
    def encode_text(self, caption: str) -> dict:
        """The text half of Grounding DINO's forward for one caption (tokens, masks, BERT, the
        projection to the detector's width), cached per caption: it does not depend on the image."""
        dev_type = self.device.type
        key = (caption, torch.get_autocast_dtype(dev_type) if torch.is_autocast_enabled(dev_type) else None)
        hit = self._text_cache.get(key)
        if hit is not None:
            return hit
        from groundingdino.models.GroundingDINO.bertwarper import \
            generate_masks_with_special_tokens_and_transfer_map

        m = self.model
        tok = self.tokenizer([caption], padding="longest", return_tensors="pt").to(self.device)
        self_masks, position_ids, _ = generate_masks_with_special_tokens_and_transfer_map(
            tok, m.specical_tokens, self.tokenizer)
        n = m.max_text_len
        if self_masks.shape[1] > n:
            self_masks, position_ids = self_masks[:, :n, :n], position_ids[:, :n]
            for k in ("input_ids", "attention_mask", "token_type_ids"):
                tok[k] = tok[k][:, :n]
        if m.sub_sentence_present:
            enc_in = {k: v for k, v in tok.items() if k != "attention_mask"}
            enc_in["attention_mask"] = self_masks
            enc_in["position_ids"] = position_ids
        else:
            enc_in = tok
        # the inputs are cut to max_text_len above, so (unlike the package's forward) no second cut here
        encoded = m.feat_map(m.bert(**enc_in)["last_hidden_state"])
        token_mask = tok.attention_mask.bool()
        text = {"encoded_text": encoded, "text_token_mask": token_mask, "position_ids": position_ids,
                "text_self_attention_masks": self_masks}
        if len(self._text_cache) >= 1024:
            self._text_cache.clear()
        self._text_cache[key] = text
        return text

    @torch.no_grad()
    def detect(self, caption: str) -> DetectorOutput:
        """Boxes and token probabilities of every query for one caption on the current image."""
        if self._image is None:
            raise RuntimeError("GroundingDetector.detect called before set_image")
        from groundingdino.util.misc import inverse_sigmoid

        cap = normalize_caption(caption)
        m = self.model
        text = dict(self.encode_text(cap))  # the transformer replaces "encoded_text" in its dict
        with fast_kernels(self.kernels == "fast"):
            hs, reference, _, _, _ = m.transformer(self._srcs, self._masks, None, list(self._poss), None, None, text)
        last = len(hs) - 1  # only the last decoder layer's predictions are used
        boxes = (m.bbox_embed[last](hs[last]) + inverse_sigmoid(reference[last])).sigmoid()
        logits = m.class_embed[last](hs[last], text)
        return DetectorOutput(caption=cap, input_ids=self.tokenize(cap), boxes=boxes[0].float().cpu(),
                              token_probs=logits.sigmoid()[0].float().cpu())

    def phrase(self, token_probs: torch.Tensor, input_ids: list[int], text_threshold: float) -> str:
        """Decode the caption tokens whose probability exceeds ``text_threshold`` ([CLS] included,
        like the authors' decoder)."""
        idx = torch.nonzero(token_probs > text_threshold, as_tuple=True)[0].tolist()
        return self.tokenizer.decode([input_ids[i] for i in idx if i < len(input_ids)])
