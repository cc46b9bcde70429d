"""Model files are data, and reading them is bounded work whatever they hold (saa.models.checkpoints,
issue 22; the Grounding DINO config ``.py`` is tests/models/test_grounding_config.py).

* The safe loader's refusal message is found with bounded work: a few-KB checkpoint whose objects
  are shared 2**200 times, deep nesting, hostile key names, many refused types.
* Sizes declared by a BERT ``config.json`` or a transformers folder's ``config.json`` are in range
  and fit the weights that come with them, before anything is built; small files (config.json,
  vocab.txt, tokenizer.json, the checksum sidecar) are read with a limit, and pipes / devices in
  their place are refused instead of read forever.

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


class TrainingConfig:  # a class instance: refused by the safe loader
    def __init__(self):
        self.lr = 1e-4


# eight refused types (pickle finds each by its module-level name)
for _i in range(8):
    globals()[f"Cfg{_i}"] = type(f"Cfg{_i}", (), {})


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
def test_text_encoder_sizes_are_bounded(tiny_models, tmp_path, backend, config, what, grounding_detectors, one_line):
    bert = bert_copy(tiny_models, tmp_path, **config)
    with pytest.raises(CheckpointError) as e:
        grounding_detectors()[backend](tiny_models.grounding_config, tiny_models.grounding_checkpoint, bert)
    msg = one_line(str(e.value))
    assert str(bert / "config.json") in msg and what in msg, msg


@pytest.mark.parametrize("case", ["list", "deep", "large", "not utf-8", "no weights", "pipe vocab",
                                  "large tokenizer.json"])
def test_text_encoder_files_are_read_with_bounds(tiny_models, tmp_path, monkeypatch, case, one_line):
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
def test_transformers_folder_config_is_bounded(tiny_hf, tmp_path, change, what, one_line):
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


def test_transformers_folder_whose_weights_lack_tensors_is_refused(tiny_hf, tmp_path, one_line):
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


def test_refusal_of_objects_shared_many_times_is_bounded(tmp_path, visits, one_line):
    p = tmp_path / "shared.pth"
    torch.save({"model": {"w": torch.ones(2)}, "meta": {"n": 1, "tree": shared_many_times(200)}}, p)
    assert p.stat().st_size < 20_000
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "entry 'meta.tree' holds" in msg and "TrainingConfig" in msg and str(p) in msg, msg
    assert len(visits) < 2_000  # each object once per entry searched, not once per path (2**200)


@pytest.mark.parametrize("bound", ["nodes", "depth"])
def test_refusal_search_stops_at_its_bounds(tmp_path, monkeypatch, visits, bound, one_line):
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


def test_refusal_message_quotes_little_of_the_file(tmp_path, one_line):
    p = tmp_path / "names.pth"
    hostile_key = "line\nbreak " * 100
    torch.save({"model": {"w": torch.ones(2)}, hostile_key: TrainingConfig(),
                **{f"e{i}": globals()[f"Cfg{i}"]() for i in range(8)}}, p)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = one_line(str(e.value))
    assert "entry 'line\\nbreak line" in msg and "and 4 more entries" in msg and len(msg) < 1200, msg


def test_a_large_pickle_is_not_searched(tmp_path, monkeypatch, one_line):
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
