"""Grounding DINO through transformers (``GroundingDinoForObjectDetection``): the ``transformers``
detector backend (``models.grounding.backend: transformers``).

It loads either

* the SAME files as the ``groundingdino`` backend — the config ``.py`` (read as data with
  :mod:`ast`, never executed), the official checkpoint ``{"model": state_dict}`` (e.g.
  ``groundingdino_swint_ogc.pth``, converted in memory by :func:`convert_state_dict`) and the
  local BERT folder; or
* a local folder in the transformers ``save_pretrained`` layout (``config.json`` +
  ``model.safetensors``, tokenizer files in the same folder or in ``models.grounding.text_encoder``),
  e.g. one written by :func:`save_converted` or ``saa convert``-style scripts. Loaded with
  ``local_files_only=True``: no hub access.

The detector has the interface of :class:`saa.models.grounding.GroundingDetector` (``set_image``,
``detect``, ``phrase``, ``tokenize``, ``tokenizer``, ``preprocess``, ``reset_image``) plus
:meth:`HFGroundingDetector.detect_many`, which sends several captions through the encoder,
decoder and heads as one batch. The Swin backbone runs once per image: a small wrapper around the
model's backbone returns the cached features (expanded to the batch) while an image is set.
Preprocessing is saa's (the same tensor the ``groundingdino`` backend feeds), so both backends see
identical pixels.

Two things differ from the package and are handled here: transformers hard-codes the ids of
bert-base-uncased's ``[CLS] [SEP] . ?`` as the sub-sentence separators (``special_tokens``), which
are set from the actual tokenizer after loading; and its box head's inverse sigmoid clamps at 1e-5
where the package clamps at 1e-3 (only boxes within 1e-3 of the image border or of zero size can
differ, see ``tests/models/test_backends.py`` for the measured differences).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import (BERT_INTS, bert_parameters, check_ints, check_model_size, check_small_files,
                          check_text_encoder, load_state_dict, read_json_file, require_dir)
from .grounding import (CONFIG_INTS, IMAGENET_MEAN, IMAGENET_STD, DetectorOutput, TokenCache, check_config_fits,
                        check_config_values, config_parameters, normalize_caption, read_config_py)

log = logging.getLogger(__name__)

__all__ = ["read_config_py", "hf_config_from_dino", "convert_state_dict", "load_hf_grounding",
           "save_converted", "HFGroundingDetector", "check_folder_config"]

# Swin variants of the official configs: (embed_dim, depths, heads, window, pretrain image size)
SWIN_VARIANTS = {
    "swin_T_224_1k": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 224),
    "swin_B_224_22k": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 224),
    "swin_B_384_22k": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 384),
    "swin_L_224_22k": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7, 224),
    "swin_L_384_22k": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12, 384),
}

SEPARATOR_TOKENS = ["[CLS]", "[SEP]", ".", "?"]


# ================================================================ config
# read_config_py (the config .py as data, never executed) is shared with the groundingdino backend
#: The numbers of a transformers Grounding DINO ``config.json`` (its own, its ``backbone_config``'s)
#: that size the model: the ranges of :data:`saa.models.grounding.CONFIG_INTS` under transformers'
#: names, and Swin's.
HF_DINO_INTS: dict[str, tuple[int, int]] = {
    "d_model": CONFIG_INTS["hidden_dim"], "encoder_ffn_dim": CONFIG_INTS["dim_feedforward"],
    "decoder_ffn_dim": CONFIG_INTS["dim_feedforward"], "encoder_attention_heads": CONFIG_INTS["nheads"],
    "decoder_attention_heads": CONFIG_INTS["nheads"], "num_queries": CONFIG_INTS["num_queries"],
    "encoder_layers": CONFIG_INTS["enc_layers"], "decoder_layers": CONFIG_INTS["dec_layers"],
    "num_feature_levels": CONFIG_INTS["num_feature_levels"], "encoder_n_points": CONFIG_INTS["enc_n_points"],
    "decoder_n_points": CONFIG_INTS["dec_n_points"], "max_text_len": CONFIG_INTS["max_text_len"],
}
SWIN_INTS: dict[str, tuple[int, int]] = {"embed_dim": (1, 4096), "window_size": (1, 32), "patch_size": (1, 64),
                                          "image_size": (1, 8192), "num_channels": (1, 64)}
SWIN_STAGES = 8  # at most this many stages, each of at most 64 blocks and 1024 heads


def _check_swin(b: dict, where: str) -> int:
    """Ranges of a Swin ``backbone_config``; returns a lower bound of its parameters (the query,
    key, value and output projections and the MLP of every block, each stage twice as wide as the
    last; the absolute position embeddings when used)."""
    check_ints(b, SWIN_INTS, where)
    depths, heads = b.get("depths", [2, 2, 6, 2]), b.get("num_heads", [3, 6, 12, 24])
    for key, seq, hi in (("depths", depths, 64), ("num_heads", heads, 1024)):
        if not isinstance(seq, list) or not 1 <= len(seq) <= SWIN_STAGES or \
                any(type(x) is not int or not 1 <= x <= hi for x in seq):
            raise CheckpointError(f"{where}: backbone_config.{key} is not a list of 1 to {SWIN_STAGES} integers "
                                  f"from 1 to {hi}")
    ratio = b.get("mlp_ratio", 4.0)
    if type(ratio) not in (int, float) or not 0 < ratio <= 64:
        raise CheckpointError(f"{where}: backbone_config.mlp_ratio = {ratio!r:.40} is not a number above 0 and at most 64")
    dim = b.get("embed_dim", 96)
    n = sum(int(k * (4 + 2 * ratio) * (dim * 2 ** i) ** 2) for i, k in enumerate(depths))
    if b.get("use_absolute_embeddings"):
        n += (b.get("image_size", 224) // b.get("patch_size", 4)) ** 2 * dim
    return n


def check_folder_config(folder: Path) -> None:
    """A transformers Grounding DINO folder whose ``config.json`` can be built with bounded work:
    a JSON object of at most 1 MiB whose sizes (detector, Swin backbone, BERT text config) are in
    range and whose parameters fit in the folder's weight files."""
    check_small_files(folder, "transformers Grounding DINO folder file")
    path = folder / "config.json"
    cfg = read_json_file(path, "transformers Grounding DINO folder file config.json")
    check_ints(cfg, HF_DINO_INTS, str(path))
    g = cfg.get
    # config_parameters takes one width and one head count for both stacks: the smaller (a lower bound)
    values = {"hidden_dim": g("d_model", 256),
              "dim_feedforward": min(g("encoder_ffn_dim", 2048), g("decoder_ffn_dim", 2048)),
              "nheads": min(g("encoder_attention_heads", 8), g("decoder_attention_heads", 8)),
              "num_feature_levels": g("num_feature_levels", 4),
              "enc_layers": g("encoder_layers", 6), "dec_layers": g("decoder_layers", 6),
              "enc_n_points": g("encoder_n_points", 4), "dec_n_points": g("decoder_n_points", 4),
              "num_queries": g("num_queries", 900), "embed_init_tgt": g("embedding_init_target", True)}
    n = config_parameters(values)
    for key, check in (("backbone_config", _check_swin), ("text_config", None)):
        sub = cfg.get(key)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise CheckpointError(f"{path}: {key} is not an object")
        if check is None:
            check_ints(sub, BERT_INTS, f"{path} text_config")
            n += bert_parameters(sub)
        else:
            n += check(sub, f"{path}")
    check_model_size(n, folder, path)


