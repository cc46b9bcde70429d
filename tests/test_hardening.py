"""Bad input: images in odd formats, unreadable files, unsafe or broken checkpoints."""
from __future__ import annotations

import os
import pickle
import socket

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from saa.errors import CheckpointError, ImageReadError
from saa.image_io import read_mask, read_rgb
from saa.models.checkpoints import load_state_dict


@pytest.fixture()
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)


def test_grey_rgba_16bit_and_cmyk_become_8bit_rgb(tmp_path, rgb):
    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out == grey[:, :, None]).all()

    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)]), "RGBA").save(tmp_path / "a.png")
    assert (read_rgb(tmp_path / "a.png") == rgb).all()

    deep = rgb.astype(np.uint16) * 257  # 16-bit with the same visible values
    cv2.imwrite(str(tmp_path / "d.png"), deep[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "d.tif"), deep[:, :, ::-1])
    for name in ("d.png", "d.tif"):
        got = read_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and np.abs(got.astype(int) - rgb).max() <= 1, name

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    got = read_rgb(tmp_path / "c.jpg")
    assert got.shape == (20, 30, 3) and np.abs(got.astype(int) - rgb).mean() < 12


@pytest.mark.parametrize("content,reason", [(None, "not found"), (b"", "empty"),
                                            (b"hello, not an image", "not a readable image")])
def test_unreadable_images_name_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_rgb(p)
    assert str(p) in str(e.value) and reason in str(e.value)


def test_truncated_png(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / "t.png"), rgb)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_rgb(tmp_path / "t.png")


def test_masks_non_binary_values_are_anomalous(tmp_path):
    m = np.zeros((5, 5), np.uint8)
    m[1, 1], m[2, 2] = 1, 200
    cv2.imwrite(str(tmp_path / "m.png"), m)
    assert read_mask(tmp_path / "m.png").sum() == 2


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


def test_sam_architecture_inferred_for_standard_sizes():
    from segment_anything import sam_model_registry

    from saa.models.sam import infer_architecture

    sd = sam_model_registry["vit_b"]().state_dict()
    a = infer_architecture(sd)
    assert (a.embed_dim, a.depth, a.num_heads, a.global_attn_indexes, a.window_size) == (768, 12, 12, (2, 5, 8, 11), 14)
    assert a.describe().startswith("ViT-B")


def test_packaged_efficientnet_weights_load_offline():
    from saa.models.features import FeatureExtractor

    ex = FeatureExtractor("efficientnet_lite0", "package:efficientnet_lite0", stages=(1, 2, 3))
    f = ex(np.zeros((64, 64, 3), np.uint8), 64)
    assert f.shape[1] == sum(ex.channels) and torch.allclose(f.norm(dim=1), torch.ones(1), atol=1e-4)


def test_network_is_blocked_in_tests():
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("example.com", 80), timeout=1)


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


def test_very_large_image_reads(tmp_path):
    big = np.zeros((8000, 8000), np.uint8)
    big[::97, :] = 200
    cv2.imwrite(str(tmp_path / "big.png"), big)
    out = read_rgb(tmp_path / "big.png")
    assert out.shape == (8000, 8000, 3) and out.dtype == np.uint8 and out[97, 5, 1] == 200


def test_prefetch_order_background_thread_and_errors(tmp_path, rgb):
    """Images decode in a background thread, at most `depth` ahead, in order; a bad file raises
    at its own position with its own path."""
    import threading

    from saa.image_io import prefetch

    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), rgb[:, :, ::-1])
        paths.append(p)
    (tmp_path / "2.png").write_bytes(b"not an image")
    loaded, threads = [], set()

    def load(p):
        loaded.append(p.name)
        threads.add(threading.current_thread().name)
        return read_rgb(p)

    seen = []
    with pytest.raises(ImageReadError, match="2.png"):
        for i, (p, img) in enumerate(prefetch(paths, load, depth=2)):
            assert len(loaded) <= i + 3  # never more than depth ahead (+ the one being yielded)
            assert img.shape == rgb.shape
            seen.append(p.name)
    assert seen == ["0.png", "1.png"]
    assert threads and all(t.startswith("saa-prefetch") for t in threads)
    # depth 0: no thread, same results
    out = [(p.name, img.shape) for p, img in prefetch(paths[:2], read_rgb, depth=0)]
    assert out == [("0.png", rgb.shape), ("1.png", rgb.shape)]
