"""SAM (saa.models.sam): the architecture is read off a checkpoint's tensor shapes."""
from __future__ import annotations

def test_sam_architecture_inferred_for_standard_sizes():
    from segment_anything import sam_model_registry

    from saa.models.sam import infer_architecture

    sd = sam_model_registry["vit_b"]().state_dict()
    a = infer_architecture(sd)
    assert (a.embed_dim, a.depth, a.num_heads, a.global_attn_indexes, a.window_size) == (768, 12, 12, (2, 5, 8, 11), 14)
    assert a.describe().startswith("ViT-B")