def hf_config_from_dino(values: dict[str, Any], text_config) -> "Any":
    """``GroundingDinoConfig`` equivalent to a package config (see :func:`read_config_py`)."""
    from transformers import GroundingDinoConfig, SwinConfig

    def need(cond: bool, what: str):
        if not cond:
            raise CheckpointError(f"the transformers Grounding DINO backend does not support {what}")

    bb = values.get("backbone", "swin_T_224_1k")
    need(bb in SWIN_VARIANTS, f"backbone {bb!r} (supported: {', '.join(SWIN_VARIANTS)})")
    need(values.get("two_stage_type", "standard") == "standard", f"two_stage_type {values.get('two_stage_type')!r}")
    for flag in ("use_text_enhancer", "use_fusion_layer", "use_text_cross_attention", "sub_sentence_present"):
        need(values.get(flag, True), f"{flag} = False")
    need(values.get("position_embedding", "sine") == "sine", f"position_embedding {values.get('position_embedding')!r}")
    need(values.get("pe_temperatureH", 20) == values.get("pe_temperatureW", 20), "different pe_temperatureH / W")
    need(values.get("num_patterns", 0) == 0, "num_patterns > 0")
    need(not values.get("pre_norm", False), "pre_norm = True")
    embed, depths, heads, window, size = SWIN_VARIANTS[bb]
    interm = list(values.get("return_interm_indices", [1, 2, 3]))
    backbone = SwinConfig(embed_dim=embed, depths=list(depths), num_heads=list(heads), window_size=window,
                          image_size=size, out_indices=[i + 1 for i in interm])
    return GroundingDinoConfig(
        backbone_config=backbone, text_config=text_config,
        num_queries=values.get("num_queries", 900),
        encoder_layers=values.get("enc_layers", 6), decoder_layers=values.get("dec_layers", 6),
        encoder_ffn_dim=values.get("dim_feedforward", 2048), decoder_ffn_dim=values.get("dim_feedforward", 2048),
        encoder_attention_heads=values.get("nheads", 8), decoder_attention_heads=values.get("nheads", 8),
        d_model=values.get("hidden_dim", 256), activation_function=values.get("transformer_activation", "relu"),
        num_feature_levels=values.get("num_feature_levels", 4),
        encoder_n_points=values.get("enc_n_points", 4), decoder_n_points=values.get("dec_n_points", 4),
        two_stage=True, max_text_len=values.get("max_text_len", 256),
        embedding_init_target=values.get("embed_init_tgt", True), query_dim=values.get("query_dim", 4),
        # with one decoder layer there is nothing to share, and transformers' tying rule for the
        # other layers' heads (a pattern that must match something) fails: declare it unshared
        decoder_bbox_embed_share=bool(values.get("dec_pred_bbox_embed_share", True)) and values.get("dec_layers", 6) > 1,
        two_stage_bbox_embed_share=values.get("two_stage_bbox_embed_share", False),
        positional_embedding_temperature=values.get("pe_temperatureH", 20),
        dropout=0.0, fusion_droppath=0.0, disable_custom_kernels=True,
    )


