"""SAA+ as a method (saa.methods.saa_plus.method): the fingerprint of its maps changes with what
changes a map and with nothing else."""
from __future__ import annotations

from saa.config import load_config

from tests.conftest import REPO


def test_fingerprint_tracks_what_changes_maps():
    cfg = load_config(REPO / "configs" / "mvtec.yaml")
    from saa.methods.saa_plus import config_fingerprint  # (was re-exported by saa.evaluator)

    fp = config_fingerprint(cfg, "bottle")
    assert fp == config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["models.device=cuda"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["out_size=256"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["preset=paper"]), "bottle")
    assert fp != config_fingerprint(load_config(REPO / "configs" / "mvtec.yaml", ["categories.bottle.k_mask=3"]), "bottle")
    assert fp != config_fingerprint(cfg, "cable")
