"""SAM: box prompts to masks.

The architecture (ViT-B/L/H or any other size) is read off the checkpoint's tensor shapes, so the
official checkpoints and small test checkpoints load through the same code. The image embedding is
computed once per image by :meth:`BoxRefiner.set_image`; all boxes of a stage then go through the
mask decoder in one batch.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import logging
from typing import Optional

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import load_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamArchitecture:
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    window_size: int
    global_attn_indexes: tuple[int, ...]
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_num_heads: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int

    def describe(self) -> str:
        known = {(768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H"}
        name = known.get((self.embed_dim, self.depth), "custom ViT")
        return f"{name} (embed {self.embed_dim}, depth {self.depth}, heads {self.num_heads})"


def infer_architecture(sd: dict[str, torch.Tensor]) -> SamArchitecture:
    """Read the SAM architecture off a state dict. Raises KeyError/ValueError if it is not SAM."""
    pe = sd["image_encoder.patch_embed.proj.weight"]  # (E, 3, p, p)
    embed_dim, patch = pe.shape[0], pe.shape[2]
    grid = sd["image_encoder.pos_embed"].shape[1]  # (1, S/p, S/p, E)
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    depth = len(blocks)
    rel = [sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in blocks]
    head_dim = rel[0].shape[1]
    global_idx = tuple(i for i, r in zip(blocks, rel) if r.shape[0] == 2 * grid - 1)
    windowed = [r.shape[0] for r in rel if r.shape[0] != 2 * grid - 1]
    window = (windowed[0] + 1) // 2 if windowed else 14
    mlp_hidden = sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
    prompt_dim = sd["image_encoder.neck.0.weight"].shape[0]
    dec_layers = {int(m.group(1)) for k in sd
                  if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))}
    iou_layers = {int(m.group(1)) for k in sd
                  if (m := re.match(r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.", k))}
    return SamArchitecture(
        image_size=grid * patch,
        patch_size=patch,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        mlp_ratio=mlp_hidden / embed_dim,
        window_size=window,
        global_attn_indexes=global_idx,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
        decoder_depth=len(dec_layers),
        decoder_mlp_dim=sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        # not visible in the shapes; 8 is SAM's value (and must divide the prompt dim)
        decoder_num_heads=8 if prompt_dim % 8 == 0 else 1,
        num_multimask_outputs=sd["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
    )


def build_sam(arch: SamArchitecture):
    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)

    emb = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.image_size,
            mlp_ratio=arch.mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads, patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes, window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.prompt_embed_dim,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_num_heads),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(checkpoint: str | Path, device: torch.device | str = "cpu"):
    """Build SAM from a checkpoint of any size (strict load)."""
    sd = load_state_dict(checkpoint, "SAM checkpoint")
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    try:
        arch = infer_architecture(sd)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(
            f"{checkpoint} is not a SAM checkpoint (no {e} tensor of the expected shape); "
            f"models.sam.checkpoint must name a segment-anything file such as sam_vit_h_4b8939.pth"
        ) from None
    sam = build_sam(arch)
    try:
        sam.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint}: SAM weights do not match the inferred "
                              f"architecture {asdict(arch)}: {str(e).splitlines()[0]}") from None
    sam.eval()
    return sam.to(device), arch


class MaskUpscaling:
    """What every box refiner shares: full-size masks made a chunk at a time from the low-resolution
    logits, and their area and mean saliency. Subclasses set ``_size`` in ``set_image`` and provide
    ``low_res_logits`` and ``upscale_logits`` (full-size float logits, (n, 1, H, W))."""

    _size: Optional[tuple[int, int]] = None
    mask_threshold = 0.0

    def chunk_size(self, budget_bytes: int = 256 << 20) -> int:
        """How many masks to upsample at once so the float32 full-size logits stay within budget."""
        h, w = self._size
        return max(1, budget_bytes // max(1, 4 * h * w))

    def upscale(self, low: torch.Tensor) -> np.ndarray:
        """Low-resolution logits -> boolean masks (n, H, W) at the original size (logits > 0).
        Each mask is computed on its own, so any chunking gives the same masks."""
        return (self.upscale_logits(low) > self.mask_threshold).squeeze(1).cpu().numpy()

    def masks(self, boxes_xyxy: torch.Tensor) -> np.ndarray:
        """Boolean masks (N, H, W) at the original resolution, one per pixel box."""
        if self._size is None:
            raise RuntimeError(f"{type(self).__name__}.masks called before set_image")
        h, w = self._size
        if len(boxes_xyxy) == 0:
            return np.zeros((0, h, w), dtype=bool)
        return self.masks_of(self.low_res_logits(boxes_xyxy))

    def masks_of(self, low: torch.Tensor) -> np.ndarray:
        """Boolean masks (n, H, W) of low-resolution logits (``upscale(low)``, a chunk at a time)."""
        if not len(low):
            return np.zeros((0, *self._size), bool)
        step = self.chunk_size()
        return np.concatenate([self.upscale(low[i:i + step]) for i in range(0, len(low), step)])

    def mask_stats(self, low: torch.Tensor, saliency: Optional[np.ndarray] = None):
        """Per mask of ``upscale(low)``: the area as a fraction of the image (float64) and, given
        a saliency map (H, W), the mean saliency over it in the map's dtype (NaN for an empty
        mask; summed in float64). The full-size masks are made a chunk at a time and not kept."""
        h, w = self._size
        count, total = np.zeros(len(low), np.int64), np.zeros(len(low))
        step = self.chunk_size()
        for i in range(0, len(low), step):
            m = self.upscale(low[i:i + step])
            count[i:i + step] = m.reshape(len(m), -1).sum(1)
            if saliency is not None:
                total[i:i + step] = [saliency[mi].sum(dtype=np.float64) for mi in m]
        fractions = count / float(h * w)
        if saliency is None:
            return fractions, None
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (total / count).astype(np.asarray(saliency).dtype)
        return fractions, means


class BoxRefiner(MaskUpscaling):
    """SAM predictor: one image embedding per image, a batch of boxes per call."""

    def __init__(self, checkpoint: str | Path, device: torch.device | str = "cpu"):
        from segment_anything import SamPredictor

        self.model, self.arch = load_sam(checkpoint, device)
        self.predictor = SamPredictor(self.model)
        self.device = torch.device(device)
        self._size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        """``image`` is handed to SAM as RGB (the official preset passes the BGR array here)."""
        self.predictor.set_image(image, image_format="RGB")
        self._size = image.shape[:2]

    @torch.no_grad()
    def set_images(self, images) -> None:
        """:meth:`set_image` for several images at once: each is resized and padded to the encoder's
        square input exactly as on its own, and the encoder runs on all of them as one batch (any
        mix of image sizes); :meth:`use_image` selects the image the decoder calls see (the first
        one is selected)."""
        pred = self.predictor
        inputs, sizes = [], []
        for image in images:
            x = torch.as_tensor(pred.transform.apply_image(image), device=self.device).permute(2, 0, 1).contiguous()[None]
            sizes.append((tuple(x.shape[-2:]), tuple(image.shape[:2])))
            inputs.append(self.model.preprocess(x))
        feats = self.model.image_encoder(torch.cat(inputs))
        self._slots = [(feats[k:k + 1], inp, orig) for k, (inp, orig) in enumerate(sizes)]
        self.use_image(0)

    def use_image(self, j: int) -> None:
        """Select image ``j`` of the last :meth:`set_images`."""
        if not getattr(self, "_slots", None):
            raise RuntimeError("BoxRefiner.use_image called before set_images")
        pred = self.predictor
        pred.features, pred.input_size, pred.original_size = self._slots[j]
        pred.is_image_set = True
        self._size = pred.original_size

    def reset_image(self) -> None:
        self.predictor.reset_image()
        self._size = None
        self._slots = None

    @torch.no_grad()
    def low_res_logits(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Decoder output (N, 1, 256, 256) for pixel boxes (x0, y0, x1, y1): all boxes in one batch,
        exactly as ``SamPredictor.predict_torch(boxes=..., multimask_output=False)`` computes it."""
        if self._size is None:
            raise RuntimeError("BoxRefiner used before set_image")
        boxes = self.predictor.transform.apply_boxes_torch(boxes_xyxy, self._size).to(self.device)
        sparse, dense = self.model.prompt_encoder(points=None, boxes=boxes, masks=None)
        low, _ = self.model.mask_decoder(
            image_embeddings=self.predictor.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low


    @torch.no_grad()
    def upscale_logits(self, low: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits (n, 1, h, w) -> full-size logits (n, 1, H, W), SAM's own
        ``postprocess_masks``."""
        return self.model.postprocess_masks(low, self.predictor.input_size, self.predictor.original_size)