# ================================================================ state dict
_ENCODER_LAYER = [  # package name (under transformer.encoder.<group>.<i>.) -> transformers (model.encoder.layers.<i>.)
    ("layers", "self_attn.", "deformable_layer.self_attn."),
    ("layers", "norm1.", "deformable_layer.self_attn_layer_norm."),
    ("layers", "linear1.", "deformable_layer.fc1."),
    ("layers", "linear2.", "deformable_layer.fc2."),
    ("layers", "norm2.", "deformable_layer.final_layer_norm."),
    ("text_layers", "self_attn.", "text_enhancer_layer.self_attn."),
    ("text_layers", "linear1.", "text_enhancer_layer.fc1."),
    ("text_layers", "linear2.", "text_enhancer_layer.fc2."),
    ("text_layers", "norm1.", "text_enhancer_layer.layer_norm_before."),
    ("text_layers", "norm2.", "text_enhancer_layer.layer_norm_after."),
    ("fusion_layers", "gamma_v", "fusion_layer.vision_param"),
    ("fusion_layers", "gamma_l", "fusion_layer.text_param"),
    ("fusion_layers", "layer_norm_v.", "fusion_layer.layer_norm_vision."),
    ("fusion_layers", "layer_norm_l.", "fusion_layer.layer_norm_text."),
    ("fusion_layers", "attn.v_proj.", "fusion_layer.attn.vision_proj."),
    ("fusion_layers", "attn.l_proj.", "fusion_layer.attn.text_proj."),
    ("fusion_layers", "attn.values_v_proj.", "fusion_layer.attn.values_vision_proj."),
    ("fusion_layers", "attn.values_l_proj.", "fusion_layer.attn.values_text_proj."),
    ("fusion_layers", "attn.out_v_proj.", "fusion_layer.attn.out_vision_proj."),
    ("fusion_layers", "attn.out_l_proj.", "fusion_layer.attn.out_text_proj."),
]
_DECODER_LAYER = [  # under transformer.decoder.layers.<i>. -> model.decoder.layers.<i>.
    ("cross_attn.", "encoder_attn."), ("norm1.", "encoder_attn_layer_norm."),
    ("ca_text.", "encoder_attn_text."), ("catext_norm.", "encoder_attn_text_layer_norm."),
    ("self_attn.", "self_attn."), ("norm2.", "self_attn_layer_norm."),
    ("linear1.", "fc1."), ("linear2.", "fc2."), ("norm3.", "final_layer_norm."),
]
_SWIN_BLOCK = [  # under backbone.0.layers.<l>.blocks.<b>. -> ...swin.encoder.layers.<l>.blocks.<b>.
    ("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."),
    ("attn.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attn.proj.", "attention.o_proj."), ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."),
]
_SWIN = "model.backbone.conv_encoder.model."
_SWIN_BODY = _SWIN + "swin."
# fused (q; k; v) input projections of nn.MultiheadAttention (package) -> separate projections
_IN_PROJ = re.compile(r"^(model\.(?:encoder\.layers\.\d+\.text_enhancer_layer\.self_attn|decoder\.layers\.\d+\."
                      r"(?:self_attn|encoder_attn_text)))\.in_proj_(weight|bias)$")
