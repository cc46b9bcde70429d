"""The Grounding DINO config ``.py`` (saa.models.grounding) is data, read by both backends without
executing it: a hostile file is refused in one line naming the file and the line and its payload
never runs; the official files give every key; the sizes it declares are bounded before anything is
built (issue 22)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from saa.errors import CheckpointError
from saa.models.grounding import GroundingDetector, _find_config, check_config_values, config_namespace, read_config_py

from tests.conftest import REPO


# ================================================================ config .py: data, never run
PAYLOADS = {  # what a hostile config does when executed: create the marker folder
    "call": "batch_size = __import__('os').makedirs({m!r})",
    "import": "import os\nos.makedirs({m!r})",
    "f-string": "modelname = f\"{{__import__('os').makedirs({m!r})}}\"",
    "attribute": "backbone = __import__('os').makedirs.__call__({m!r})",
    "comprehension": "dropout = [__import__('os').makedirs({m!r}) for _ in [0]]",
    "class": "class C:\n    __import__('os').makedirs({m!r})",
}


def hostile_config(tiny_models, tmp_path, payload: str) -> tuple[Path, Path, int]:
    marker = tmp_path / "executed"
    text = Path(tiny_models.grounding_config).read_text()
    cfg = tmp_path / "hostile_cfg.py"
    cfg.write_text(text + PAYLOADS[payload].format(m=str(marker)) + "\n")
    return cfg, marker, len(text.splitlines()) + 1


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_the_payloads_are_live_when_executed(tiny_models, tmp_path, payload):
    """Control: the package's SLConfig (what the groundingdino backend used) runs each file."""
    from groundingdino.util.slconfig import SLConfig

    cfg, marker, _ = hostile_config(tiny_models, tmp_path, payload)
    try:
        SLConfig.fromfile(str(cfg))
    except Exception:  # noqa: BLE001 - some payloads leave a value SLConfig cannot format
        pass
    assert marker.exists()


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("backend", ["groundingdino", "transformers"])
def test_a_config_is_never_executed(tiny_models, tmp_path, backend, payload, grounding_detectors, one_line):
    cfg, marker, line = hostile_config(tiny_models, tmp_path, payload)
    with pytest.raises(CheckpointError) as e:
        grounding_detectors()[backend](cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    msg = one_line(str(e.value))
    assert msg.startswith(f"Grounding DINO config {cfg} line {line}: ") and "is not a plain value" in msg, msg
    assert not marker.exists()


def test_cli_names_the_file_and_line_and_runs_nothing(tiny_models, tmp_path, capsys):
    from saa.cli import main
    from saa.testing import tiny_config_overrides

    cfg, marker, line = hostile_config(tiny_models, tmp_path, "import")
    args = ["predict", "--config", str(REPO / "configs" / "mvtec.yaml"), "--category", "bottle",
            "--out", str(tmp_path / "out"), "--panels", "none", str(REPO / "assets" / "samples" / "hazelnut_crack.jpg")]
    for s in tiny_config_overrides(tiny_models) + [f"models.grounding.config={cfg}"]:
        args += ["--set", s]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"saa: error: Grounding DINO config {cfg} line {line}: an import "
                                               f"(import os) is not a plain value"), err
    assert not marker.exists()


@pytest.mark.parametrize("name", ["GroundingDINO_SwinT_OGC.py", "GroundingDINO_SwinB_cfg.py"])
def test_official_configs_give_every_key_as_data(tmp_path, name):
    """The bare official name (not in the weights folder) resolves to the package's own copy; read as
    data it gives exactly what SLConfig gives by executing it (every key, the same values), and the
    args namespace for the package's builder carries all of them."""
    from groundingdino.util.slconfig import SLConfig

    path = _find_config(tmp_path / name)
    assert path.is_file() and path.parent.name == "config" and path.parent.parent.name == "groundingdino"
    values = read_config_py(path)
    expected = SLConfig.fromfile(str(path))._cfg_dict.to_dict()
    assert values == expected and len(values) == 43
    assert vars(config_namespace(values)) == expected
    check_config_values(values, path)


