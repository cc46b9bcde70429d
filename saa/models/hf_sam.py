"""SAM, SAM-HQ and SAM 2 through transformers: the ``transformers`` refiner backend
(``models.sam.backend: transformers``, ``models.sam.variant: sam | sam_hq | sam2``).

``variant: sam`` loads the SAME official file as the ``segment_anything`` backend
(``sam_vit_h_4b8939.pth``, or any size: the architecture is read off the tensor shapes with
:func:`saa.models.sam.infer_architecture`), converted in memory by :func:`convert_sam_state_dict`,
or a transformers ``save_pretrained`` folder. ``sam_hq`` and ``sam2`` load a ``save_pretrained``
folder (the layout their transformers weights are published in; ``bash install.sh --sam-hq`` /
``--sam2``). Always ``local_files_only``.

The refiner has the interface of :class:`saa.models.sam.BoxRefiner` (``set_image``,
``low_res_logits``, ``upscale_logits``, ``upscale``, ``chunk_size``, ``masks``, ``mask_stats``,
``reset_image``). Pre- and
post-processing are done here, as the segment-anything predictor does them (longest side to
1024, bilinear PIL resize, normalise, zero-pad; masks: 256 -> 1024, crop, -> original size,
logits > 0), so the ``sam`` variant sees the same pixels and boxes as the reference backend. SAM 2
resizes the image to 1024 x 1024 without keeping the aspect ratio (its processor's rule) and its
low-resolution masks go straight to the original size. SAM-HQ returns SAM's mask plus the HQ
token's mask (``hq_token_only=False``, SAM-HQ's default for box prompts).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .checkpoints import load_state_dict, require_file
from .sam import MaskUpscaling

__all__ = ["VARIANTS", "hf_sam_config", "convert_sam_state_dict", "load_hf_sam", "HFBoxRefiner"]

VARIANTS = ("sam", "sam_hq", "sam2")
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


# ================================================================ conversion (official SAM -> transformers)
def hf_sam_config(arch):
    """``SamConfig`` of a :class:`saa.models.sam.SamArchitecture`."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=arch.embed_dim, output_channels=arch.prompt_embed_dim, num_hidden_layers=arch.depth,
        num_attention_heads=arch.num_heads, image_size=arch.image_size, patch_size=arch.patch_size,
        mlp_ratio=arch.mlp_ratio, window_size=arch.window_size, global_attn_indexes=list(arch.global_attn_indexes),
        num_pos_feats=arch.prompt_embed_dim // 2, mlp_dim=int(arch.embed_dim * arch.mlp_ratio))
    prompt = SamPromptEncoderConfig(hidden_size=arch.prompt_embed_dim, image_size=arch.image_size,
                                    patch_size=arch.patch_size, mask_input_channels=arch.mask_in_chans)
    decoder = SamMaskDecoderConfig(
        hidden_size=arch.prompt_embed_dim, mlp_dim=arch.decoder_mlp_dim, num_hidden_layers=arch.decoder_depth,
        num_attention_heads=arch.decoder_num_heads, num_multimask_outputs=arch.num_multimask_outputs,
        iou_head_depth=arch.iou_head_depth, iou_head_hidden_dim=arch.iou_head_hidden_dim)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


