"""YAML in and out (saa.config.yaml_text): syntax errors named with file and line, duplicate keys,
alias bombs, recursive and deeply nested documents and oversized files refused quickly in one short
line; ``config.yaml`` written so that every value reads back the same."""
from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from saa.config import config_from_dict, load_config
from saa.errors import ConfigError

from tests.conftest import REPO


MVTEC_CFG = REPO / "configs" / "mvtec.yaml"
CONFIGS = REPO / "configs"


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


# ---------------------------------------------------------------------------------------------
# the loader: input size, alias bombs, nesting


_LAUGHS = "[" + ", ".join(["&a0 [" + ", ".join(['"lol"'] * 9) + "]"] + [
    f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "]"


#: < 1 KB, 9^10 strings once the aliases are copied out; the value goes to a real key
BILLION_LAUGHS = ("categories: {x: {object: o, n_objects: 1, k_mask: 1, area_ratio: 0.5}}\n"
                  f"dataset: {{options: {{category: {_LAUGHS}}}}}\n")


def _limited_python(code: str, mem_gib: int = 4, timeout: int = 120):
    """Run ``code`` in a Python process limited to ``mem_gib`` of address space, so that a
    regression fails the test (MemoryError / killed) instead of exhausting the machine."""
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_gib << 30, mem_gib << 30))

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                       preexec_fn=limit)
    return r, time.perf_counter() - t0


_LOAD = """
import sys, time
from saa.config import load_config
from saa.errors import ConfigError
t0 = time.perf_counter()
try:
    load_config(sys.argv[1] if len(sys.argv) > 1 else {path!r}, {overrides!r})
except ConfigError as e:
    print(f"{{time.perf_counter() - t0:.3f}}"); print(e); sys.exit(3)
sys.exit(0)
"""


def test_alias_bomb_refused_quickly_with_a_short_message(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BILLION_LAUGHS)
    assert p.stat().st_size < 1024
    r, _ = _limited_python(_LOAD.format(path=str(p), overrides=[]))
    assert r.returncode == 3, r.stderr[-2000:]
    seconds, msg = r.stdout.split("\n", 1)
    assert float(seconds) < 3.0
    assert len(msg) < 400 and "alias" in msg and str(p) in msg and "lol" not in msg
    # the same through --set
    r, _ = _limited_python(_LOAD.format(path=str(MVTEC_CFG), overrides=["dataset.options.category=" + _LAUGHS]))
    assert r.returncode == 3 and "alias" in r.stdout and len(r.stdout) < 600, r.stderr[-2000:]


def test_recursive_and_deep_yaml_refused(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text("a: &a [*a]\ncategories: {}\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_config(p)
    p.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(p)


def test_config_input_size_bounded(tmp_path):
    r, _ = _limited_python(_LOAD.format(path="/dev/zero", overrides=[]), mem_gib=2, timeout=60)
    assert r.returncode == 3, r.stderr[-2000:]
    seconds, msg = r.stdout.split("\n", 1)
    assert float(seconds) < 3.0 and "larger than 1 MB" in msg and msg.count("\n") == 1
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_config(big)
    code = "import sys; from saa.cli import main; sys.exit(main(['run', '/dev/zero', '--out', %r]))" % str(
        tmp_path / "never")
    r, _ = _limited_python(code, mem_gib=6, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "larger than 1 MB" in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# syntax errors, duplicate keys


def test_yaml_syntax_error_names_file_and_line(tmp_path, error_of, write):
    path = write(tmp_path, "preset: official\nout_size: 400\nmodels:\n  device: [cpu\n")
    msg = error_of(load_config, path)
    assert str(path) in msg
    assert re.search(r"line \d+", msg)
    path = write(tmp_path, "preset: official\ncategories:\n  a: {object: x\n  b: 1\n", "b.yaml")
    msg = error_of(load_config, path)
    assert "b.yaml" in msg and "line" in msg


def test_yaml_tab_error_line_number(tmp_path, error_of, write):
    path = write(tmp_path, "preset: official\nout_size: 400\n\tmodels: {}\n")
    assert "line 3" in error_of(load_config, path)


def test_duplicate_key_is_an_error(tmp_path, error_of, write):
    text = (
        "categories:\n"
        "  a: {object: x, n_objects: 1, k_mask: 1, area_ratio: 1}\n"
        "  a: {object: y, n_objects: 1, k_mask: 1, area_ratio: 1}\n"
    )
    msg = error_of(load_config, write(tmp_path, text))
    assert "duplicate key 'a'" in msg and "line 3" in msg and "line 2" in msg


# ---------------------------------------------------------------------------------------------
# round trips: to_yaml and back


def test_to_yaml_round_trip_tricky_strings(tmp_path, minimal, write):
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
