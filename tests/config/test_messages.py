"""Validation errors as readable messages (saa.config.messages): one line per problem with the dotted
key path, what is allowed, the value, "did you mean", required fields named, no pydantic text."""
from __future__ import annotations

import pytest

from saa.config import config_from_dict, load_config
from saa.errors import ConfigError

from tests.conftest import REPO


CONFIGS = REPO / "configs"


def test_unknown_key_suggests_the_right_one(tmp_path, error_of, minimal, write):
    text = (CONFIGS / "ksdd2.yaml").read_text().replace("box_threshold", "box_treshold")
    path = write(tmp_path, text)
    msg = error_of(load_config, path)
    assert msg.startswith(str(path))
    assert "models.grounding.box_treshold" in msg
    assert "did you mean `box_threshold`?" in msg
    msg = error_of(load_config, CONFIGS / "mvtec.yaml", ["categories.bottle.k_mak=3"])
    assert "categories.bottle.k_mak" in msg and "did you mean `k_mask`?" in msg
    msg = error_of(config_from_dict, {**minimal(), "out_sise": 3})
    assert "out_sise" in msg and "did you mean `out_size`?" in msg
    msg = error_of(config_from_dict, {**minimal(), "behavior": {}})
    assert "did you mean `behaviour`?" in msg


def test_wrong_type_and_range_messages(error_of, minimal):
    data = minimal(area_ratio=1.5, k_mask="many", object="  ", prompts=[["a", "b", "c"]])
    data["models"] = {"grounding": {"text_threshold": -0.1}, "device": "gpu"}
    data["out_size"] = True
    msg = error_of(config_from_dict, data, source="my.yaml")
    lines = msg.splitlines()
    assert lines[0].startswith("my.yaml")
    assert len(lines) == 1 + 7  # one line per problem
    assert "categories.thing.area_ratio: must be greater than 0 and at most 1 (got 1.5)" in msg
    assert "categories.thing.k_mask: must be an integer (got 'many')" in msg
    assert "categories.thing.object: must be a non-empty string" in msg
    assert "categories.thing.prompts[0]" in msg and "2-item [caption, filter]" in msg
    assert "models.grounding.text_threshold: must be between 0 and 1 (got -0.1)" in msg
    assert "models.device" in msg and "'gpu'" in msg
    assert "out_size" in msg and "boolean" in msg


def test_literal_choices_listed(error_of, minimal):
    msg = error_of(config_from_dict, {**minimal(), "behaviour": {"area_rule": "mask"}})
    assert "behaviour.area_rule: must be one of 'boxes' or 'masks' (got 'mask')" in msg
    msg = error_of(config_from_dict, minimal(similar="same"))
    assert "categories.thing.similar" in msg and "'dissimilar'" in msg


def test_missing_required_fields_named(error_of):
    msg = error_of(config_from_dict, {})
    assert "categories: required field is missing" in msg
    msg = error_of(config_from_dict, {"categories": {}})
    assert "categories: at least one category is required" in msg
    msg = error_of(config_from_dict, {"categories": {"c": {"object": "c,"}}})
    assert "categories.c.n_objects: required field is missing" in msg
    assert "categories.c.k_mask: required field is missing" in msg


def test_no_pydantic_error_leaks(tmp_path, write):
    path = write(tmp_path, "categories: 3\nmodels: {grounding: {box_threshold: x}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.__suppress_context__ or info.value.__cause__ is None
    body = str(info.value).split("\n", 1)[1]  # the header holds tmp_path (test name)
    assert "pydantic" not in body and "Input should be" not in body
    assert "models.grounding.box_threshold: must be a number (got 'x')" in body
