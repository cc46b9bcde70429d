"""Reading a config (saa.config.loading): the shipped YAML files load with every category and the
values of the SPEC's tables, strings kept exactly, and each reads back from ``to_yaml`` unchanged;
file-level errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from saa.config import PRESETS, ResolvedBehaviour, load_config

from tests.conftest import REPO


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


def test_file_level_errors(tmp_path, error_of, write):
    assert "not found" in error_of(load_config, tmp_path / "missing.yaml")
    assert "empty" in error_of(load_config, write(tmp_path, "# nothing\n"))
    assert "mapping" in error_of(load_config, write(tmp_path, "- a\n- b\n"))
    assert "folder" in error_of(load_config, tmp_path)


@pytest.mark.parametrize("kind", sorted(DATASETS))
def test_to_yaml_round_trip_shipped(kind, tmp_path, write):
    cfg = load_config(CONFIGS / f"{kind}.yaml")
    text = cfg.to_yaml(comment="resolved config\nof a run")
    assert text.startswith("# resolved config\n# of a run\n")
    again = load_config(write(tmp_path, text))
    assert again == cfg
    raw = yaml.safe_load(text)
    first = next(iter(raw["categories"].values()))
    assert all(isinstance(p, list) and len(p) == 2 for p in first["prompts"])
