"""The config schema (saa.config.schema): the queries the package asks of a config (prompts,
categories, object area), defaults of empty sections, the property sentence of a category, and paths
(model files, the weights folder) resolved against the config file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from saa.config import CategoryConfig, SaaConfig, config_from_dict, load_config, parse_property_sentence
from saa.errors import ConfigError, SaaError

from tests.conftest import REPO


CONFIGS = REPO / "configs"


SENTENCE = (
    "the image of bottle have 1 dissimilar bottle, with a maximum of 5 anomaly. "
    "The anomaly would not exceed 0.3 object area. "
)


# ---------------------------------------------------------------------------------------------
# queries


def test_language_prompts_order_and_substitution():
    cfg = load_config(CONFIGS / "mvtec.yaml")
    assert cfg.language_prompts("metal_nut") == [
        ("defect on metal_nut", "metal_nut"),
        ("damage on metal_nut", "metal_nut"),
        ("flaw on metal_nut", "metal_nut"),
        ("blue defect. black defect. red defect. scratch.", "nut"),
    ]
    visa = load_config(CONFIGS / "visa_public.yaml")
    prompts = visa.language_prompts("capsules")
    assert prompts[:3] == [
        ("defect on capsules", "capsules"),
        ("damage on capsules", "capsules"),
        ("flaw on capsules", "capsules"),
    ]
    assert prompts[3:] == [("black melt. dark liquid.", "capsules"), ("bubble", "capsules")]


def test_language_prompts_with_custom_general_prompts_and_empty_own_prompts(minimal):
    data = minimal()
    data["general_prompts"] = [["scratch on {c}", "{c}"], ["dent", "x"]]
    cfg = config_from_dict(data)
    assert cfg.language_prompts("thing") == [("scratch on thing", "thing"), ("dent", "x")]
    data["general_prompts"] = []
    assert config_from_dict(data).language_prompts("thing") == []


def test_unknown_category_names_closest_and_available(error_of):
    cfg = load_config(CONFIGS / "mvtec.yaml")
    msg = error_of(cfg.category, "metalnut")
    assert "`metalnut`" in msg
    assert "did you mean `metal_nut`?" in msg
    assert "carpet" in msg and "zipper" in msg
    with pytest.raises(ConfigError):
        cfg.language_prompts("nope")


def test_object_max_area():
    visa = load_config(CONFIGS / "visa_public.yaml")
    assert visa.category("capsules").object_max_area == pytest.approx(1 / 20)
    assert visa.category("candle").object_max_area == pytest.approx(0.25)
    assert visa.category("pcb1").object_max_area == 1.0


def test_errors_are_saa_errors():
    assert issubclass(ConfigError, SaaError)


def test_empty_sections_take_defaults(tmp_path, write):
    path = write(
        tmp_path,
        "behaviour:\nmodels:\n  sam:\ndataset:\ncategories:\n"
        "  a: {object: 'a,', n_objects: 1, k_mask: 1, area_ratio: 1}\n",
    )
    cfg = load_config(path, ["behaviour.fusion_delta=0"])
    assert cfg.models.sam.checkpoint == "sam_vit_h_4b8939.pth"
    assert cfg.resolved_behaviour().fusion_delta == 0.0


# ---------------------------------------------------------------------------------------------
# the property sentence


def test_parse_property_sentence():
    assert parse_property_sentence(SENTENCE) == dict(
        n_objects=1, similar="dissimilar", object="bottle,", k_mask=5, area_ratio=0.3
    )
    s = (
        "the image of capsules have 20 similar capsule, with a maximum of 15 anomaly. "
        "The anomaly would not exceed 1.0 object area. "
    )
    assert parse_property_sentence(s) == dict(
        n_objects=20, similar="similar", object="capsule,", k_mask=15, area_ratio=1.0
    )


@pytest.mark.parametrize(
    "sentence",
    [
        "the image of bottle",
        SENTENCE.replace("have 1", "have one"),
        SENTENCE.replace("of 5 anomaly", "of five anomaly"),
        SENTENCE.replace("exceed 0.3", "exceed much"),
        SENTENCE.replace("dissimilar", "different"),
    ],
)
def test_bad_property_sentence(sentence, error_of):
    msg = error_of(parse_property_sentence, sentence)
    assert repr(sentence) in msg


def test_property_sentence_in_yaml(tmp_path, error_of, write):
    text = (
        "categories:\n"
        "  bottle:\n"
        f"    property: {json.dumps(SENTENCE)}\n"
        "    prompts: [['broken part.', 'bottle']]\n"
        "  other:\n"
        f"    property: {json.dumps(SENTENCE)}\n"
        "    k_mask: 9\n"
        "    object: other\n"
    )
    cfg = load_config(write(tmp_path, text))
    bottle = cfg.category("bottle")
    assert (bottle.object, bottle.n_objects, bottle.k_mask, bottle.area_ratio) == (
        "bottle,", 1, 5, 0.3,
    )
    assert bottle.similar == "dissimilar"
    assert bottle.prompts == [("broken part.", "bottle")]
    other = cfg.category("other")  # named fields win over the sentence
    assert (other.k_mask, other.object, other.n_objects) == (9, "other", 1)
    # round trip writes named fields only
    assert load_config(write(tmp_path, cfg.to_yaml(), "rt.yaml")) == cfg
    bad = text.replace("have 1", "have x", 1)
    msg = error_of(load_config, write(tmp_path, bad, "bad.yaml"))
    assert "categories.bottle" in msg and "word 5" in msg


# ---------------------------------------------------------------------------------------------
# paths


def test_resolve_path(tmp_path, monkeypatch, minimal):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({**minimal(), "models": {"weights_dir": "w"}})
    assert cfg.resolve_path("sam.pth") == tmp_path / "w" / "sam.pth"
    assert cfg.resolve_path(cfg.models.grounding.text_encoder) == (
        tmp_path / "w" / "bert-base-uncased"
    )
    assert cfg.resolve_path("/abs/model.pth") == Path("/abs/model.pth")
    assert cfg.resolve_path("~/m.pth") == Path(os.path.expanduser("~")) / "m.pth"
    cfg = config_from_dict({**minimal(), "models": {"weights_dir": str(tmp_path / "x")}})
    assert cfg.resolve_path("a/b.pth") == tmp_path / "x" / "a" / "b.pth"


def test_weights_dir_default_and_env(tmp_path, monkeypatch, minimal):
    # unset weights_dir: $SAA_WEIGHTS_DIR, the recorded folder, the repository's weights/ (saa.settings)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAA_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SAA_SETTINGS", str(tmp_path / "no_settings.json"))
    assert config_from_dict(minimal()).models.weights_dir is None
    assert load_config(CONFIGS / "mvtec.yaml").resolve_path("sam.pth") == REPO / "weights" / "sam.pth"
    monkeypatch.setenv("SAA_WEIGHTS_DIR", "/models/saa")
    cfg = load_config(CONFIGS / "mvtec.yaml")
    assert cfg.resolve_path(cfg.models.sam.checkpoint) == Path("/models/saa/sam_vit_h_4b8939.pth")
    # an explicit value wins over the environment; with --set it is relative to the current folder
    cfg = load_config(CONFIGS / "mvtec.yaml", ["models.weights_dir=mine"])
    assert cfg.resolve_path("a") == tmp_path / "mine" / "a"
    assert cfg.models.weights_dir == str(tmp_path / "mine")  # fixed at load: a run's config.yaml keeps it


def test_category_config_direct_use():
    cat = CategoryConfig(object="x", n_objects=2, k_mask=1, area_ratio=1)
    assert cat.prompts == [] and cat.object_max_area == 0.5
    assert SaaConfig.model_fields["categories"].is_required()
