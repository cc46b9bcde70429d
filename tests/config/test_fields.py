"""Field types and limits (saa.config.fields): sizes that size an allocation have upper bounds,
``eval_size`` is checked at load, names that become folders are plain, dataset options are typed,
numbers out of range are named with their path."""
from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from saa.config import MAX_EVAL_SIZE, MAX_OUT_SIZE, config_from_dict, load_config
from saa.errors import ConfigError

from tests.conftest import REPO


MVTEC_CFG = REPO / "configs" / "mvtec.yaml"
CONFIGS = REPO / "configs"


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


@pytest.mark.parametrize("key,value,limit", [
    ("out_size", 100000, MAX_OUT_SIZE),
    ("dataset.options.eval_size", 100000, MAX_EVAL_SIZE),
    ("behaviour.single_object_size", 100000, 1024),
    ("behaviour.multi_object_size", 100000, 2048),
    ("behaviour.cross_image_k", 10**9, 1024),
])
def test_allocation_sizes_have_upper_bounds(key, value, limit):
    with pytest.raises(ConfigError) as e:
        load_config(MVTEC_CFG, [f"{key}={value}"])
    msg = str(e.value)
    assert f"{key}: must be at most {limit}" in msg and (" GB" in msg or " TB" in msg)
    cfg = load_config(MVTEC_CFG, [f"{key}={limit}"])  # the bound itself is allowed
    assert cfg is not None


def test_eval_size_checked_at_load_as_the_evaluator_reads_it():
    from saa.evaluation import eval_size_of

    for ok, size in (("256", 256), ("2048", 2048), ("'300'", 300), ("512.0", 512)):
        assert eval_size_of(load_config(MVTEC_CFG, [f"dataset.options.eval_size={ok}"])) == size
    for bad in ("0", "-3", "2.5", "true", "[1]", "full", ".inf", "2049"):
        with pytest.raises(ConfigError, match="dataset.options.eval_size"):
            load_config(MVTEC_CFG, [f"dataset.options.eval_size={bad}"])


@pytest.mark.parametrize("name", ["a/b", "..", "/abs", "a\\b", "c:x", "nul\x00x", "x" * 200])
def test_names_that_become_folders_are_plain(name):
    with pytest.raises(ConfigError, match="dataset.options.category"):
        load_config(MVTEC_CFG, [f"dataset.options.category={json.dumps(name)}"])
    with pytest.raises(ConfigError, match="dataset.options.vand_experiment"):
        load_config(MVTEC_CFG, [f"dataset.options.vand_experiment={json.dumps(name)}"])
    data = {"categories": {name: {"object": "o", "n_objects": 1, "k_mask": 1, "area_ratio": 0.5}}}
    from saa.config import config_from_dict

    with pytest.raises(ConfigError, match="categories key"):
        config_from_dict(data)


def test_dataset_options_are_typed():
    for bad in ("dataset.options.category=[1, 2]", "dataset.options.split=[test]",
                "dataset.options.normal_dir={a: 1}", "dataset.options.mask_suffix=a/b",
                "dataset.options.defect_dirs=[1, 2]", 'dataset.root="a\\0b"'):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(MVTEC_CFG, [bad])
    cfg = load_config(MVTEC_CFG, ["dataset.options.category=part_1", "dataset.options.defect_dirs=[a, 'b/*']",
                                  "dataset.options.n=3"])
    assert cfg.dataset.options == {"category": "part_1", "defect_dirs": ["a", "b/*"], "n": 3}


@settings(max_examples=40, deadline=None)
@given(
    field=st.sampled_from(
        [
            ("models.grounding.box_threshold", "between 0 and 1"),
            ("models.grounding.text_threshold", "between 0 and 1"),
            ("categories.ksdd2.area_ratio", "greater than 0 and at most 1"),
        ]
    ),
    value=st.one_of(
        st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
        st.floats(min_value=1.000001, allow_nan=False, allow_infinity=False),
    ),
)
def test_out_of_range_floats_rejected_with_path(field, value, error_of):
    path, allowed = field
    base = yaml.safe_load((CONFIGS / "ksdd2.yaml").read_text())
    msg = error_of(config_from_dict, base, [f"{path}={value!r}"])
    assert path in msg and allowed in msg


@settings(max_examples=40, deadline=None)
@given(
    field=st.sampled_from(
        ["categories.ksdd2.k_mask", "categories.ksdd2.n_objects", "out_size",
         "behaviour.saliency_n"]
    ),
    value=st.integers(max_value=0),
)
def test_non_positive_ints_rejected_with_path(field, value, error_of):
    base = yaml.safe_load((CONFIGS / "ksdd2.yaml").read_text())
    msg = error_of(config_from_dict, base, [f"{field}={value}"])
    assert f"{field}: must be at least 1 (got {value})" in msg