_DROPPED = re.compile(r"(relative_position_index|attn_mask|^bert\.pooler\.|\.num_batches_tracked)$|^bert\.pooler\.")


def _rename(key: str) -> str | None:
    """Package key -> transformers key (None: the tensor has no counterpart, e.g. buffers)."""
    if _DROPPED.search(key):
        return None
    m = re.match(r"backbone\.0\.(.*)$", key)
    if m:
        rest = m.group(1)
        if rest.startswith("patch_embed.proj."):
            return _SWIN_BODY + "embeddings.patch_embeddings.projection." + rest[len("patch_embed.proj."):]
        if rest.startswith("patch_embed.norm."):
            return _SWIN_BODY + "embeddings.norm." + rest[len("patch_embed.norm."):]
        b = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)$", rest)
        if b:
            for src, dst in _SWIN_BLOCK:
                if b.group(3).startswith(src):
                    return f"{_SWIN_BODY}encoder.layers.{b.group(1)}.blocks.{b.group(2)}.{dst}{b.group(3)[len(src):]}"
            return None if b.group(3).startswith("attn.qkv.") else key  # qkv: split elsewhere
        d = re.match(r"layers\.(\d+)\.downsample\.(.*)$", rest)
        if d:
            return f"{_SWIN_BODY}encoder.layers.{d.group(1)}.downsample.{d.group(2)}"
        n = re.match(r"norm(\d+)\.(.*)$", rest)
        if n:
            return f"{_SWIN}hidden_states_norms.stage{int(n.group(1)) + 1}.{n.group(2)}"
        return key
    m = re.match(r"transformer\.encoder\.(layers|text_layers|fusion_layers)\.(\d+)\.(.*)$", key)
    if m:
        group, i, rest = m.groups()
        for g, src, dst in _ENCODER_LAYER:
            if g == group and rest.startswith(src):
                return f"model.encoder.layers.{i}.{dst}{rest[len(src):]}"
        return key
    m = re.match(r"transformer\.decoder\.layers\.(\d+)\.(.*)$", key)
    if m:
        i, rest = m.groups()
        for src, dst in _DECODER_LAYER:
            if rest.startswith(src):
                return f"model.decoder.layers.{i}.{dst}{rest[len(src):]}"
        return key
    simple = [("bert.", "model.text_backbone."), ("input_proj.", "model.input_proj_vision."),
              ("feat_map.", "model.text_projection."),
              ("transformer.decoder.ref_point_head.", "model.decoder.reference_points_head."),
              ("transformer.decoder.bbox_embed.", "model.decoder.bbox_embed."),
              ("transformer.decoder.norm.", "model.decoder.layer_norm."),
              ("transformer.enc_output_norm.", "model.enc_output_norm."),
              ("transformer.enc_output.", "model.enc_output."),
              ("transformer.enc_out_bbox_embed.", "model.encoder_output_bbox_embed."),
              ("transformer.tgt_embed.", "model.query_position_embeddings."),
              ("transformer.level_embed", "model.level_embed")]
    for src, dst in simple:
        if key.startswith(src):
            return dst + key[len(src):]
    return key  # bbox_embed.<i>.* keeps its name


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``groundingdino`` state dict (``module.`` prefixes allowed) in transformers' names: keys
    renamed, Swin's fused ``qkv`` split into query / key / value, buffers without a counterpart
    dropped. Keys that are not recognised are kept as they are (the strict load reports them)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        k = k[7:] if k.startswith("module.") else k
        m = re.match(r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", k)
        if m:
            q, kk, vv = v.chunk(3, dim=0)
            base = f"{_SWIN_BODY}encoder.layers.{m.group(1)}.blocks.{m.group(2)}.attention."
            for name, t in (("q_proj", q), ("k_proj", kk), ("v_proj", vv)):
                out[f"{base}{name}.{m.group(3)}"] = t.contiguous()
            continue
        new = _rename(k)
        if new is None:
            continue
        p = _IN_PROJ.match(new)
        if p:
            for name, t in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                out[f"{p.group(1)}.{name}.{p.group(2)}"] = t.contiguous()
        else:
            out[new] = v
    return out


# ================================================================ loading
def _tokenizer_from(folder: Path):
    from transformers import AutoTokenizer

    from .checkpoints import check_tokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    check_tokenizer(folder, tok)
    return tok


def _quiet_transformers():
    import contextlib

    from transformers.utils import logging as hf_logging

    @contextlib.contextmanager
    def cm():
        v = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(v)
    return cm()


def load_hf_grounding(config: str | Path | None, checkpoint: str | Path, text_encoder: str | Path | None,
                      device: torch.device | str = "cpu"):
    """(model, tokenizer) from an official checkpoint + config ``.py`` + BERT folder, or from a
    ``save_pretrained`` folder (``checkpoint`` is a folder)."""
    from transformers import BertConfig, GroundingDinoForObjectDetection

    ck = Path(checkpoint).expanduser()
    if ck.is_dir():
        check_folder_config(ck)
        try:
            with _quiet_transformers():
                model, info = GroundingDinoForObjectDetection.from_pretrained(
                    str(ck), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
            raise CheckpointError(f"transformers Grounding DINO folder {ck} cannot be loaded: "
                                  f"{(str(e).splitlines() or [type(e).__name__])[0][:300]}") from None
        # transformers fills tensors the weights lack (or whose shape differs) with random values and
        # only logs it: refuse, a detector with random layers would give wrong boxes without a word
        bad = [(what, sorted(map(str, info.get(key) or ()))) for key, what in
               (("missing_keys", "missing"), ("mismatched_keys", "of the wrong shape"))]
        bad = [(what, keys) for what, keys in bad if keys]
        if bad:
            raise CheckpointError(
                f"transformers Grounding DINO folder {ck}: its weights do not match its config.json: "
                + "; ".join(f"{len(keys)} tensors {what} (e.g. {keys[0][:120]})" for what, keys in bad))
        if any((ck / f).exists() for f in ("tokenizer.json", "vocab.txt")):
            tok_dir = ck
        else:
            tok_dir = require_dir(text_encoder, "Grounding DINO text encoder (BERT)")
            check_small_files(tok_dir, "Grounding DINO text encoder (BERT) file")
        tokenizer = _tokenizer_from(Path(tok_dir))
    else:
        from .grounding import _find_config

        cfg_path = _find_config(Path(config).expanduser())
        values = read_config_py(cfg_path)  # data: the file is never executed
        check_config_values(values, cfg_path)
        text_dir = check_text_encoder(text_encoder)
        text_config = BertConfig.from_pretrained(str(text_dir), local_files_only=True)
        hf_cfg = hf_config_from_dino(values, text_config)
        state = load_state_dict(ck, "Grounding DINO checkpoint")
        state = state.get("model", state)
        if not isinstance(state, dict) or not any(str(k).startswith(("transformer.", "module.transformer."))
                                                  for k in state):
            raise CheckpointError(f"{ck} is not a Grounding DINO checkpoint (no transformer.* tensors)")
        check_config_fits(values, state, cfg_path, ck)
        converted = convert_state_dict(state)
        if not any(k.startswith("model.text_backbone.") for k in converted):  # BERT from its folder
            from transformers import BertModel

            with _quiet_transformers():
                bert = BertModel.from_pretrained(str(text_dir), local_files_only=True, add_pooling_layer=False)
            converted.update({f"model.text_backbone.{k}": v for k, v in bert.state_dict().items()})
        with _quiet_transformers(), _no_init():
            model = GroundingDinoForObjectDetection(hf_cfg)
        _check_buffers(model)
        _strict_load(model, converted, ck, cfg_path)
        tokenizer = _tokenizer_from(text_dir)
    model.eval()
    model.model.special_tokens = torch.tensor(tokenizer.convert_tokens_to_ids(SEPARATOR_TOKENS), dtype=torch.long)
    return model.to(device), tokenizer


def _no_init():
    """transformers' ``no_init_weights`` (skip the random initialisation of tensors that are
    loaded right after; 5 s of a 6 s load for Swin-T) where available."""
    import contextlib

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - other transformers layouts
        return contextlib.nullcontext()
    return no_init_weights()


def _check_buffers(model) -> None:
    """Buffers are computed in the modules' constructors, not by the skipped initialisation; make
    sure (a garbage relative-position index would silently change every output)."""
    for name, buf in model.named_buffers():
        if name.endswith("relative_position_index"):
            n = buf.numel()
            if n == 0 or int(buf.min()) < 0 or int(buf.max()) >= n:
                raise CheckpointError(f"internal: buffer {name} not initialised by its module")


def _strict_load(model, state: dict, ck: Path, cfg_path: Path) -> None:
    """Load every tensor of the model from ``state``; only buffers that the package's file does
    not carry (rebuilt from the config) may be absent. Mismatches fail naming the file."""
    own = model.state_dict()
    buffers = {n for n, _ in model.named_buffers()}
    # tensors the model declares unused when loading (Swin's final LayerNorm: the backbone
    # normalises each returned stage with hidden_states_norms instead)
    unused = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    missing = [k for k in own if k not in state and k not in buffers and not any(u.search(k) for u in unused)]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append(f"{len(shape)} of the wrong shape (e.g. {shape[0]}: {tuple(state[shape[0]].shape)} vs "
                         f"{tuple(own[shape[0]].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in the model (e.g. {unexpected[0]})")
        raise CheckpointError(f"{ck} does not match the Grounding DINO of config {cfg_path}: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


def save_converted(config: str | Path, checkpoint: str | Path, text_encoder: str | Path, out_dir: str | Path) -> Path:
    """Convert an official checkpoint once and write it as a transformers folder (model, config
    and tokenizer), loadable with ``models.grounding.checkpoint: OUT_DIR``."""
    model, tok = load_hf_grounding(config, checkpoint, text_encoder, "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    return out


# ================================================================ detector
class _CachedBackbone(torch.nn.Module):
    """Stands in for ``GroundingDinoModel.backbone``: returns the current image's (features, masks,
    position embeddings), expanded to the batch, instead of running Swin again."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.position_embedding = inner.position_embedding
        self.cached = None

    def forward(self, pixel_values, pixel_mask):
        if self.cached is None:
            return self.inner(pixel_values, pixel_mask)
        feats, pos = self.cached
        b = pixel_values.shape[0]
        return ([(f.expand(b, *f.shape[1:]), m.expand(b, *m.shape[1:])) for f, m in feats],
                [p.expand(b, *p.shape[1:]) for p in pos])


class HFGroundingDetector(TokenCache):
    """Grounding DINO (transformers) with the image backbone cached per image."""

    backend = "transformers"

    def __init__(self, config: str | Path | None, checkpoint: str | Path, text_encoder: str | Path | None,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model, self.tokenizer = load_hf_grounding(config, checkpoint, text_encoder, self.device)
        inner = self.model.model.backbone
        self._backbone = _CachedBackbone(inner)
        self.model.model.backbone = self._backbone
        self.max_text_len = self.model.config.max_text_len
        self._image = None
        self._token_cache: dict[str, list[int]] = {}
        from torchvision import transforms as T

        self._to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    # the same preprocessing as the groundingdino backend (short side 800, long side <= 1333)
    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from .grounding import resize_like_groundingdino

        return self._to_tensor(resize_like_groundingdino(Image.fromarray(rgb)))

    @torch.no_grad()
    def set_image(self, rgb: np.ndarray) -> torch.Tensor:
        x = self.preprocess(rgb).to(self.device)[None]
        self._slots = None
        self._backbone.cached = self._image_features(x)
        self._image = x
        return x[0]

    @torch.no_grad()
    def set_images(self, images: Sequence[np.ndarray]) -> None:
        """:meth:`set_image` for several images at once: Swin runs on the images of one input size
        as one batch (other sizes in their own batches, nothing padded); :meth:`use_image` selects
        the image the following :meth:`detect_many` calls see (the first one is selected)."""
        from .features import same_shape_groups

        xs = [self.preprocess(rgb).to(self.device)[None] for rgb in images]
        slots: list = [None] * len(xs)
        for idx in same_shape_groups([tuple(x.shape) for x in xs]):
            feats, pos = self._image_features(torch.cat([xs[j] for j in idx]))
            for k, j in enumerate(idx):
                slots[j] = (([(f[k:k + 1], m[k:k + 1]) for f, m in feats], [p[k:k + 1] for p in pos]), xs[j])
        self._slots = slots
        self.use_image(0)

    def use_image(self, j: int) -> None:
        """Select image ``j`` of the last :meth:`set_images`."""
        if not getattr(self, "_slots", None):
            raise RuntimeError("HFGroundingDetector.use_image called before set_images")
        self._backbone.cached, self._image = self._slots[j]

    def _image_features(self, x: torch.Tensor):
        """Swin's (features, masks) and position embeddings of a batch of same-size inputs."""
        mask = torch.ones((x.shape[0], *x.shape[-2:]), dtype=torch.long, device=self.device)
        self._backbone.cached = None
        feats, pos = self._backbone.inner(x, mask)
        return list(feats), list(pos)

    def reset_image(self) -> None:
        self._backbone.cached = None
        self._image = None
        self._slots = None


    @torch.no_grad()
    def detect_many(self, captions: Iterable[str]) -> list[DetectorOutput]:
        """All captions in one batch through the text encoder, the encoder/decoder and the heads
        (padded to the longest; padding is masked, so each caption's outputs equal its own call's
        up to float rounding)."""
        if self._image is None:
            raise RuntimeError("HFGroundingDetector.detect called before set_image")
        caps = [normalize_caption(c) for c in captions]
        if not caps:
            return []
        tok = self.tokenizer(caps, padding="longest", return_tensors="pt")
        n = self.max_text_len
        ids = tok["input_ids"][:, :n].to(self.device)
        att = tok["attention_mask"][:, :n].to(self.device)
        tt = tok.get("token_type_ids")
        tt = torch.zeros_like(ids) if tt is None else tt[:, :n].to(self.device)
        b = len(caps)
        px = self._image.expand(b, *self._image.shape[1:])
        out = self.model(pixel_values=px, input_ids=ids, token_type_ids=tt, attention_mask=att,
                         pixel_mask=torch.ones((b, *px.shape[-2:]), dtype=torch.long, device=self.device))
        probs = out.logits.sigmoid().float().cpu()
        boxes = out.pred_boxes.float().cpu()
        res = []
        for i, cap in enumerate(caps):
            res.append(DetectorOutput(caption=cap, input_ids=self.tokenize(cap)[:n], boxes=boxes[i],
                                      token_probs=probs[i]))
        return res

    def detect(self, caption: str) -> DetectorOutput:
        """Boxes and token probabilities of every query for one caption on the current image."""
        return self.detect_many([caption])[0]

    def phrase(self, token_probs: torch.Tensor, input_ids: list[int], text_threshold: float) -> str:
        idx = torch.nonzero(token_probs > text_threshold, as_tuple=True)[0].tolist()
        return self.tokenizer.decode([input_ids[i] for i in idx if i < len(input_ids)])