def test_plain_values_are_read(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text('"""A docstring."""\n# a comment\na = b = 1\nneg = -2.5\nnested = {"k": [1, (2, None)], 3: True}\n'
                   '__version__ = "x"\ns = {1, 2}\nbig = 1e400\n')
    assert read_config_py(cfg) == {"a": 1, "b": 1, "neg": -2.5, "nested": {"k": [1, (2, None)], 3: True},
                                   "s": {1, 2}, "big": float("inf")}


CONFIG_CASES = [  # (file text, where, what the message says)
    ("x = 1\nimport os\n", "line 2", "an import (import os) is not a plain value"),
    ("x = os.sep\n", "line 1", "an attribute access (os.sep) is not a plain value"),
    ("x = set()\n", "line 1", "a function call (set()) is not a plain value"),
    ("x = f'{1}'\n", "line 1", "an f-string"),
    ("x = 1 + 2\n", "line 1", "an operation (1 + 2)"),
    ("x = y\n", "line 1", "a name (y)"),
    ("x.y = 1\n", "line 1", "an assignment to something other than a name (x.y)"),
    ("x, y = 1, 2\n", "line 1", "an assignment to something other than a name"),
    ("x = 1\nx += 1\n", "line 2", "an augmented assignment"),
    ("x: int = 1\n", "line 1", "an annotated assignment"),
    ("x = {**{}}\n", "line 1", "a ** expansion"),
    ("x = 1\nprint(x)\n", "line 2", "a function call (print(x))"),
    ("_base_ = ['a.py']\n", "line 1", "`_base_` (inheriting from another config file) is not supported"),
    ("x = " + "[" * 25 + "]" * 25 + "\n", "line 1", "nested more than 20 levels deep"),
    ("x = " + "[" * 300 + "]" * 300 + "\n", "line 1", "not valid Python syntax (too many nested parentheses)"),
    ("x = (1\n", "line 1", "not valid Python syntax"),
    ("x = {[1]: 2}\n", "line 1", "the value cannot be built (unhashable type: 'list')"),
]


@pytest.mark.parametrize("text,where,what", CONFIG_CASES, ids=[c[2][:30] for c in CONFIG_CASES])
def test_anything_but_plain_values_is_refused(tmp_path, text, where, what, one_line):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(text)
    with pytest.raises(CheckpointError) as e:
        read_config_py(cfg)
    msg = one_line(str(e.value))
    assert msg.startswith(f"Grounding DINO config {cfg} {where}: ") and what in msg, msg


@pytest.mark.parametrize("kind", ["not utf-8", "NUL byte", "too large", "unary chain", "pipe", "folder"])
def test_files_that_are_not_configs_are_refused_in_one_line(tmp_path, kind, one_line):
    cfg = tmp_path / "cfg.py"
    if kind == "pipe":
        os.mkfifo(cfg)  # reading it would block for ever
    elif kind == "folder":
        cfg.mkdir()
    else:
        cfg.write_bytes({"not utf-8": b"x = '\xff'\n", "NUL byte": b"x = 1\x00\n",
                         "too large": b"x = 1\n" + b"#" * (1 << 20),
                         "unary chain": b"x = " + b"- " * 200_000 + b"1\n"}[kind])
    with pytest.raises(CheckpointError) as e:
        read_config_py(cfg)
    msg = one_line(str(e.value))
    assert str(cfg) in msg
    assert {"not utf-8": "is not UTF-8 text", "NUL byte": "cannot be parsed", "too large": "more than the 1.0 MiB",
            "unary chain": "cannot be parsed", "pipe": "is not a regular file",
            "folder": "should be a file but is a folder"}[kind] in msg, msg


# ================================================================ sizes a config declares
def tiny_config_with(tiny_models, tmp_path, **values) -> Path:
    lines = [ln for ln in Path(tiny_models.grounding_config).read_text().splitlines()
             if ln.split(" = ")[0] not in values]
    cfg = tmp_path / "cfg.py"
    cfg.write_text("\n".join(lines + [f"{k} = {v!r}" for k, v in values.items() if v is not None]) + "\n")
    return cfg


@pytest.mark.parametrize("backend", ["groundingdino", "transformers"])
@pytest.mark.parametrize("values,what", [
    ({"num_queries": 1_000_000_000}, "num_queries = 1000000000 is not an integer from 1 to 100000"),
    ({"hidden_dim": "256"}, "hidden_dim = '256' is not an integer from 1 to 4096"),
    ({"enc_layers": True}, "enc_layers = True is not an integer from 1 to 64"),
    # each number in range, together 2 billion parameters: refused before anything is built
    ({"enc_layers": 64, "dim_feedforward": 65536}, "describes a detector of at least"),
])
def test_config_sizes_are_bounded_before_building(tiny_models, tmp_path, backend, values, what, grounding_detectors,
                                                  one_line):
    cfg = tiny_config_with(tiny_models, tmp_path, **values)
    with pytest.raises(CheckpointError) as e:
        grounding_detectors()[backend](cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    msg = one_line(str(e.value))
    assert str(cfg) in msg and what in msg, msg


def test_a_missing_key_is_named(tiny_models, tmp_path):
    cfg = tiny_config_with(tiny_models, tmp_path, position_embedding=None)
    with pytest.raises(CheckpointError, match=r"config .*cfg\.py has no value for `position_embedding`"):
        GroundingDetector(cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
