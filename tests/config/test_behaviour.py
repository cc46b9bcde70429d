"""The behaviour switches and their presets (saa.config.behaviour): ``official`` and ``paper``,
explicit switches winning over a preset, unknown presets named with the closest one, registering a
preset, values validated."""
from __future__ import annotations

import pytest

from saa.config import PRESETS, config_from_dict, load_config, register_preset

from tests.conftest import REPO


CONFIGS = REPO / "configs"


def test_preset_official_and_paper(minimal):
    official = config_from_dict(minimal()).resolved_behaviour()
    assert official.sam_color_order == "bgr"
    assert official.saliency_color_order == "bgr"
    assert official.saliency_neighbors == "farthest"
    assert official.saliency_n == 400
    assert (official.single_object_size, official.multi_object_size) == (256, 1024)
    assert (official.rescore_gamma, official.fusion_delta) == (3.0, 1.0)
    assert official.area_rule == "boxes"

    paper = config_from_dict({**minimal(), "preset": "paper"}).resolved_behaviour()
    assert (paper.sam_color_order, paper.saliency_color_order) == ("rgb", "rgb")
    assert paper.saliency_neighbors == "nearest"
    assert (paper.rescore_gamma, paper.fusion_delta, paper.area_rule) == (1.0, 0.0, "masks")
    assert paper.saliency_n == 400


def test_explicit_behaviour_wins_over_preset(minimal):
    cfg = config_from_dict(
        {**minimal(), "preset": "paper", "behaviour": {"rescore_gamma": 2.5, "area_rule": "boxes"}}
    )
    res = cfg.resolved_behaviour()
    assert res.rescore_gamma == 2.5
    assert res.area_rule == "boxes"
    assert res.fusion_delta == 0.0  # still the paper's
    with pytest.raises(Exception):
        res.rescore_gamma = 1.0  # frozen
    cfg = load_config(CONFIGS / "mvtec.yaml", ["behaviour.sam_color_order=rgb"])
    assert cfg.resolved_behaviour().sam_color_order == "rgb"
    assert cfg.resolved_behaviour().saliency_color_order == "bgr"


def test_unknown_preset_and_registering_one(error_of, minimal):
    msg = error_of(config_from_dict, {**minimal(), "preset": "papr"})
    assert "preset" in msg and "did you mean `paper`?" in msg and "'official'" in msg
    try:
        register_preset("mine", {**PRESETS["paper"], "saliency_n": 100})
        cfg = config_from_dict({**minimal(), "preset": "mine"})
        assert cfg.resolved_behaviour().saliency_n == 100
        msg = error_of(register_preset, "broken", {"sam_color_order": "rgb"})
        assert "area_rule" in msg and "missing" in msg
    finally:
        PRESETS.pop("mine", None)
    assert "mine" not in PRESETS


def test_behaviour_values_are_validated(error_of, minimal):
    msg = error_of(
        config_from_dict,
        {**minimal(), "behaviour": {"saliency_neighbors": "closest", "single_object_size": 16}},
    )
    assert "behaviour.saliency_neighbors" in msg and "'farthest'" in msg and "'nearest'" in msg
    assert "behaviour.single_object_size" in msg and "at least 32" in msg
