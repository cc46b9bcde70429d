"""Compatibility of the ``groundingdino`` package (``rf-groundingdino``) with transformers 5.

The package wraps BERT in ``groundingdino.models.GroundingDINO.bertwarper.BertModelWarper``. Its
constructor copies ``get_extended_attention_mask`` and ``get_head_mask`` off the ``BertModel``
(both removed in transformers 5) and its forward calls ``BertEmbeddings`` with
``past_key_values_length`` and ``BertEncoder`` with ``head_mask`` / ``past_key_values`` /
``return_dict`` (renamed or removed in transformers 5). :func:`install` replaces the wrapper's
``__init__`` and ``forward`` with an inference-only equivalent written against the sub-modules
both major versions share:

* the attention mask (``(b, n)`` padding mask or ``(b, n, n)`` Grounding DINO sub-sentence mask) is
  turned into the additive ``(b, 1, n, n)`` mask that ``get_extended_attention_mask`` produced
  (``(1 - mask) * finfo(dtype).min``), which BERT's eager and SDPA attention both add to the
  logits;
* the embeddings get ``input_ids``, ``token_type_ids`` (zeros by default) and ``position_ids``;
* the encoder gets the hidden states and that mask, nothing else; the pooler runs as before.

Grounding DINO uses the text encoder as a plain (non-decoder, no cache) encoder, so nothing else
of the original forward is reachable. Under transformers 4 the package's own code is left alone
(:func:`needed` is false), so runs there are bit-identical to before. The fidelity test
(``tests/methods/saa_plus/test_pipeline_fidelity.py``) checks the patched detector against the authors' outputs.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["needed", "install", "extended_attention_mask", "run_with_compat"]

_installed = False


@functools.lru_cache(maxsize=1)
def needed() -> bool:
    """True when the installed transformers lacks what the package's BERT wrapper calls."""
    from transformers import BertModel

    return not (hasattr(BertModel, "get_extended_attention_mask") and hasattr(BertModel, "get_head_mask"))


def extended_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(b, n)`` or ``(b, n, n)`` 1/0 (or bool) mask -> additive ``(b, 1, n|1, n)`` mask, as
    transformers 4's ``ModuleUtilsMixin.get_extended_attention_mask`` built it for an encoder."""
    if mask.dim() == 3:
        ext = mask[:, None, :, :]
    elif mask.dim() == 2:
        ext = mask[:, None, None, :]
    else:
        raise ValueError(f"attention mask of shape {tuple(mask.shape)}: expected (batch, n) or (batch, n, n)")
    ext = ext.to(dtype=dtype)
    return (1.0 - ext) * torch.finfo(dtype).min


def _init(self, bert_model):
    torch.nn.Module.__init__(self)
    self.config = bert_model.config
    self.embeddings = bert_model.embeddings
    self.encoder = bert_model.encoder
    self.pooler = bert_model.pooler


def _forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
             head_mask=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
             past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
             return_dict=None):
    from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions

    unsupported = {"head_mask": head_mask, "encoder_hidden_states": encoder_hidden_states,
                   "past_key_values": past_key_values}
    bad = [k for k, v in unsupported.items() if v is not None]
    if bad or self.config.is_decoder or output_attentions or output_hidden_states:
        # groundingdino never passes these; refuse rather than silently ignore them
        raise ValueError(f"saa's transformers-5 BERT wrapper runs the encoder only (got {bad or 'decoder options'})")
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("give exactly one of input_ids / inputs_embeds")
    shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
    device = input_ids.device if input_ids is not None else inputs_embeds.device
    if attention_mask is None:
        attention_mask = torch.ones(shape, device=device)
    if token_type_ids is None:
        token_type_ids = torch.zeros(shape, dtype=torch.long, device=device)
    hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                             inputs_embeds=inputs_embeds)
    mask = extended_attention_mask(attention_mask, hidden.dtype)
    out = self.encoder(hidden, attention_mask=mask)
    seq = out[0]
    pooled = self.pooler(seq) if self.pooler is not None else None
    if return_dict is False:
        return (seq, pooled)
    return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=seq, pooler_output=pooled)


def install() -> bool:
    """Patch the package's BERT wrapper if the installed transformers needs it (idempotent).
    Returns whether the patch is active."""
    global _installed
    if _installed:
        return True
    if not needed():
        return False
    from groundingdino.models.GroundingDINO import bertwarper

    bertwarper.BertModelWarper.__init__ = _init
    bertwarper.BertModelWarper.forward = _forward
    bertwarper.BertModelWarper._saa_compat = True
    _installed = True
    return True


def run_with_compat(argv: list[str]) -> None:
    """Run a Python script (``argv[0]``, with its arguments) as ``__main__`` with :func:`install`
    applied first: ``python -m saa.models.compat SCRIPT ARGS...`` (e.g. the fidelity kit's
    checkpoint builder, which drives the package's BERT wrapper directly)."""
    import os
    import runpy
    import sys

    install()
    script = os.path.abspath(argv[0])
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2:
        sys.exit("usage: python -m saa.models.compat SCRIPT [ARGS...]")
    run_with_compat(sys.argv[1:])
