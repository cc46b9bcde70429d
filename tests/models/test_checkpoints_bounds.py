"""Model files are data, and reading them is bounded work whatever they hold (issue 22).

* The Grounding DINO config ``.py`` is read as data (``ast``) by BOTH backends: a file that would
  create a marker if it were executed is refused in one line naming the file and the line, and
  the marker never appears; the official files give every key (compared with the package's
  SLConfig, which executes them).
* The safe loader's refusal message is found with bounded work: a few-KB checkpoint whose objects
  are shared 2**200 times, deep nesting, hostile key names, many refused types.
* Sizes declared by a config (the ``.py``, a BERT ``config.json``, a transformers folder's
  ``config.json``) are in range and fit the weights that come with them, before anything is built;
  small files (config.json, vocab.txt, tokenizer.json, the checksum sidecar) are read with a
  limit, and pipes / devices in their place are refused instead of read forever.

Every file here is written by the test.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from saa.errors import CheckpointError
from saa.models import checkpoints
from saa.models.checkpoints import check_text_encoder, check_tokenizer, load_state_dict, verify_known_checksum
from saa.models.grounding import (GroundingDetector, _find_config, check_config_values, config_namespace,
                                  read_config_py)

REPO = Path(__file__).resolve().parents[1]


class TrainingConfig:  # a class instance: refused by the safe loader
    def __init__(self):
        self.lr = 1e-4


# eight refused types (pickle finds each by its module-level name)
for _i in range(8):
    globals()[f"Cfg{_i}"] = type(f"Cfg{_i}", (), {})


def one_line(msg: str) -> str:
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def detectors():
    from saa.models.hf_grounding import HFGroundingDetector

    return {"groundingdino": GroundingDetector, "transformers": HFGroundingDetector}


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
def test_a_config_is_never_executed(tiny_models, tmp_path, backend, payload):
    cfg, marker, line = hostile_config(tiny_models, tmp_path, payload)
    with pytest.raises(CheckpointError) as e:
        detectors()[backend](cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
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
def test_anything_but_plain_values_is_refused(tmp_path, text, where, what):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(text)
    with pytest.raises(CheckpointError) as e:
        read_config_py(cfg)
    msg = one_line(str(e.value))
    assert msg.startswith(f"Grounding DINO config {cfg} {where}: ") and what in msg, msg


@pytest.mark.parametrize("kind", ["not utf-8", "NUL byte", "too large", "unary chain", "pipe", "folder"])
def test_files_that_are_not_configs_are_refused_in_one_line(tmp_path, kind):
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
def test_config_sizes_are_bounded_before_building(tiny_models, tmp_path, backend, values, what):
    cfg = tiny_config_with(tiny_models, tmp_path, **values)
    with pytest.raises(CheckpointError) as e:
        detectors()[backend](cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)
    msg = one_line(str(e.value))
    assert str(cfg) in msg and what in msg, msg


def test_a_missing_key_is_named(tiny_models, tmp_path):
    cfg = tiny_config_with(tiny_models, tmp_path, position_embedding=None)
    with pytest.raises(CheckpointError, match=r"config .*cfg\.py has no value for `position_embedding`"):
        GroundingDetector(cfg, tiny_models.grounding_checkpoint, tiny_models.text_encoder)


def bert_copy(tiny_models, tmp_path, **config) -> Path:
    """The tiny text encoder with its config.json changed (weights linked, not copied)."""
    src = Path(tiny_models.text_encoder)
    dst = tmp_path / "bert"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("backend", ["groundingdino", "transformers"])
@pytest.mark.parametrize("config,what", [
    ({"num_hidden_layers": 100_000}, "num_hidden_layers = 100000 is not an integer from 1 to 256"),
    ({"vocab_size": -1}, "vocab_size = -1 is not an integer"),
    ({"hidden_size": 16384, "intermediate_size": 262_144, "num_hidden_layers": 256},
     "describes a model of at least"),
])
def test_text_encoder_sizes_are_bounded(tiny_models, tmp_path, backend, config, what):
    bert = bert_copy(tiny_models, tmp_path, **config)
    with pytest.raises(CheckpointError) as e:
        detectors()[backend](tiny_models.grounding_config, tiny_models.grounding_checkpoint, bert)
    msg = one_line(str(e.value))
    assert str(bert / "config.json") in msg and what in msg, msg


@pytest.mark.parametrize("case", ["list", "deep", "large", "not utf-8", "no weights", "pipe vocab",
                                  "large tokenizer.json"])
def test_text_encoder_files_are_read_with_bounds(tiny_models, tmp_path, monkeypatch, case):
    bert = bert_copy(tiny_models, tmp_path)
    cfg = bert / "config.json"
    if case == "list":
        cfg.write_text("[1, 2]")
    elif case == "deep":
        cfg.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "large":
        cfg.write_text(cfg.read_text()[:-1] + " " * (2 << 20) + "}")  # valid JSON, 2 MiB
    elif case == "not utf-8":
        cfg.write_bytes(b'{"a": "\xff"}')
    elif case == "no weights":
        (bert / "model.safetensors").unlink()
    elif case == "pipe vocab":
        (bert / "vocab.txt").unlink()
        os.mkfifo(bert / "vocab.txt")
    else:
        monkeypatch.setitem(checkpoints.SMALL_FILE_LIMITS, "tokenizer.json", 1000)
    with pytest.raises(CheckpointError) as e:
        check_text_encoder(bert)
    msg = one_line(str(e.value))
    assert str(bert) in msg
    assert {"list": "holds a JSON list, not an object", "deep": "nested too deeply",
            "large": "is 2.0 MiB, more than the 1.0 MiB", "not utf-8": "is not UTF-8 text",
            "no weights": "has no weight file", "pipe vocab": "vocab.txt is not a regular file",
            "large tokenizer.json": "tokenizer.json is"}[case] in msg, msg


def test_vocab_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n\xff\xfe\n")
    with pytest.raises(CheckpointError, match=r"vocab\.txt is not UTF-8 text"):
        check_tokenizer(tmp_path, ["[PAD]", "x"])
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\r\nb\rc\n")  # lines as text mode reads them: 3
    check_tokenizer(tmp_path, ["a", "b", "c"])
    with pytest.raises(CheckpointError, match="has 2 tokens but its vocab.txt has 3"):
        check_tokenizer(tmp_path, ["a", "b"])


@pytest.fixture(scope="module")
def tiny_hf(tiny_models):
    pytest.importorskip("transformers", minversion="5")
    from saa.testing import build_tiny_hf_models

    return build_tiny_hf_models(tiny_models)


@pytest.mark.parametrize("change,what", [
    ({"decoder_layers": 100_000}, "decoder_layers = 100000 is not an integer from 1 to 64"),
    ({"backbone_config": {"window_size": 1000}}, "window_size = 1000 is not an integer from 1 to 32"),
    ({"backbone_config": {"depths": [64] * 9}}, "backbone_config.depths is not a list of 1 to 8 integers"),
    ({"backbone_config": {"mlp_ratio": 1e6}}, "backbone_config.mlp_ratio = 1000000.0 is not a number"),
    ({"backbone_config": {"embed_dim": 4096, "depths": [64] * 4, "num_heads": [64] * 4}},
     "describes a model of at least"),
    ({"text_config": {"num_hidden_layers": 100_000}}, "num_hidden_layers = 100000 is not an integer"),
])
def test_transformers_folder_config_is_bounded(tiny_hf, tmp_path, change, what):
    from saa.models.hf_grounding import HFGroundingDetector

    dst = hf_folder_with(tiny_hf, tmp_path, change)
    with pytest.raises(CheckpointError) as e:
        HFGroundingDetector(None, dst, None)
    msg = one_line(str(e.value))
    assert str(dst / "config.json") in msg and what in msg, msg


def hf_folder_with(tiny_hf, tmp_path, change: dict) -> Path:
    """The tiny transformers Grounding DINO folder with its config.json changed (files linked)."""
    src = Path(tiny_hf.grounding)
    dst = tmp_path / "folder"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    for k, v in change.items():
        if isinstance(v, dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_transformers_folder_whose_weights_lack_tensors_is_refused(tiny_hf, tmp_path):
    """transformers would fill the second decoder layer with random values (and only log it)."""
    from saa.models.hf_grounding import HFGroundingDetector

    dst = hf_folder_with(tiny_hf, tmp_path, {"decoder_layers": 2})
    with pytest.raises(CheckpointError) as e:
        HFGroundingDetector(None, dst, None)
    msg = one_line(str(e.value))
    assert f"folder {dst}: its weights do not match its config.json" in msg and "tensors missing (e.g. " in msg, msg


# ================================================================ the safe loader's message
def shared_many_times(levels: int):
    """2**levels paths to one refused object through ``levels + 1`` lists: a few KB on disk."""
    node = [TrainingConfig()]
    for _ in range(levels):
        node = [node, node]
    return node


@pytest.fixture
def visits(monkeypatch):
    """Count the objects the refusal search visits."""
    seen = []
    orig = checkpoints._HolderSearch.children
    monkeypatch.setattr(checkpoints._HolderSearch, "children", staticmethod(lambda o: seen.append(1) or orig(o)))
    return seen


def test_refusal_of_objects_shared_many_times_is_bounded(tmp_path, visits):
    p = tmp_path / "shared.pth"
    torch.save({"model": {"w": torch.ones(2)}, "meta": {"n": 1, "tree": shared_many_times(200)}}, p)
    assert p.stat().st_size < 20_000
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "entry 'meta.tree' holds" in msg and "TrainingConfig" in msg and str(p) in msg, msg
    assert len(visits) < 2_000  # each object once per entry searched, not once per path (2**200)


@pytest.mark.parametrize("bound", ["nodes", "depth"])
def test_refusal_search_stops_at_its_bounds(tmp_path, monkeypatch, visits, bound):
    p = tmp_path / "big.pth"
    if bound == "nodes":
        monkeypatch.setattr(checkpoints, "SEARCH_NODES", 100)
        tree = [{"a": i} for i in range(1000)] + [TrainingConfig()]
    else:
        monkeypatch.setattr(checkpoints, "SEARCH_DEPTH", 10)
        tree = [TrainingConfig()]
        for _ in range(50):
            tree = [tree]
    torch.save({"model": {"w": torch.ones(2)}, "x": tree}, p)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "it holds" in msg and "TrainingConfig" in msg and "the search for the entry holding it stopped" in msg
    assert len(visits) <= 101


def test_refusal_message_quotes_little_of_the_file(tmp_path):
    p = tmp_path / "names.pth"
    hostile_key = "line\nbreak " * 100
    torch.save({"model": {"w": torch.ones(2)}, hostile_key: TrainingConfig(),
                **{f"e{i}": globals()[f"Cfg{i}"]() for i in range(8)}}, p)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "entry 'line\\nbreak line" in msg and "and 4 more entries" in msg and len(msg) < 1200, msg


def test_a_large_pickle_is_not_searched(tmp_path, monkeypatch):
    p = tmp_path / "x.pth"
    torch.save({"model": {"w": torch.ones(2)}, "cfg": TrainingConfig()}, p)
    monkeypatch.setattr(checkpoints, "PICKLE_BYTES", 50)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "it holds" in msg and "TrainingConfig" in msg and "data.pkl is" in msg and "not searched" in msg, msg


# ================================================================ the checksum sidecar
@pytest.mark.parametrize("sidecar", ["pipe", "large", "garbage"])
def test_checksum_sidecar_is_read_with_a_bound(tmp_path, sidecar):
    p = tmp_path / "sam_vit_b_01ec64.pth"  # an official name with the wrong bytes
    p.write_bytes(b"not the official file")
    side = tmp_path / "sam_vit_b_01ec64.pth.sha256"
    if sidecar == "pipe":
        os.mkfifo(side)  # opening it would block for ever
    elif sidecar == "large":
        side.write_bytes(b"0" * (8 << 20))
    else:
        side.write_bytes(b"\xff" * 100)
    with pytest.raises(CheckpointError, match="does not match the official file"):
        verify_known_checksum(p)
    if sidecar != "pipe":  # a regular sidecar is rewritten with the right digest
        assert side.read_text().split("\n")[0] == checkpoints.sha256_file(p)
    else:
        assert not side.is_file()
