"""Tests of saa.config: shipped YAML files, overrides, presets, error messages, round trips."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from saa.config import (
    PRESETS,
    CategoryConfig,
    ResolvedBehaviour,
    SaaConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_property_sentence,
    register_preset,
)
from saa.errors import ConfigError, SaaError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SPEC = Path("/work/shared/SPEC.md")

MVTEC = [
    "carpet", "grid", "leather", "tile", "wood", "bottle", "cable", "capsule", "hazelnut",
    "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
]
VISA = [
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
    "pcb2", "pcb3", "pcb4", "pipe_fryum",
]
DATASETS = {
    "mvtec": ("../datasets/mvtec_anomaly_detection", MVTEC),
    "visa_public": ("../datasets/VisA_pytorch/1cls", VISA),
    "visa_challenge": ("../datasets/VisA_20220922", VISA),
    "ksdd2": ("../datasets/KSDD2", ["ksdd2"]),
    "mtd": ("../datasets/MTD", ["mtd"]),
}

# (object, n_objects, k_mask, area_ratio, own prompts) copied from SPEC §6 by hand.
EXPECTED = {
    "mvtec": {
        "bottle": ("bottle,", 1, 5, 0.3, [("broken part. contamination. white broken.", "bottle")]),
        "metal_nut": (
            "metal_nut,", 1, 5, 1.0,
            [("blue defect. black defect. red defect. scratch.", "nut")],
        ),
        "screw": ("screw,", 1, 5, 0.1, [("defect.", "screw")]),
        "carpet": (
            "carpet,", 1, 5, 0.9,
            [("black hole", "carpet"), ("thread", "carpet"), ("defect.", "carpet")],
        ),
        "capsule": ("capsule,", 1, 5, 0.6, [("white crack. hole.", "capsule")]),
    },
    "visa": {
        "candle": (
            "candle,", 4, 1, 0.3,
            [("color defect. hole. black defect. wick hole. spot. ", "candle")],
        ),
        "capsules": (
            "capsule,", 20, 15, 1.0,
            [("black melt. dark liquid.", "capsules"), ("bubble", "capsules")],
        ),
        "chewinggum": (
            "chewinggum", 1, 50, 0.2,
            [("crack. yellow defect. color defect. black defect. thread.", "chewinggum")],
        ),
        "macaroni2": (
            "macaroni,", 4, 50, 0.3,
            [
                ("broken part. red defect. black defect. crack. hole. scratch.", "macaroni"),
                ("edge. spot. chip.", "macaroni"),
            ],
        ),
        "cashew": (
            "cashew,", 1, 17, 0.05,
            [
                ("yellow defect. black defect. small holes. scratch. breakage. crack.", "cashew"),
                ("small spot.", "cashew"),
            ],
        ),
        "fryum": (
            "fryum,", 1, 5, 1.0,
            [(
                "broken part. purple defect. black defect. red defect. color defect. "
                "color crack. break",
                "fryum",
            )],
        ),
        "pcb1": (
            "printed_circuit_board,", 1, 1, 0.3,
            [
                ("bent wire on pcb", "pcb"), ("white scratch on pcb", "pcb"),
                ("white defect on pcb", "pcb"), ("white circle.", "pcb"),
            ],
        ),
        "pipe_fryum": (
            "pipe_fryum,", 1, 19, 0.3,
            [("broken part. red defect. black defect. crack. hole. scratch.", "fryum")],
        ),
    },
    "ksdd2": {"ksdd2": ("ksdd2,", 1, 5, 0.9, [("black hole.", "ksdd2"), ("defect.", "ksdd2")])},
    "mtd": {
        "mtd": (
            "mtd,", 1, 5, 0.9,
            [("black hole. blow hole. break. crack. fray. uneven.", "mtd"), ("defect.", "mtd")],
        )
    },
}
EXPECTED_FOR = {
    "mvtec": "mvtec", "visa_public": "visa", "visa_challenge": "visa", "ksdd2": "ksdd2",
    "mtd": "mtd",
}

SENTENCE = (
    "the image of bottle have 1 dissimilar bottle, with a maximum of 5 anomaly. "
    "The anomaly would not exceed 0.3 object area. "
)


def minimal(**category) -> dict:
    cat = dict(object="thing,", n_objects=1, k_mask=5, area_ratio=0.5)
    cat.update(category)
    return {"categories": {"thing": cat}}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Shipped configs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_shipped_config_loads_with_all_categories(kind):
    cfg = load_config(CONFIGS / f"{kind}.yaml")
    root, names = DATASETS[kind]
    assert list(cfg.categories) == names
    assert cfg.dataset.kind == kind
    assert cfg.dataset.root == root
    assert cfg.preset == "official"
    assert cfg.out_size == 400
    g = cfg.models.grounding
    assert (g.config, g.checkpoint, g.text_encoder) == (
        "GroundingDINO_SwinT_OGC.py", "groundingdino_swint_ogc.pth", "bert-base-uncased",
    )
    assert (g.box_threshold, g.text_threshold) == (0.1, 0.1)
    assert cfg.models.sam.checkpoint == "sam_vit_h_4b8939.pth"
    assert cfg.models.saliency.backbone == "wide_resnet50_2"
    assert cfg.models.saliency.checkpoint == "wide_resnet50_2.pth"
    assert cfg.models.saliency.stages == [1, 2, 3]
    assert cfg.models.device == "cpu"
    assert cfg.general_prompts == [
        ("defect on {c}", "{c}"), ("damage on {c}", "{c}"), ("flaw on {c}", "{c}"),
    ]
    assert cfg.resolved_behaviour() == ResolvedBehaviour(**PRESETS["official"])


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_shipped_config_values_match_spec_tables(kind):
    cfg = load_config(CONFIGS / f"{kind}.yaml")
    expected = EXPECTED[EXPECTED_FOR[kind]]
    for name, (obj, n, k, area, prompts) in expected.items():
        cat = cfg.category(name)
        assert cat.object == obj, name
        assert cat.n_objects == n, name
        assert cat.k_mask == k, name
        assert cat.area_ratio == pytest.approx(area), name
        assert [tuple(p) for p in cat.prompts] == prompts, name


def test_object_words_and_captions_kept_exactly():
    visa = load_config(CONFIGS / "visa_public.yaml")
    assert visa.category("candle").prompts[0][0].endswith("spot. ")
    assert visa.category("chewinggum").object == "chewinggum"
    assert all(
        cat.object.endswith(",") for name, cat in visa.categories.items() if name != "chewinggum"
    )
    mvtec = load_config(CONFIGS / "mvtec.yaml")
    assert all(cat.object == f"{name}," for name, cat in mvtec.categories.items())


def test_visa_challenge_has_same_categories_as_visa_public():
    public = load_config(CONFIGS / "visa_public.yaml")
    challenge = load_config(CONFIGS / "visa_challenge.yaml")
    assert public.categories == challenge.categories


def _spec_rows():
    """Every category row of SPEC §6 as name -> (object, n, k, area, prompts)."""
    text = SPEC.read_text(encoding="utf-8")
    sec = text[text.index("## 6."):text.index("## 7.")]
    rows = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[2].isdigit():
            prompts = re.findall(r"`([^`]*)`→(\w+)", cells[1])
            obj = re.match(r"`([^`]*)`", cells[3]).group(1)
            rows[cells[0]] = (obj, int(cells[2]), int(cells[4]), float(cells[5]), prompts)
    for name in ("ksdd2", "mtd"):
        part = sec[sec.index(f"### {name.upper()}"):]
        part = part[: part.index("\n\n")]
        m = re.search(r"n (\d+), object word `([^`]*)`,\s*K (\d+), θ_area (\d+(?:\.\d+)?)", part)
        rows[name] = (
            m.group(2), int(m.group(1)), int(m.group(3)), float(m.group(4)),
            re.findall(r"`([^`]*)`→(\w+)", part),
        )
    return rows


@pytest.mark.skipif(not SPEC.exists(), reason="SPEC.md not available")
def test_every_category_matches_spec_markdown():
    rows = _spec_rows()
    assert len(rows) == 15 + 12 + 2
    seen = set()
    for kind in DATASETS:
        cfg = load_config(CONFIGS / f"{kind}.yaml")
        for name, cat in cfg.categories.items():
            obj, n, k, area, prompts = rows[name]
            got = (cat.object, cat.n_objects, cat.k_mask, cat.area_ratio, list(cat.prompts))
            assert got == (obj, n, k, area, prompts), (kind, name)
            seen.add(name)
    assert seen == set(rows)


def test_shipped_yaml_quotes_strings_that_yaml_would_change():
    text = (CONFIGS / "visa_public.yaml").read_text()
    assert '"color defect. hole. black defect. wick hole. spot. "' in text
    assert '"chewinggum"' in text


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------


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


def test_language_prompts_with_custom_general_prompts_and_empty_own_prompts():
    data = minimal()
    data["general_prompts"] = [["scratch on {c}", "{c}"], ["dent", "x"]]
    cfg = config_from_dict(data)
    assert cfg.language_prompts("thing") == [("scratch on thing", "thing"), ("dent", "x")]
    data["general_prompts"] = []
    assert config_from_dict(data).language_prompts("thing") == []


def test_unknown_category_names_closest_and_available():
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


# ---------------------------------------------------------------------------------------------
# Presets and behaviour
# ---------------------------------------------------------------------------------------------


def test_preset_official_and_paper():
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


def test_explicit_behaviour_wins_over_preset():
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


def test_unknown_preset_and_registering_one():
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


def test_behaviour_values_are_validated():
    msg = error_of(
        config_from_dict,
        {**minimal(), "behaviour": {"saliency_neighbors": "closest", "single_object_size": 16}},
    )
    assert "behaviour.saliency_neighbors" in msg and "'farthest'" in msg and "'nearest'" in msg
    assert "behaviour.single_object_size" in msg and "at least 32" in msg


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


def test_override_new_category_reports_missing_fields():
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
def test_malformed_overrides(bad):
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", [bad])
    assert repr(bad) in msg


def test_override_value_errors_name_the_override():
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", ["models.grounding.box_threshold=2"])
    assert "models.grounding.box_threshold" in msg
    assert "must be between 0 and 1" in msg
    assert "--set models.grounding.box_threshold=2" in msg
    msg = error_of(load_config, CONFIGS / "ksdd2.yaml", ["out_size=[1, 2"])
    assert "out_size=[1, 2" in msg


# ---------------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "preset: official\nout_size: 400\nmodels:\n  device: [cpu\n")
    msg = error_of(load_config, path)
    assert str(path) in msg
    assert re.search(r"line \d+", msg)
    path = write(tmp_path, "preset: official\ncategories:\n  a: {object: x\n  b: 1\n", "b.yaml")
    msg = error_of(load_config, path)
    assert "b.yaml" in msg and "line" in msg


def test_yaml_tab_error_line_number(tmp_path):
    path = write(tmp_path, "preset: official\nout_size: 400\n\tmodels: {}\n")
    assert "line 3" in error_of(load_config, path)


def test_duplicate_key_is_an_error(tmp_path):
    text = (
        "categories:\n"
        "  a: {object: x, n_objects: 1, k_mask: 1, area_ratio: 1}\n"
        "  a: {object: y, n_objects: 1, k_mask: 1, area_ratio: 1}\n"
    )
    msg = error_of(load_config, write(tmp_path, text))
    assert "duplicate key 'a'" in msg and "line 3" in msg and "line 2" in msg


def test_unknown_key_suggests_the_right_one(tmp_path):
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


def test_wrong_type_and_range_messages():
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


def test_literal_choices_listed():
    msg = error_of(config_from_dict, {**minimal(), "behaviour": {"area_rule": "mask"}})
    assert "behaviour.area_rule: must be one of 'boxes' or 'masks' (got 'mask')" in msg
    msg = error_of(config_from_dict, minimal(similar="same"))
    assert "categories.thing.similar" in msg and "'dissimilar'" in msg


def test_missing_required_fields_named():
    msg = error_of(config_from_dict, {})
    assert "categories: required field is missing" in msg
    msg = error_of(config_from_dict, {"categories": {}})
    assert "categories: at least one category is required" in msg
    msg = error_of(config_from_dict, {"categories": {"c": {"object": "c,"}}})
    assert "categories.c.n_objects: required field is missing" in msg
    assert "categories.c.k_mask: required field is missing" in msg


def test_file_level_errors(tmp_path):
    assert "not found" in error_of(load_config, tmp_path / "missing.yaml")
    assert "empty" in error_of(load_config, write(tmp_path, "# nothing\n"))
    assert "mapping" in error_of(load_config, write(tmp_path, "- a\n- b\n"))
    assert "folder" in error_of(load_config, tmp_path)


def test_no_pydantic_error_leaks(tmp_path):
    path = write(tmp_path, "categories: 3\nmodels: {grounding: {box_threshold: x}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.__suppress_context__ or info.value.__cause__ is None
    body = str(info.value).split("\n", 1)[1]  # the header holds tmp_path (test name)
    assert "pydantic" not in body and "Input should be" not in body
    assert "models.grounding.box_threshold: must be a number (got 'x')" in body


def test_empty_sections_take_defaults(tmp_path):
    path = write(
        tmp_path,
        "behaviour:\nmodels:\n  sam:\ndataset:\ncategories:\n"
        "  a: {object: 'a,', n_objects: 1, k_mask: 1, area_ratio: 1}\n",
    )
    cfg = load_config(path, ["behaviour.fusion_delta=0"])
    assert cfg.models.sam.checkpoint == "sam_vit_h_4b8939.pth"
    assert cfg.resolved_behaviour().fusion_delta == 0.0


# ---------------------------------------------------------------------------------------------
# Property sentence
# ---------------------------------------------------------------------------------------------


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
def test_bad_property_sentence(sentence):
    msg = error_of(parse_property_sentence, sentence)
    assert repr(sentence) in msg


def test_property_sentence_in_yaml(tmp_path):
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
# Paths
# ---------------------------------------------------------------------------------------------


def test_resolve_path(tmp_path, monkeypatch):
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


def test_weights_dir_default_and_env(tmp_path, monkeypatch):
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


# ---------------------------------------------------------------------------------------------
# YAML round trip
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_to_yaml_round_trip_shipped(kind, tmp_path):
    cfg = load_config(CONFIGS / f"{kind}.yaml")
    text = cfg.to_yaml(comment="resolved config\nof a run")
    assert text.startswith("# resolved config\n# of a run\n")
    again = load_config(write(tmp_path, text))
    assert again == cfg
    raw = yaml.safe_load(text)
    first = next(iter(raw["categories"].values()))
    assert all(isinstance(p, list) and len(p) == 2 for p in first["prompts"])


def test_to_yaml_round_trip_tricky_strings(tmp_path):
    data = minimal(
        object="no", prompts=[["yes", "null"], [" lead", "trail "], ["1.0", "a: b"], ["#x", "{c}"]]
    )
    data["behaviour"] = {"rescore_gamma": 0.5, "sam_color_order": "rgb"}
    data["dataset"] = {"kind": "mvtec", "root": "/data", "options": {"split": "train", "n": 3}}
    data["models"] = {"device": "auto", "weights_dir": "~/w"}
    cfg = config_from_dict(data)
    again = load_config(write(tmp_path, cfg.to_yaml()))
    assert again == cfg
    assert again.category("thing").prompts[1] == (" lead", "trail ")
    assert again.resolved_behaviour() == cfg.resolved_behaviour()


# ---------------------------------------------------------------------------------------------
# Property-based tests
# ---------------------------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    box=unit,
    text=unit,
    k=st.integers(min_value=1, max_value=10_000),
    n=st.integers(min_value=1, max_value=500),
    area=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
    gamma=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
def test_valid_values_round_trip_through_overrides_and_yaml(box, text, k, n, area, gamma):
    base = yaml.safe_load((CONFIGS / "ksdd2.yaml").read_text())
    overrides = [
        f"models.grounding.box_threshold={box!r}",
        f"models.grounding.text_threshold={text!r}",
        f"categories.ksdd2.k_mask={k}",
        f"categories.ksdd2.n_objects={n}",
        f"categories.ksdd2.area_ratio={area!r}",
        f"behaviour.rescore_gamma={gamma!r}",
    ]
    cfg = config_from_dict(base, overrides)
    assert cfg.models.grounding.box_threshold == box
    assert cfg.models.grounding.text_threshold == text
    cat = cfg.category("ksdd2")
    assert (cat.k_mask, cat.n_objects, cat.area_ratio) == (k, n, area)
    assert math.isclose(cat.object_max_area, 1 / n)
    assert cfg.resolved_behaviour().rescore_gamma == gamma
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


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
def test_out_of_range_floats_rejected_with_path(field, value):
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
def test_non_positive_ints_rejected_with_path(field, value):
    base = yaml.safe_load((CONFIGS / "ksdd2.yaml").read_text())
    msg = error_of(config_from_dict, base, [f"{field}={value}"])
    assert f"{field}: must be at least 1 (got {value})" in msg


def test_category_config_direct_use():
    cat = CategoryConfig(object="x", n_objects=2, k_mask=1, area_ratio=1)
    assert cat.prompts == [] and cat.object_max_area == 0.5
    assert SaaConfig.model_fields["categories"].is_required()
