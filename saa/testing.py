"""Tiny random-weight model files for tests and offline demos.

``build_tiny_models(out_dir)`` writes a complete set of model files in the formats the real loaders
read (a Grounding DINO config + checkpoint with a tiny BERT text encoder folder, a small SAM state
dict, a timm CNN state dict), so that the whole SAA+ pipeline runs offline in seconds on a CPU.
No file is downloaded: every weight is random, generated deterministically from ``seed``.

A few weights are calibrated at build time so that the random models give usable outputs:

* Grounding DINO: token logits are ``LN_dec(h) . LN_txt(t)``. Both final LayerNorms get a small gain
  and one "bias channel" (query side ``-B``, text side ``+1``, gain 0), so every token logit is
  ``-B + small term``. ``B`` is chosen on a synthetic image and two captions so that about
  ``DINO_TARGET_BOXES`` queries score above 0.1. ``transformer.enc_output.bias`` is zeroed (otherwise
  the invalid border anchors, which all share that bias, are selected as full-image queries) and the
  last layers of the box-regression MLPs get small random weights (they are zero at init).
* SAM: one channel of the upscaled mask embedding is made constant and the hypernetwork output on it
  is a fixed negative offset, chosen on the synthetic image so that masks cover a few percent of the
  image; the learned tokens are scaled down so that each box prompt dominates its mask.
* Saliency CNN: BatchNorm affine parameters are randomised and the running statistics are measured
  on the synthetic image, so the features are neither degenerate nor exploding.

Command line: ``python -m saa.testing OUT_DIR [--seed N] [--force]`` prints the paths and the
``--set`` overrides that point a config at them.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["TinyModels", "build_tiny_models", "tiny_config_overrides", "load_tiny_sam", "synthetic_image",
           "dino_input", "main", "TinyHFModels", "build_tiny_hf_models", "backend_overrides", "BACKEND_COMBINATIONS",
           "write_bert_tokenizer"]

# bump when anything below changes the produced files: invalidates cached builds
BUILDER_VERSION = 2

TEXT_ENCODER_DIR = "bert"
GROUNDING_CONFIG = "groundingdino_tiny_cfg.py"
GROUNDING_CHECKPOINT = "groundingdino_tiny.pth"
SAM_CHECKPOINT = "sam_tiny.pth"
SALIENCY_BACKBONE = "resnet18"
SALIENCY_CHECKPOINT = "resnet18_tiny.pth"
MANIFEST = "manifest.json"

# ---------------------------------------------------------------- Grounding DINO configuration
# Configuration values of Grounding DINO Swin-T OGC (configuration data, in file order).
_SWINT_OGC_VALUES: list[tuple[str, object]] = [
    ("batch_size", 1), ("modelname", "groundingdino"), ("backbone", "swin_T_224_1k"),
    ("position_embedding", "sine"), ("pe_temperatureH", 20), ("pe_temperatureW", 20),
    ("return_interm_indices", [1, 2, 3]), ("backbone_freeze_keywords", None),
    ("enc_layers", 6), ("dec_layers", 6), ("pre_norm", False), ("dim_feedforward", 2048),
    ("hidden_dim", 256), ("dropout", 0.0), ("nheads", 8), ("num_queries", 900), ("query_dim", 4),
    ("num_patterns", 0), ("num_feature_levels", 4), ("enc_n_points", 4), ("dec_n_points", 4),
    ("two_stage_type", "standard"), ("two_stage_bbox_embed_share", False),
    ("two_stage_class_embed_share", False), ("transformer_activation", "relu"),
    ("dec_pred_bbox_embed_share", True), ("dn_box_noise_scale", 1.0),
    ("dn_label_noise_ratio", 0.5), ("dn_label_coef", 1.0), ("dn_bbox_coef", 1.0),
    ("embed_init_tgt", True), ("dn_labelbook_size", 2000), ("max_text_len", 256),
    ("text_encoder_type", "bert-base-uncased"), ("use_text_enhancer", True),
    ("use_fusion_layer", True), ("use_checkpoint", True), ("use_transformer_ckpt", True),
    ("use_text_cross_attention", True), ("text_dropout", 0.0), ("fusion_dropout", 0.0),
    ("fusion_droppath", 0.1), ("sub_sentence_present", True),
]
# the tiny variant: fewer / thinner transformer layers, fewer queries
# (use_checkpoint / use_transformer_ckpt only matter for training; off, the CPU forward skips the
# torch.utils.checkpoint wrapper, which costs seconds on first use and warns under no_grad)
_TINY_DINO = {"enc_layers": 1, "dec_layers": 1, "num_queries": 300, "dim_feedforward": 256,
              "use_checkpoint": False, "use_transformer_ckpt": False}

# tiny BERT (Grounding DINO projects its hidden size to 256 with feat_map)
_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}

# ---------------------------------------------------------------- SAM architecture
_SAM = {
    "image_size": 1024, "patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 2,
    "global_attn_indexes": (1,), "window_size": 14, "prompt_embed_dim": 64, "mask_in_chans": 16,
    "decoder_depth": 2, "decoder_mlp_dim": 256, "decoder_heads": 8, "iou_head_hidden_dim": 256,
}

# ---------------------------------------------------------------- calibration targets
DINO_LOGIT_GAIN = 0.25        # gain of both final LayerNorms (the "small term")
DINO_BOX_DELTA_MEAN = (0.0, 0.0, 1.0, 1.0)   # box deltas (cx, cy, w, h; logit space): mean ...
DINO_BOX_DELTA_STD = (0.2, 0.2, 0.8, 0.8)    # ... and spread on the synthetic image
DINO_TARGET_BOXES = 15       # queries above 0.1 on the synthetic image (mean over captions)
DINO_SCORE_THRESHOLD = 0.1
SAM_TOKEN_SCALE = 0.1         # learned tokens scaled down so the box prompt dominates
SAM_TARGET_COVERAGE = 0.04    # mean mask area / image area on the synthetic image
CALIB_CAPTIONS = ("defect on bottle.", "bottle,.")

# Words of the expert prompts (SPEC section 6), general prompts, category and object words.
BUILTIN_WORDS = """
defect damage flaw on of the image a with and in
carpet grid leather tile wood bottle cable capsule hazelnut metal nut metal_nut pill screw
toothbrush transistor zipper candle capsules cashew chewinggum fryum macaroni macaroni1 macaroni2
pcb pcb1 pcb2 pcb3 pcb4 pipe pipe_fryum printed circuit board printed_circuit_board ksdd2 mtd
black hole thread irregular pattern broken part contamination white crack flawed golden wire
print blue red scratch yellow color wick spot melt dark liquid bubble small holes breakage purple
break edge chip bent pointed circle paper blow fray uneven anomaly object objects area
""".split()

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PUNCT = list(".,_?!-'\"()/:;")
_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class TinyModels:
    """Absolute paths of a tiny model set (``saliency_backbone`` is a timm model name)."""
    root: str
    text_encoder: str
    grounding_config: str
    grounding_checkpoint: str
    sam_checkpoint: str
    saliency_backbone: str
    saliency_checkpoint: str
    manifest: str
    seed: int

    def files(self) -> list[str]:
        return [self.grounding_config, self.grounding_checkpoint, self.sam_checkpoint,
                self.saliency_checkpoint, self.manifest]


def tiny_config_overrides(models: TinyModels) -> list[str]:
    """``--set`` strings that point a saa config at ``models``."""
    return [
        f"models.grounding.config={models.grounding_config}",
        f"models.grounding.checkpoint={models.grounding_checkpoint}",
        f"models.grounding.text_encoder={models.text_encoder}",
        f"models.sam.checkpoint={models.sam_checkpoint}",
        f"models.saliency.backbone={models.saliency_backbone}",
        f"models.saliency.checkpoint={models.saliency_checkpoint}",
    ]


# ================================================================ helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.as_posix() != MANIFEST and not any(x.startswith(".tmp") for x in rel.parts):
            out[p.relative_to(root).as_posix()] = _sha256(p)
    return out


def _save_tensor_file(obj, path: Path) -> None:
    # torch.save names the archive after the file's stem: save under the final name (in a private
    # temporary folder) so the bytes do not depend on the temporary name
    import torch
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=path.parent) as tmp:
        part = Path(tmp) / path.name
        torch.save(obj, part)
        os.replace(part, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _configs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "configs"


def _words_from_configs(folder: Path) -> set[str]:
    """Lower-case words of every prompt, object word and category name in ``folder/*.yaml``."""
    words: set[str] = set()
    if not folder.is_dir():
        return words
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        yaml = None

    def strings(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                if key == "categories":
                    yield str(k)
                yield from strings(v, str(k))
        elif isinstance(node, (list, tuple)):
            for v in node:
                yield from strings(v, key)
        elif isinstance(node, str) and key in ("prompts", "object", "object_word", "caption",
                                                "filter", "general_prompts", "categories"):
            yield node

    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(errors="replace")
        found = None
        if yaml is not None:
            try:
                found = list(strings(yaml.safe_load(text)))
            except Exception:
                found = None
        if not found:  # unparsable or unknown schema: take every word of the file
            found = [text]
        for s in found:
            words |= set(re.findall(r"[a-z0-9]+", s.lower()))
    return words


def build_vocab(extra_words: Iterable[str] = (), configs_dir: Path | None = None) -> list[str]:
    """BERT vocabulary: specials, punctuation, single characters, whole prompt words, ``##`` pieces.

    Every caption made of ASCII letters, digits and the punctuation above tokenizes without [UNK]
    (an unknown word falls back to one character and ``##`` character pieces)."""
    words = set(BUILTIN_WORDS) | _words_from_configs(configs_dir or _configs_dir())
    for w in extra_words:
        words |= set(re.findall(r"[a-z0-9]+", str(w).lower()))
    body = sorted(set(_CHARS) | words)
    vocab: list[str] = []
    seen: set[str] = set()
    for tok in _SPECIALS + _PUNCT + body + ["##" + c for c in _CHARS]:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)
    return vocab


def synthetic_image(size: int = 320, seed: int = 0):
    """A deterministic RGB uint8 "product photo": dark background, a textured disc with a bright
    rim, a few small coloured spots (defect-like) and noise. Used to calibrate the random models
    (its Grounding DINO score statistics are close to those of real inspection images)."""
    import numpy as np
    rng = np.random.default_rng(20230517 + seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (0.10, 0.10, 0.12)
    texture = (0.5 + 0.15 * np.sin(40 * xx + 3 * np.sin(9 * yy)))[..., None]
    img = np.where((r < 0.38)[..., None], texture * np.array([0.6, 0.5, 0.35], np.float32) + 0.1, img)
    img = np.where(((r > 0.30) & (r < 0.33))[..., None], np.array([0.9, 0.9, 0.85], np.float32), img)
    for _ in range(5):
        cx, cy = rng.uniform(0.25, 0.75, 2)
        rad = rng.uniform(0.01, 0.05)
        spot = ((xx - cx) ** 2 + (yy - cy) ** 2 < rad * rad)[..., None]
        img = np.where(spot, rng.uniform(0, 1, 3).astype(np.float32), img)
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def dino_input(rgb):
    """Grounding DINO preprocessing (short side 800, long side <= 1333, ImageNet mean/std)."""
    import groundingdino.datasets.transforms as T
    from PIL import Image
    tf = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x, _ = tf(Image.fromarray(rgb), None)
    return x


@contextlib.contextmanager
def _quiet():
    """Silence the packages' prints and warnings while building."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ================================================================ builders
def _build_text_encoder(folder: Path, vocab: list[str], seed: int) -> None:
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), **_BERT)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        BertModel(cfg).eval().save_pretrained(folder)
        write_bert_tokenizer(folder)
    finally:
        hf_logging.set_verbosity(verbosity)


def write_bert_tokenizer(folder: str | os.PathLike) -> None:
    """(Re)write the tokenizer files of a BERT folder from its ``vocab.txt``, under transformers 4
    or 5. (transformers 5's ``BertTokenizerFast(vocab_file=...)`` ignores ``vocab_file`` and saves a
    5-token vocabulary; its ``BertTokenizer`` takes the file as ``vocab``.) Also repairs a folder
    written that way, e.g. the fidelity kit's ``bert/`` when its builder ran under transformers 5."""
    import inspect

    from transformers import BertTokenizerFast

    folder = Path(folder)
    vocab_file = folder / "vocab.txt"
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers 5
        tok = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    else:
        tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    n = len(vocab_file.read_text().splitlines())
    if len(tok) != n:
        raise RuntimeError(f"{vocab_file}: the tokenizer built from it has {len(tok)} tokens, the file {n}")
    tok.save_pretrained(folder)


def _write_grounding_config(path: Path, text_encoder: Path) -> None:
    over = dict(_TINY_DINO, text_encoder_type=str(text_encoder))
    lines = ["# Grounding DINO Swin-T OGC configuration values, tiny random-weight variant",
             "# (generated by saa.testing; not a trained model)."]
    lines += [f"{k} = {over.get(k, v)!r}" for k, v in _SWINT_OGC_VALUES]
    _write_text(path, "\n".join(lines) + "\n")


def _tiny_dino_model(cfg_path: Path, seed: int):
    """The tiny detector built from its config file, read as data (never executed), in eval mode."""
    import torch
    from groundingdino.models import build_model

    from .models.compat import install as install_compat
    from .models.grounding import config_namespace, read_config_py

    install_compat()  # the package's BERT wrapper under transformers 5
    args = config_namespace(read_config_py(cfg_path))
    args.device = "cpu"
    torch.manual_seed(seed)
    with _quiet():
        model = build_model(args)
    return model.eval()


def _set_logit_norms(model):
    """Both final LayerNorms: a small gain and one constant "bias channel" (text side ``+1``; the
    query side's ``-B`` is set after calibration); the encoder proposals' bias zeroed. Returns the
    query-side norm."""
    q_norm = model.transformer.decoder.norm                    # query side of the logits
    t_norm = model.transformer.encoder.text_layers[-1].norm2   # text side (memory_text)
    for ln in (q_norm, t_norm):
        ln.weight.fill_(DINO_LOGIT_GAIN)
        ln.bias.zero_()
        ln.weight[-1] = 0.0                  # last channel: constant (the "bias channel")
    t_norm.bias[-1] = 1.0                    # text: +1;  query: -B (set after calibration)
    model.transformer.enc_output.bias.zero_()
    return q_norm


def _box_heads(model) -> tuple:
    """The box-regression MLPs: the encoder proposals' first (they decide the decoder's inputs)."""
    return (model.transformer.enc_out_bbox_embed, model.bbox_embed[0])


def _calibrate_box_heads(model, forward) -> None:
    """Shift and scale each box MLP's last layer per output (cx, cy, w, h) so that its deltas on
    the synthetic image have the chosen mean and spread: boxes move a little, in several sizes."""
    import torch

    target_std = torch.tensor(DINO_BOX_DELTA_STD)
    for mlp in _box_heads(model):
        seen = []
        hook = mlp.register_forward_hook(lambda m, i, o: seen.append(o.detach().reshape(-1, 4)))
        try:
            forward(CALIB_CAPTIONS[0])
        finally:
            hook.remove()
        d = torch.cat(seen)
        d = d[torch.isfinite(d).all(dim=1)]
        scale = target_std / d.std(dim=0).clamp_min(1e-6)
        last = mlp.layers[-1]
        last.weight.mul_(scale[:, None])
        last.bias.copy_(torch.tensor(DINO_BOX_DELTA_MEAN) - d.mean(dim=0) * scale)


def _kth_best_logits(forward) -> list[float]:
    """Per calibration caption, the ``DINO_TARGET_BOXES``-th best query logit (bias channel at 0)."""
    kth = []
    for cap in CALIB_CAPTIONS:
        out = forward(cap)
        best = out["pred_logits"][0].max(dim=1).values.sort(descending=True).values
        kth.append(float(best[DINO_TARGET_BOXES - 1]))
    return kth


def _calibrate_on_image(model, calib_rgb) -> list[float]:
    """Calibrate the box heads on the synthetic image, then measure the k-th best logits there."""
    x = dino_input(calib_rgb)[None]
    try:
        with _quiet():
            model.set_image_tensor(x)

        def forward(caption):
            with _quiet():
                return model(x, captions=[caption], unset_image_tensor=False)

        _calibrate_box_heads(model, forward)
        return _kth_best_logits(forward)
    finally:
        model.unset_image_tensor()


def _build_grounding(cfg_path: Path, seed: int, calib_rgb) -> tuple[dict, dict]:
    """The tiny Grounding DINO's state dict and its calibration report: logit norms with a bias
    channel, random box heads calibrated on the synthetic image, and the bias ``B`` chosen so that
    about ``DINO_TARGET_BOXES`` queries pass the score threshold."""
    import torch

    model = _tiny_dino_model(cfg_path, seed)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        q_norm = _set_logit_norms(model)
        # last layer of the box MLPs (zero at init): random weights, calibrated below
        for mlp in _box_heads(model):
            w = mlp.layers[-1].weight
            w.copy_(torch.randn(w.shape, generator=gen))
        # with B = 0 the logits are (B-independent term); the k-th best query score per
        # caption decides B such that ~DINO_TARGET_BOXES queries pass the score threshold
        kth = _calibrate_on_image(model, calib_rgb)
        thr_logit = math.log(DINO_SCORE_THRESHOLD / (1 - DINO_SCORE_THRESHOLD))
        # rounded so that tiny floating-point differences between machines give the same file
        bias = round(round(sum(kth) / len(kth) - thr_logit, 3) - 1e-3, 4)
        q_norm.bias[-1] = -bias
    report = {"dino_logit_bias": bias, "kth_best_logit_at_zero_bias": kth,
              "target_boxes": DINO_TARGET_BOXES, "captions": list(CALIB_CAPTIONS)}
    return {"model": model.state_dict()}, report


def _make_sam(seed: int):
    from functools import partial

    import torch
    from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                           TwoWayTransformer)
    a = _SAM
    torch.manual_seed(seed)
    grid = a["image_size"] // a["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=a["image_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"],
            depth=a["depth"], num_heads=a["num_heads"], mlp_ratio=4.0, out_chans=a["prompt_embed_dim"],
            qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=a["window_size"], global_attn_indexes=tuple(a["global_attn_indexes"])),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"], image_embedding_size=(grid, grid),
            input_image_size=(a["image_size"], a["image_size"]), mask_in_chans=a["mask_in_chans"]),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=a["decoder_depth"], embedding_dim=a["prompt_embed_dim"],
                                          mlp_dim=a["decoder_mlp_dim"], num_heads=a["decoder_heads"]),
            transformer_dim=a["prompt_embed_dim"], iou_head_depth=3,
            iou_head_hidden_dim=a["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _calibration_boxes(w: int, h: int, n: int = 8, seed: int = 0):
    import torch
    gen = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    s = torch.rand(n, 2, generator=gen) * 0.25 + 0.05
    xyxy = torch.cat([c - s / 2, c + s / 2], dim=1).clamp(0, 1)
    return xyxy * torch.tensor([w, h, w, h], dtype=torch.float32)


def _build_sam(seed: int, calib_rgb) -> tuple[dict, dict]:
    import torch
    from segment_anything import SamPredictor

    sam = _make_sam(seed)
    md = sam.mask_decoder
    with torch.no_grad():
        md.mask_tokens.weight.mul_(SAM_TOKEN_SCALE)
        md.iou_token.weight.mul_(SAM_TOKEN_SCALE)
        for emb in sam.prompt_encoder.point_embeddings:
            emb.weight.mul_(SAM_TOKEN_SCALE)
        up = md.output_upscaling[3]          # last ConvTranspose2d: its last channel -> constant
        up.weight[:, -1] = 0.0
        up.bias[-1] = 1.0                    # after GELU: const = GELU(1)
        for mlp in md.output_hypernetworks_mlps:
            mlp.layers[-1].weight[-1] = 0.0
            mlp.layers[-1].bias[-1] = 0.0    # offset set below
        const = float(torch.nn.functional.gelu(torch.tensor(1.0)))

        # logits at zero offset on the synthetic image -> offset for the target coverage
        pred = SamPredictor(sam)
        pred.set_image(calib_rgb)
        h, w = calib_rgb.shape[:2]
        boxes = pred.transform.apply_boxes_torch(_calibration_boxes(w, h, seed=seed), (h, w))
        logits, _, _ = pred.predict_torch(None, None, boxes=boxes, multimask_output=False,
                                          return_logits=True)
        sample = logits.flatten().float()[::7]
        # scale the hypernetwork output to unit-size logits, then offset them so that the
        # (1 - coverage) quantile sits at 0
        gain = float(f"{1.0 / max(float(sample.std()), 1e-8):.3g}")
        q = float(torch.quantile(sample * gain, 1.0 - SAM_TARGET_COVERAGE))
        offset = round(round(q / const, 3) + 1e-3, 4)
        for mlp in md.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(gain)
            mlp.layers[-1].bias.mul_(gain)
            mlp.layers[-1].bias[-1] = -offset
        pred.reset_image()
    return sam.state_dict(), {"sam_mask_offset": offset, "sam_hyper_gain": gain, "sam_target_coverage": SAM_TARGET_COVERAGE,
                              "arch": {k: list(v) if isinstance(v, tuple) else v for k, v in _SAM.items()}}


def _build_saliency(name: str, seed: int, calib_rgb) -> tuple[dict, dict]:
    import numpy as np
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(seed + 11)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(n, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None                  # cumulative average over the calibration pass
        # running statistics measured on the synthetic image (and its flips) at 256x256
        x = torch.from_numpy(np.ascontiguousarray(calib_rgb)).permute(2, 0, 1).float() / 255.0
        x = torch.nn.functional.interpolate(x[None], size=(256, 256), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (torch.cat([x, x.flip(-1), x.flip(-2)]) - mean) / std
        model.train()
        model(x)
        model.eval()
        for bn in bns:
            bn.momentum = 0.1
            bn.num_batches_tracked.zero_()
    return model.state_dict(), {"saliency_bn_stats": "measured on the synthetic image"}


# ================================================================ public API
def load_tiny_sam(models: "TinyModels"):
    """The tiny SAM as a ``segment_anything`` ``Sam`` module (strict load; for tests)."""
    import torch
    sam = _make_sam(0)
    sam.load_state_dict(torch.load(models.sam_checkpoint, map_location="cpu", weights_only=True))
    return sam.eval()


def _paths(root: Path, seed: int) -> TinyModels:
    return TinyModels(
        root=str(root),
        text_encoder=str(root / TEXT_ENCODER_DIR),
        grounding_config=str(root / GROUNDING_CONFIG),
        grounding_checkpoint=str(root / GROUNDING_CHECKPOINT),
        sam_checkpoint=str(root / SAM_CHECKPOINT),
        saliency_backbone=SALIENCY_BACKBONE,
        saliency_checkpoint=str(root / SALIENCY_CHECKPOINT),
        manifest=str(root / MANIFEST),
        seed=seed,
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "timm", "rf-groundingdino", "segment-anything"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _build_key(seed: int, vocab: list[str]) -> dict:
    return {"builder_version": BUILDER_VERSION, "seed": seed,
            "vocab_sha256": hashlib.sha256("\n".join(vocab).encode()).hexdigest()}


def _reusable(root: Path, key: dict) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("build_key") != key:
        return False
    files = manifest.get("sha256") or {}
    if not files:
        return False
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file() or _sha256(p) != digest:
            return False
    return True


def _write_model_files(root: Path, vocab: list[str], seed: int) -> tuple[dict, dict]:
    """Build and save the text encoder, Grounding DINO, SAM and the saliency CNN, each calibrated on
    the synthetic image: (their calibration reports merged, seconds per model)."""
    import torch

    calib = synthetic_image(320, seed=0)
    timings = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        t = time.perf_counter()
        _build_text_encoder(root / TEXT_ENCODER_DIR, vocab, seed)
        _write_grounding_config(root / GROUNDING_CONFIG, root / TEXT_ENCODER_DIR)
        dino, dino_report = _build_grounding(root / GROUNDING_CONFIG, seed + 1, calib)
        _save_tensor_file(dino, root / GROUNDING_CHECKPOINT)
        del dino
        timings["grounding"] = time.perf_counter() - t

        t = time.perf_counter()
        sam, sam_report = _build_sam(seed + 2, calib)
        _save_tensor_file(sam, root / SAM_CHECKPOINT)
        timings["sam"] = time.perf_counter() - t

        t = time.perf_counter()
        sal, sal_report = _build_saliency(SALIENCY_BACKBONE, seed + 3, calib)
        _save_tensor_file(sal, root / SALIENCY_CHECKPOINT)
        timings["saliency"] = time.perf_counter() - t
    return {**dino_report, **sam_report, **sal_report}, timings


def _manifest(models: TinyModels, key: dict, vocab: list[str], calibration: dict, timings: dict) -> dict:
    """What ``manifest.json`` records: the build key, the files, the sizes, the calibration, the
    versions, the build times and every file's SHA-256 (checked before a build is reused)."""
    root = Path(models.root)
    return {
        "what": "tiny random-weight models for tests (saa.testing); not trained, not for real use",
        "seed": models.seed,
        "build_key": key,
        "files": {k: (os.path.relpath(v, root) if k not in ("saliency_backbone", "seed", "root") else v)
                  for k, v in asdict(models).items() if k not in ("root", "manifest")},
        "grounding_overrides": _TINY_DINO,
        "text_encoder": dict(_BERT, vocab_size=len(vocab)),
        "calibration": calibration,
        "versions": _versions(),
        "build_seconds": {k: round(v, 2) for k, v in timings.items()},
        "sha256": _hash_files(root),
    }


def build_tiny_models(out_dir: str | os.PathLike, seed: int = 0, *, vocab_words: Iterable[str] | None = None,
                      force: bool = False) -> TinyModels:
    """Write (or reuse) a tiny random-weight model set in ``out_dir`` and return its paths.

    Deterministic for a given ``seed`` (and vocabulary). An existing build in ``out_dir`` whose
    manifest has the same seed/vocabulary and whose files are intact is reused unless ``force``.
    ``vocab_words``: extra whole words for the BERT vocabulary (besides the built-in prompt words
    and those of the ``configs/*.yaml`` next to the package)."""
    root = Path(out_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(vocab_words or ())
    key = _build_key(seed, vocab)
    models = _paths(root, seed)
    if not force and _reusable(root, key):
        return models

    t0 = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        (root / MANIFEST).unlink()  # an interrupted rebuild must not look complete
    calibration, timings = _write_model_files(root, vocab, seed)
    manifest = _manifest(models, key, vocab, calibration, timings)
    manifest["build_seconds"]["total"] = round(time.perf_counter() - t0, 2)
    _write_text(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return models


# ================================================================ transformers backends
# (grounding backend, sam backend, sam variant): every combination the config accepts
BACKEND_COMBINATIONS = [
    ("groundingdino", "segment_anything", "sam"),
    ("groundingdino", "transformers", "sam"),
    ("groundingdino", "transformers", "sam_hq"),
    ("groundingdino", "transformers", "sam2"),
    ("transformers", "segment_anything", "sam"),
    ("transformers", "transformers", "sam"),
    ("transformers", "transformers", "sam_hq"),
    ("transformers", "transformers", "sam2"),
]

HF_DIR = "hf"
HF_BUILDER_VERSION = 1
# tiny SAM-HQ / SAM 2 (random weights, transformers' own initialisation, seeded)
_SAM_HQ = {"hidden_size": 48, "output_channels": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
           "global_attn_indexes": [1], "num_pos_feats": 32, "mlp_dim": 192}
_SAM2_HIERA = {"hidden_size": 16, "num_attention_heads": 1, "blocks_per_stage": [1, 1, 2, 1],
               "embed_dim_per_stage": [16, 32, 64, 128], "num_attention_heads_per_stage": [1, 1, 2, 2],
               "window_size_per_stage": [8, 4, 14, 7], "global_attention_blocks": [3]}
_HF_DECODER = {"hidden_size": 64, "mlp_dim": 128, "num_attention_heads": 2}


@dataclass(frozen=True)
class TinyHFModels:
    """transformers ``save_pretrained`` folders for the tiny models: the tiny Grounding DINO and
    SAM converted by saa (same weights as the package files), and random tiny SAM-HQ / SAM 2."""
    grounding: str
    sam: str
    sam_hq: str
    sam2: str


def _tiny_sam_hq(seed: int):
    import torch
    from transformers import SamHQConfig, SamHQMaskDecoderConfig, SamHQModel, SamHQPromptEncoderConfig, SamHQVisionConfig

    cfg = SamHQConfig(vision_config=SamHQVisionConfig(**_SAM_HQ),
                      prompt_encoder_config=SamHQPromptEncoderConfig(hidden_size=64),
                      mask_decoder_config=SamHQMaskDecoderConfig(**_HF_DECODER, vit_dim=_SAM_HQ["hidden_size"]))
    torch.manual_seed(seed)
    return SamHQModel(cfg).eval()


def _tiny_sam2(seed: int):
    import torch
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    dims = _SAM2_HIERA["embed_dim_per_stage"]
    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**_SAM2_HIERA), backbone_channel_list=dims[::-1],
                              fpn_hidden_size=64)
    cfg = Sam2Config(vision_config=vision, prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=64),
                     mask_decoder_config=Sam2MaskDecoderConfig(**_HF_DECODER))
    torch.manual_seed(seed)
    return Sam2Model(cfg).eval()


def build_tiny_hf_models(models: TinyModels, force: bool = False) -> TinyHFModels:
    """Write (or reuse) the transformers folders of a tiny model set under ``<root>/hf/``: the
    Grounding DINO and SAM files converted by saa's loaders (``save_pretrained`` of the converted
    models, so a folder and the package file hold the same weights) and seeded random tiny SAM-HQ
    and SAM 2. Needs transformers 5."""
    import torch
    from transformers.utils import logging as hf_logging

    from .models.hf_grounding import save_converted
    from .models.hf_sam import load_hf_sam

    root = Path(models.root) / HF_DIR
    out = TinyHFModels(grounding=str(root / "grounding_dino"), sam=str(root / "sam"), sam_hq=str(root / "sam_hq"),
                       sam2=str(root / "sam2"))
    stamp = root / "built.json"
    key = {"hf_builder_version": HF_BUILDER_VERSION, "seed": models.seed,
           "sources": {Path(p).name: _sha256(Path(p)) for p in (models.grounding_checkpoint, models.sam_checkpoint)}}
    try:
        if not force and json.loads(stamp.read_text()) == key and all(
                (Path(d) / "config.json").is_file() for d in asdict(out).values()):
            return out
    except (OSError, ValueError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            save_converted(models.grounding_config, models.grounding_checkpoint, models.text_encoder, out.grounding)
            load_hf_sam(models.sam_checkpoint, "sam").save_pretrained(out.sam)
            _tiny_sam_hq(models.seed + 21).save_pretrained(out.sam_hq)
            _tiny_sam2(models.seed + 22).save_pretrained(out.sam2)
    finally:
        hf_logging.set_verbosity(verbosity)
    _write_text(stamp, json.dumps(key) + "\n")
    return out


def backend_overrides(models: TinyModels, hf: TinyHFModels | None, grounding: str = "groundingdino",
                      sam: str = "segment_anything", variant: str = "sam", folders: bool = False) -> list[str]:
    """``--set`` strings selecting a backend combination on the tiny models. The transformers
    backends read the package files (converted in memory) unless ``folders`` (or the variant,
    SAM-HQ / SAM 2) asks for the ``save_pretrained`` folders of :func:`build_tiny_hf_models`."""
    ov = tiny_config_overrides(models) + [f"models.grounding.backend={grounding}", f"models.sam.backend={sam}",
                                          f"models.sam.variant={variant}"]
    if grounding == "transformers" and folders:
        ov.append(f"models.grounding.checkpoint={hf.grounding}")
    if sam == "transformers" and (folders or variant != "sam"):
        ov.append(f"models.sam.checkpoint={getattr(hf, variant)}")
    return ov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saa.testing",
                                 description="Build tiny random-weight model files for offline tests.")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    ap.add_argument("--words", nargs="*", default=[], help="extra words for the text encoder vocabulary")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    models = build_tiny_models(a.out_dir, a.seed, vocab_words=a.words, force=a.force)
    for k, v in asdict(models).items():
        print(f"{k:22s} {v}")
    print(f"({time.perf_counter() - t:.1f} s)")
    print("config overrides:")
    print(" ".join(f"--set {s}" for s in tiny_config_overrides(models)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
