"""Checkpoint loading (saa.models.checkpoints). Checkpoints as official files really come: tensors plus
an epoch number, optimizer state, an ``argparse.Namespace`` of training arguments, numpy scalars. They
load under ``weights_only=True`` through saa's explicit allow-list; anything else fails with one line
naming the file and the entry, and a crafted pickle never runs. Missing, truncated and mismatched
files (another model's weights) and a known file name with the wrong checksum are named.
Every file here is synthetic (written by the test), built around the tiny SAM / Grounding DINO
weights so the real loaders run on them."""
from __future__ import annotations

import argparse
import collections
import os
import pickle

import numpy as np
import pytest
import torch

from saa.errors import CheckpointError
from saa.models.checkpoints import load_state_dict, safe_globals


class TrainingConfig:  # not on the allow-list: unpickling a class instance could run code
    def __init__(self):
        self.lr = 1e-4


class Exploit:
    """Unpickling this would call os.system: the safe loader must never do it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def training_extras():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-4)
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    return {"epoch": 11, "optimizer": opt.state_dict(),
            "args": argparse.Namespace(lr=1e-4, backbone="swin_T_224_1k", epochs=12, dims=[256, 256], amp=False),
            "best_ap": np.float64(0.487), "step": np.int64(12345)}


@pytest.fixture(scope="module")
def tiny_sam_sd(tiny_models):
    return torch.load(tiny_models.sam_checkpoint, map_location="cpu", weights_only=True)


def test_allow_list_is_explicit_and_small():
    names = {f"{t.__module__}.{t.__qualname__}" for t in safe_globals()}
    assert "argparse.Namespace" in names
    assert not any(n.startswith(("builtins.eval", "os.", "subprocess.", "posix.")) for n in names)


def test_official_style_sam_file_loads(tiny_models, tiny_sam_sd, tmp_path):
    from saa.models.sam import load_sam

    p = tmp_path / "sam_with_training_state.pth"
    torch.save({"model": tiny_sam_sd, **training_extras()}, p)
    obj = load_state_dict(p, "SAM checkpoint")
    assert obj["epoch"] == 11 and obj["args"].backbone == "swin_T_224_1k" and obj["best_ap"] == pytest.approx(0.487)
    assert isinstance(obj["optimizer"]["state"][0]["exp_avg"], torch.Tensor)
    sam, arch = load_sam(p)
    ref, _ = load_sam(tiny_models.sam_checkpoint)
    for (k, a), (_, b) in zip(sam.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


def test_official_style_grounding_file_loads_in_both_backends(tiny_models, tmp_path):
    pytest.importorskip("transformers", minversion="5")
    from saa.models.grounding import GroundingDetector
    from saa.models.hf_grounding import load_hf_grounding

    sd = torch.load(tiny_models.grounding_checkpoint, map_location="cpu", weights_only=True)["model"]
    p = tmp_path / "groundingdino_with_args.pth"
    # DataParallel-style "module." prefixes, as some released files have, plus training state
    torch.save({"model": collections.OrderedDict((f"module.{k}", v) for k, v in sd.items()), **training_extras()}, p)
    det = GroundingDetector(tiny_models.grounding_config, p, tiny_models.text_encoder)
    assert torch.equal(det.model.state_dict()["transformer.level_embed"], sd["transformer.level_embed"])
    model, _ = load_hf_grounding(tiny_models.grounding_config, p, tiny_models.text_encoder)
    assert torch.equal(model.state_dict()["model.level_embed"], sd["transformer.level_embed"])


@pytest.mark.parametrize("where", ["top", "nested", "namespace"])
def test_refused_entry_is_named_in_one_line(tiny_sam_sd, tmp_path, where):
    p = tmp_path / f"bad_{where}.pth"
    extra = {"top": {"config": TrainingConfig()},
             "nested": {"meta": {"cfg": TrainingConfig(), "n": 1}},
             "namespace": {"args": argparse.Namespace(cfg=TrainingConfig())}}[where]
    torch.save({"model": tiny_sam_sd, **extra}, p)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(p, "SAM checkpoint")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    entry = {"top": "config", "nested": "meta.cfg", "namespace": "args"}[where]
    assert f"entry '{entry}'" in msg and "TrainingConfig" in msg and "weights_only=True" in msg


def test_code_in_a_file_is_never_run(tiny_sam_sd, tmp_path, monkeypatch):
    import os

    p = tmp_path / "exploit.pth"
    torch.save({"model": tiny_sam_sd, "payload": Exploit()}, p)
    ran = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a) or 0)
    with pytest.raises(CheckpointError, match=r"entry 'payload' holds (posix|os|nt)\.system"):
        load_state_dict(p, "SAM checkpoint")
    assert ran == []


def test_corrupt_and_wrong_files_are_named(tiny_models, tmp_path):
    from saa.models.sam import load_sam

    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(open(tiny_models.sam_checkpoint, "rb").read()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pth cannot be read"):
        load_state_dict(trunc, "SAM checkpoint")
    lst = tmp_path / "a_list.pth"
    torch.save([torch.ones(1)], lst)
    with pytest.raises(CheckpointError, match="a_list.pth does not hold a state dict"):
        load_state_dict(lst, "SAM checkpoint")
    with pytest.raises(CheckpointError, match="is not a SAM checkpoint"):
        load_sam(tiny_models.saliency_checkpoint)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch SHOULD_NOT_EXIST",))


def test_crafted_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Boom()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(p, "SAM checkpoint")
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()
    # plain pickle files too
    q = tmp_path / "evil2.pth"
    q.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError):
        load_state_dict(q, "SAM checkpoint")
    assert not (tmp_path / "SHOULD_NOT_EXIST").exists()


def test_missing_truncated_and_wrong_checkpoints(tmp_path, tiny_models):
    from saa.models.features import FeatureExtractor
    from saa.models.sam import load_sam

    with pytest.raises(CheckpointError, match="install.sh"):
        load_state_dict(tmp_path / "nope.pth", "SAM checkpoint")
    data = open(tiny_models.sam_checkpoint, "rb").read()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(tmp_path / "trunc.pth")
    # the saliency backbone's weights in the SAM slot, and vice versa
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_sam(tiny_models.saliency_checkpoint)
    with pytest.raises(CheckpointError, match="does not fit"):
        FeatureExtractor("resnet18", tiny_models.sam_checkpoint)


def test_known_checkpoint_name_with_wrong_checksum_is_rejected(tmp_path, tiny_models):
    import shutil

    fake = tmp_path / "sam_vit_b_01ec64.pth"
    shutil.copy(tiny_models.sam_checkpoint, fake)
    with pytest.raises(CheckpointError, match="sha256"):
        load_state_dict(fake, "SAM checkpoint")
    # the verdict is cached beside the file and reused while the file is unchanged
    assert (tmp_path / "sam_vit_b_01ec64.pth.sha256").exists()
    with pytest.raises(CheckpointError, match="sha256"):
        load_state_dict(fake, "SAM checkpoint")
