"""Grounding DINO: text-prompted box proposals.

The detector is built from a config ``.py`` file (SLConfig format; read as data by
:func:`read_config_py`, never executed or imported), a checkpoint holding
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

import argparse
import ast
import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import (check_ints, check_text_encoder, check_tokenizer, load_state_dict, read_small_bytes,
                          require_file)
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


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def _find_config(path: Path) -> Path:
    if path.exists():
        return path
    # A bare name like "GroundingDINO_SwinT_OGC.py" also resolves to the package's own copy (found
    # without importing the package, which the transformers backend does not need; read as data
    # like any other config).
    import importlib.util

    spec = importlib.util.find_spec("groundingdino")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            builtin = Path(root) / "config" / path.name
            if builtin.is_file():
                return builtin
    return require_file(path, "Grounding DINO config")


# ================================================================ config as data
#: A Grounding DINO config is a few KB (the official ones: 1.4 KB); saa reads at most this much.
CONFIG_BYTES = 1 << 20
#: Deepest nesting of a value (the official values are flat lists).
CONFIG_DEPTH = 20
#: The numbers of a config that size the detector's modules (the official value -> the range saa
#: accepts). With :func:`config_parameters` checked against the checkpoint, they bound what a
#: crafted config can make the builder allocate.
CONFIG_INTS: dict[str, tuple[int, int]] = {
    "hidden_dim": (1, 4096), "dim_feedforward": (1, 65536), "nheads": (1, 256),
    "num_queries": (1, 100_000), "enc_layers": (1, 64), "dec_layers": (1, 64),
    "num_feature_levels": (1, 16), "enc_n_points": (1, 64), "dec_n_points": (1, 64),
    "num_patterns": (0, 10_000), "max_text_len": (1, 4096),
}
_STATEMENTS = {ast.Import: "an import", ast.ImportFrom: "an import", ast.FunctionDef: "a function definition",
               ast.AsyncFunctionDef: "a function definition", ast.ClassDef: "a class definition",
               ast.AugAssign: "an augmented assignment", ast.AnnAssign: "an annotated assignment",
               ast.For: "a loop", ast.While: "a loop", ast.If: "an if statement", ast.With: "a with statement",
               ast.Try: "a try statement", ast.Delete: "a del statement", ast.Global: "a global statement"}
_EXPRESSIONS = {ast.Call: "a function call", ast.Attribute: "an attribute access", ast.JoinedStr: "an f-string",
                ast.FormattedValue: "an f-string", ast.Name: "a name", ast.BinOp: "an operation",
                ast.BoolOp: "an operation", ast.Compare: "a comparison", ast.Lambda: "a lambda",
                ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
                ast.GeneratorExp: "a comprehension", ast.Subscript: "an index", ast.IfExp: "a conditional",
                ast.Starred: "an unpacking", ast.NamedExpr: "an assignment expression", ast.Await: "an await",
                ast.Yield: "a yield", ast.YieldFrom: "a yield", ast.Slice: "a slice"}


def _not_data(p: Path, text: str, node: ast.AST, what: str) -> CheckpointError:
    src = (ast.get_source_segment(text, node) or "").split("\n")[0].strip()
    src = "".join(c if c.isprintable() else "?" for c in src)
    src = src if len(src) <= 60 else src[:57] + "..."
    return CheckpointError(
        f"Grounding DINO config {p} line {getattr(node, 'lineno', '?')}: {what}"
        f"{f' ({src})' if src else ''} is not a plain value; saa reads config files as data and never runs "
        f"them: only NAME = value lines, with numbers, strings, True/False/None, lists, tuples or dicts")


def _check_literal(p: Path, text: str, value: ast.AST) -> None:
    """Raise unless ``value`` is a literal (iterative walk with a depth bound)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > CONFIG_DEPTH:
            raise CheckpointError(f"Grounding DINO config {p} line {node.lineno}: a value nested more than "
                                  f"{CONFIG_DEPTH} levels deep; a config's values are flat")
        if isinstance(node, ast.Constant):
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and \
                isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float):
            continue
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            stack.extend((e, depth + 1) for e in node.elts)
            continue
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _not_data(p, text, node, "a ** expansion")
            stack.extend((e, depth + 1) for e in (*node.keys, *node.values))
            continue
        raise _not_data(p, text, node, _EXPRESSIONS.get(type(node), f"a {type(node).__name__} expression"))