_SAM_SIMPLE = [
    (r"^image_encoder\.", "vision_encoder."),
    (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
    (r"^vision_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^vision_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^vision_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^vision_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^vision_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^(vision_encoder\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^(mask_decoder\.transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
]
_MLP = re.compile(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(.*)$")


def convert_sam_state_dict(sd: dict[str, torch.Tensor], iou_head_depth: int = 3,
                           hyper_depth: int = 3) -> dict[str, torch.Tensor]:
    """A segment-anything state dict in transformers' ``SamModel`` names. The MLPs' first and last
    layers become ``proj_in`` / ``proj_out`` and the ones between ``layers.0..``; the prompt
    encoder's random Fourier matrix is stored under both names transformers ties."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k == "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
            out["shared_image_embedding.positional_embedding"] = v
            out["prompt_encoder.shared_embedding.positional_embedding"] = v
            continue
        m = _MLP.match(k)
        if m:
            depth = iou_head_depth if "iou_prediction_head" in m.group(1) else hyper_depth
            i = int(m.group(2))
            name = "proj_in" if i == 0 else "proj_out" if i == depth - 1 else f"layers.{i - 1}"
            out[f"{m.group(1)}.{name}.{m.group(3)}"] = v
            continue
        for pat, rep in _SAM_SIMPLE:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


# ================================================================ loading
def _from_folder(folder: Path, variant: str, device):
    from transformers import Sam2Model, SamHQModel, SamModel

    from .hf_grounding import _quiet_transformers

    require_file(folder / "config.json", f"transformers {variant} folder file config.json")
    cls = {"sam": SamModel, "sam_hq": SamHQModel, "sam2": Sam2Model}[variant]
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{folder / 'config.json'} is not valid JSON ({e})") from None
    expected = {"sam": "sam", "sam_hq": "sam_hq", "sam2": "sam2"}[variant]
    if cfg.get("model_type") != expected:
        raise CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model, but models.sam.variant is "
                              f"{variant!r} (expects model_type {expected!r})")
    try:
        with _quiet_transformers():
            model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"transformers {variant} folder {folder} cannot be loaded: {str(e).splitlines()[0]}") from None
    return model.eval().to(device)


def load_hf_sam(checkpoint: str | Path, variant: str = "sam", device: torch.device | str = "cpu"):
    """A transformers SAM / SAM-HQ / SAM 2 model from an official SAM file (variant ``sam``) or a
    ``save_pretrained`` folder (any variant)."""
    if variant not in VARIANTS:
        raise CheckpointError(f"models.sam.variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    p = Path(checkpoint).expanduser()
    if p.is_dir():
        return _from_folder(p, variant, device)
    if variant != "sam":
        raise CheckpointError(
            f"models.sam.checkpoint {p}: variant {variant!r} loads a transformers save_pretrained folder "
            f"(config.json + model.safetensors; `bash install.sh --{variant.replace('_', '-')}`), not a file")
    from transformers import SamModel

    from .hf_grounding import _quiet_transformers
    from .sam import infer_architecture

    sd = load_state_dict(p, "SAM checkpoint")
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    try:
        arch = infer_architecture(sd)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{p} is not a SAM checkpoint (no {e} tensor of the expected shape); "
                              f"models.sam.checkpoint must name a segment-anything file such as sam_vit_h_4b8939.pth") from None
    converted = convert_sam_state_dict(sd, arch.iou_head_depth, 3)
    with _quiet_transformers():
        model = SamModel(hf_sam_config(arch))
    own = model.state_dict()
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    shape = [k for k in converted if k in own and own[k].shape != converted[k].shape]
    if missing or unexpected or shape:
        what = (f"{len(shape)} of the wrong shape (e.g. {shape[0]})" if shape else
                f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(unexpected)} unknown (e.g. {unexpected[0]})")
        raise CheckpointError(f"{p}: SAM weights do not convert to transformers' SamModel: {what}")
    model.load_state_dict(converted, strict=True)
    return model.eval().to(device)


# ================================================================ refiner
def _take(emb, k: int):
    """Image ``k`` of a batch of embeddings: a tensor, or a list / tuple of them (SAM-HQ's
    intermediate embeddings, SAM 2's feature levels), each cut to ``k:k+1`` along dimension 0."""
    if isinstance(emb, torch.Tensor):
        return emb[k:k + 1]
    return type(emb)(_take(e, k) for e in emb)


class HFBoxRefiner(MaskUpscaling):
    """transformers SAM / SAM-HQ / SAM 2 predictor: one image embedding per image, a batch of
    boxes per call (the interface of :class:`saa.models.sam.BoxRefiner`)."""

    backend = "transformers"

    def __init__(self, checkpoint: str | Path, device: torch.device | str = "cpu", variant: str = "sam"):
        self.device = torch.device(device)
        self.variant = variant
        self.model = load_hf_sam(checkpoint, variant, self.device)
        pc = self.model.config.prompt_encoder_config
        self.image_size = int(pc.image_size if isinstance(pc.image_size, int) else pc.image_size[0])
        self._size: tuple[int, int] | None = None
        self._input_size: tuple[int, int] | None = None
        self._emb = None

    # ------------------------------------------------------------ image
    def _resized(self, h: int, w: int) -> tuple[int, int]:
        if self.variant == "sam2":
            return self.image_size, self.image_size
        s = self.image_size / max(h, w)  # segment-anything's ResizeLongestSide rule
        return int(h * s + 0.5), int(w * s + 0.5)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, S, S) normalised, padded model input."""
        from PIL import Image
        import torchvision.transforms.functional as TF

        h, w = image.shape[:2]
        nh, nw = self._resized(h, w)
        if self.variant == "sam2":
            t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
            x = TF.resize(t, [nh, nw], antialias=True).float() / 255.0
            mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
            return ((x - mean) / std)[None]
        resized = np.array(TF.resize(Image.fromarray(image), [nh, nw]))
        x = torch.as_tensor(resized).permute(2, 0, 1).float()
        x = (x - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
        return F.pad(x, (0, self.image_size - nw, 0, self.image_size - nh))[None]

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """``image`` is handed to the model as RGB (the official preset passes the BGR array here)."""
        x = self.preprocess(image).to(self.device)
        emb = self.model.get_image_embeddings(x)
        self._emb = emb
        self._size = tuple(image.shape[:2])
        self._input_size = self._resized(*self._size)

    @torch.no_grad()
    def set_images(self, images) -> None:
        """:meth:`set_image` for several images at once (each preprocessed as on its own, the
        encoder run on all of them as one batch); :meth:`use_image` selects one."""
        x = torch.cat([self.preprocess(image) for image in images]).to(self.device)
        emb = self.model.get_image_embeddings(x)
        self._slots = [(_take(emb, k), tuple(image.shape[:2])) for k, image in enumerate(images)]
        self.use_image(0)

    def use_image(self, j: int) -> None:
        """Select image ``j`` of the last :meth:`set_images`."""
        if not getattr(self, "_slots", None):
            raise RuntimeError("HFBoxRefiner.use_image called before set_images")
        self._emb, self._size = self._slots[j]
        self._input_size = self._resized(*self._size)

    def reset_image(self) -> None:
        self._emb = None
        self._size = self._input_size = None
        self._slots = None

    # ------------------------------------------------------------ boxes
    def transform_boxes(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        h, w = self._size
        nh, nw = self._input_size
        scale = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
        return boxes_xyxy.float() * scale

    @torch.no_grad()
    def low_res_logits(self, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """Decoder output (N, 1, 256, 256) for pixel boxes (x0, y0, x1, y1), all boxes in one batch."""
        if self._emb is None:
            raise RuntimeError("HFBoxRefiner used before set_image")
        boxes = self.transform_boxes(boxes_xyxy).to(self.device)[None]
        if self.variant == "sam_hq":
            emb, inter = self._emb
            out = self.model(image_embeddings=emb, intermediate_embeddings=inter, input_boxes=boxes,
                             multimask_output=False)
        else:
            out = self.model(image_embeddings=self._emb, input_boxes=boxes, multimask_output=False)
        return out.pred_masks[0][:, :1].float()

    @torch.no_grad()
    def upscale_logits(self, low: torch.Tensor) -> torch.Tensor:
        """Low-resolution logits (n, 1, h, w) -> full-size logits (n, 1, H, W) (masks: > 0)."""
        if self.variant == "sam2":
            return F.interpolate(low, self._size, mode="bilinear", align_corners=False)
        s = self.image_size
        m = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)
        m = m[..., :self._input_size[0], :self._input_size[1]]
        return F.interpolate(m, self._size, mode="bilinear", align_corners=False)

