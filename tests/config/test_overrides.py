"""``--set dotted.key=value`` overrides (saa.config.overrides): nested keys, numbers and lists parsed
as YAML, the input never mutated, malformed items and bad values named with the override they came
from."""
from __future__ import annotations

import pytest

from saa.config import apply_overrides, load_config

from tests.conftest import REPO


CONFIGS = REPO / "configs"


# ---------------------------------------------------------------------------------------------
# --set overrides
# ---------------------------------------------------------------------------------------------


def test_overrides_nested_numbers_lists():
    cfg = load_config(
        CONFIGS / "mvtec.yaml",
        [
            "models.grounding.box_threshold=0.25",
            "models.device=cuda:1",
            "out_size=256",
            "models.saliency.stages=[0, 2]",
            "categories.bottle.prompts=[[\"hole\", \"x\"]]",
            "categories.screw.k_mask=3",
            "preset=paper",
            "models.grounding.text_threshold=1e-3",
        ],
    )
    assert cfg.models.grounding.box_threshold == 0.25
    assert cfg.models.grounding.text_threshold == 0.001
    assert cfg.models.device == "cuda:1"
    assert cfg.out_size == 256
    assert cfg.models.saliency.stages == [0, 2]
    assert cfg.category("bottle").prompts == [("hole", "x")]
    assert cfg.category("screw").k_mask == 3
    assert cfg.preset == "paper"


def test_apply_overrides_does_not_mutate_and_creates_dicts():
    data = {"a": {"b": 1}, "n": None}
    out = apply_overrides(data, ["a.c.d=true", "n.x=[1, 2]", "e=", "a.b=hello world"])
    assert data == {"a": {"b": 1}, "n": None}
    assert out == {"a": {"b": "hello world", "c": {"d": True}}, "n": {"x": [1, 2]}, "e": ""}
    # only the first '=' splits
    assert apply_overrides({}, ["k=a=b"]) == {"k": "a=b"}


def test_override_new_category_reports_missing_fields(error_of):
    msg = error_of(load_config, CONFIGS / "mvtec.yaml", ["categories.mypart.n_objects=2"])
    for field in ("object", "k_mask", "area_ratio"):
        assert f"categories.mypart.{field}: required field is missing" in msg
    assert "categories.mypart.n_objects" not in msg
    cfg = load_config(
        CONFIGS / "mvtec.yaml",
        [
            "categories.mypart.n_objects=2",
            "categories.mypart.object=part,",
            "categories.mypart.k_mask=4",
            "categories.mypart.area_ratio=0.5",
        ],
    )
    assert cfg.category("mypart").object == "part,"
    assert cfg.language_prompts("mypart") == [
        ("defect on mypart", "mypart"), ("damage on mypart", "mypart"), ("flaw on mypart", "mypart"),
    ]


@pytest.mark.parametrize(
    "bad", ["out_size", "=3", " =3", "a..b=1", ".a=1", "a.=1", "out_size.x=1"]
)
def test_malformed_overrides(bad, error_of):
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", [bad])
    assert repr(bad) in msg


def test_override_value_errors_name_the_override(error_of):
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", ["models.grounding.box_threshold=2"])
    assert "models.grounding.box_threshold" in msg
    assert "must be between 0 and 1" in msg
    assert "--set models.grounding.box_threshold=2" in msg
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", ["out_size=[1, 2"])
    assert "out_size=[1, 2" in msg