def read_config_py(path: str | Path) -> dict[str, Any]:
    """The ``NAME = literal`` assignments of a Grounding DINO config ``.py`` (SLConfig format) as
    a dict, read with :mod:`ast`: the file is never executed nor imported. Anything else (an
    import, a call, an attribute access, an f-string, a name, an operation, a ``_base_``
    inheritance) is refused in one line naming the file and the line; a module docstring is
    allowed. Names starting with ``__`` are left out, as SLConfig leaves them out."""
    p = Path(path)
    try:
        text = read_small_bytes(p, "Grounding DINO config", CONFIG_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"Grounding DINO config {p} is not UTF-8 text") from None
    try:
        tree = ast.parse(text, filename=str(p))
    except SyntaxError as e:
        if not e.lineno:  # e.g. a NUL byte
            raise CheckpointError(f"Grounding DINO config {p} cannot be parsed: it is not a config file "
                                  f"({e.msg})") from None
        raise CheckpointError(f"Grounding DINO config {p} line {e.lineno}: not valid Python syntax "
                              f"({e.msg})") from None
    except (ValueError, RecursionError, MemoryError):  # NUL bytes, nesting past the parser's limits
        raise CheckpointError(f"Grounding DINO config {p} cannot be parsed: it is not a config file "
                              f"(nested too deeply or not text)") from None
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if not isinstance(node, ast.Assign):
            what = _STATEMENTS.get(type(node)) or (
                _EXPRESSIONS.get(type(node.value), "an expression") if isinstance(node, ast.Expr)
                else f"a {type(node).__name__} statement")
            raise _not_data(p, text, node, what)
        for target in node.targets:
            if not isinstance(target, ast.Name):
                raise _not_data(p, text, target, "an assignment to something other than a name")
        _check_literal(p, text, node.value)
        try:
            value = ast.literal_eval(node.value)
        except (TypeError, ValueError) as e:  # e.g. a list as a dict key or set member
            raise CheckpointError(f"Grounding DINO config {p} line {node.lineno}: the value cannot be built "
                                  f"({_first_line(e)})") from None
        for target in node.targets:
            if target.id == "_base_":
                raise CheckpointError(f"Grounding DINO config {p} line {node.lineno}: `_base_` (inheriting from "
                                      f"another config file) is not supported; copy the values into this file")
            if not target.id.startswith("__"):
                out[target.id] = value
    return out


def check_config_values(values: Mapping[str, Any], path: str | Path) -> None:
    """The numbers that size the detector (:data:`CONFIG_INTS`) are integers in range."""
    check_ints(dict(values), CONFIG_INTS, f"Grounding DINO config {path}")


def config_parameters(values: Mapping[str, Any]) -> int:
    """A lower bound of the number of detector parameters a config describes: the encoder's and
    the decoder's feed-forward, deformable-attention and projection weights, the query and level
    embeddings (defaults: the official Swin-T OGC values)."""
    g = values.get
    d, f, h, levels = g("hidden_dim", 256), g("dim_feedforward", 2048), g("nheads", 8), g("num_feature_levels", 4)
    per_layer = 2 * d * f + 2 * d * d

    def deform(points):
        return 3 * d * h * levels * points

    n = g("enc_layers", 6) * (per_layer + deform(g("enc_n_points", 4)))
    n += g("dec_layers", 6) * (per_layer + deform(g("dec_n_points", 4)))
    n += levels * d + g("num_patterns", 0) * d
    if g("embed_init_tgt", True):
        n += g("num_queries", 900) * d
    return n


def check_config_fits(values: Mapping[str, Any], state: Mapping[str, Any], cfg_path, checkpoint) -> None:
    """Refuse a config that describes a detector much larger than the checkpoint's tensors, before
    anything is built from it (the builder would allocate what the config says, without bound)."""
    have = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    need = config_parameters(values)
    if need > 2 * have + (1 << 20):
        raise CheckpointError(
            f"Grounding DINO config {cfg_path} describes a detector of at least {need:,} parameters but the "
            f"checkpoint {checkpoint} holds {have:,} numbers: they do not belong together")


def config_namespace(values: Mapping[str, Any]) -> argparse.Namespace:
    """The ``args`` the package's ``build_model`` reads, from :func:`read_config_py`'s values (every
    key of the file, as SLConfig would give it)."""
    return argparse.Namespace(**dict(values))


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

        from .compat import install as install_compat

        install_compat()  # the package's BERT wrapper under transformers 5
        cfg_path = _find_config(Path(config).expanduser())
        values = read_config_py(cfg_path)  # data: the file is never executed
        check_config_values(values, cfg_path)
        text_dir = check_text_encoder(text_encoder)  # sizes in range, small files small
        state = load_state_dict(checkpoint, "Grounding DINO checkpoint")
        state = state.get("model", state)
        if not isinstance(state, dict):
            raise CheckpointError(f"{checkpoint} is not a Grounding DINO checkpoint ('model' is not a state dict)")
        state = {k[7:] if isinstance(k, str) and k.startswith("module.") else k: v for k, v in state.items()}
        check_config_fits(values, state, cfg_path, checkpoint)

        args = config_namespace(values)
        args.device = str(device)
        args.text_encoder_type = str(text_dir)
        self.device = torch.device(device)
        # the package prints diagnostics on build; keep the console clean
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                model = build_model(args)
            except AttributeError as e:
                if e.name and e.name not in ("device", "text_encoder_type") and isinstance(e.obj, argparse.Namespace):
                    raise CheckpointError(f"Grounding DINO config {cfg_path} has no value for `{e.name}` "
                                          f"(see the package's GroundingDINO_SwinT_OGC.py)") from None
                raise CheckpointError(f"building Grounding DINO from {cfg_path} failed: {_first_line(e)}") from None
            except Exception as e:
                raise CheckpointError(f"building Grounding DINO from {cfg_path} failed: {_first_line(e)}") from None
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
