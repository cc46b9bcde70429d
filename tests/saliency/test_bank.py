"""The reference bank of cross-image saliency (saa.saliency.bank): its scores equal
``cross_image_scores`` from features in memory or a feature store, k-nearest scores against a new
image, a bank of one, the combination rules, and both reference rules offered to both methods."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import settings

from saa.config import load_config
from saa.methods.saa_plus import config_fingerprint
from saa.saliency.bank import CrossImageBank, FeatureStore, combine_saliency, knn_scores
from saa.saliency.cross import combine, cross_image_scores, select_others

from tests.conftest import REPO


MVTEC = REPO / "configs" / "mvtec.yaml"


# ---------------------------------------------------------------------------------------------
# both reference rules for both methods (SAA+'s improved preset, lite)


def test_both_reference_rules_are_offered_to_both_methods():
    from saa.methods.lite import LiteMethod
    from saa.methods.saa_plus import SaaMethod
    from saa.saliency.bank import CrossImageBank
    from saa.saliency.cross import cross_image_scores

    g = torch.Generator().manual_seed(4)
    feats = [torch.nn.functional.normalize(torch.randn(12, 5, 6, generator=g), dim=0) for _ in range(6)]
    per_image = load_config(MVTEC, ["preset=improved", "behaviour.cross_image_aggregate=per_image",
                                    "behaviour.cross_image_max_others=4"])
    settings = SaaMethod(per_image).bank_settings()
    assert (settings["aggregate"], settings["fraction"], settings["max_others"]) == ("per_image", 0.5, 4)
    bank = CrossImageBank.from_features(feats, **settings)
    want = cross_image_scores(feats, k=1, max_others=4, subset="similar", aggregate="per_image", fraction=0.5)
    for i in range(6):
        np.testing.assert_array_equal(bank.scores(i), want[i])
    assert config_fingerprint(per_image, "bottle") != config_fingerprint(load_config(MVTEC, ["preset=improved",
                                                                             "behaviour.cross_image_max_others=4"]),
                                                                             "bottle")
    lite = LiteMethod(per_image, aggregate="nearest", max_others=None)
    s = lite.bank_settings()
    assert (s["aggregate"], s["max_others"]) == ("nearest", None)
    bank = CrossImageBank.from_features(feats, **s)
    want = cross_image_scores(feats, k=1, aggregate="nearest")
    for i in range(6):
        np.testing.assert_array_equal(bank.scores(i), want[i])
    assert lite.fingerprint("bottle") != LiteMethod(per_image).fingerprint("bottle")


def unit_features(n, c=8, shape=(5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(c, *shape, generator=g), dim=0) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# bank maths (no models)


@pytest.mark.parametrize("k,max_others,subset", [(1, None, "similar"), (3, None, "similar"), (1, 3, "similar"),
                                                 (2, 3, "spread")])
def test_bank_scores_equal_cross_image_scores(tmp_path, k, max_others, subset):
    feats = unit_features(6, shape=(5, 6), seed=1)
    want = cross_image_scores(feats, k=k, max_others=max_others, subset=subset, chunk=7, block=40)
    store = FeatureStore(tmp_path / "f", "fp1")
    for i, f in enumerate(feats):
        store.put(f"good/{i}", f)
    keys = [f"good/{i}" for i in range(6)]
    for bank in (CrossImageBank.from_features(feats, k=k, max_others=max_others, subset=subset, chunk=7, block=40),
                 CrossImageBank.from_store(store, keys, k=k, max_others=max_others, subset=subset, chunk=7, block=40)):
        assert len(bank) == 6
        for i in range(6):
            got = bank.scores(i)
            assert got.dtype == np.float32 and got.shape == (5, 6)
            np.testing.assert_allclose(got, want[i], atol=1e-6, rtol=0)


def test_knn_scores_brute_force_and_new_image():
    feats = unit_features(4, c=16, shape=(6, 7), seed=2)
    q = unit_features(1, c=16, shape=(3, 4), seed=3)[0]
    for k in (1, 5):
        got = knn_scores(q, feats, k=k, chunk=5, block=50)
        flat = lambda f: f.reshape(16, -1).T.double()  # noqa: E731
        d = 1 - flat(q) @ torch.cat([flat(f) for f in feats]).T
        want = d.sort(dim=1)[0][:, :k].mean(dim=1).reshape(3, 4).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)
    bank = CrossImageBank.from_features(feats, k=2)
    np.testing.assert_allclose(bank.scores_for(q), knn_scores(q, feats, k=2), atol=1e-7)
    capped = CrossImageBank.from_features(feats, k=1, max_others=2, subset="spread")
    np.testing.assert_allclose(capped.scores_for(q), knn_scores(q, [feats[j] for j in select_others(5, 4, 2, "spread")]),
                               atol=1e-7)
    assert knn_scores(q, []) is None


def test_bank_of_one_and_store_validity(tmp_path):
    one = CrossImageBank.from_features(unit_features(1))
    assert one.scores(0) is None
    with pytest.raises(IndexError):
        one.scores(1)
    store = FeatureStore(tmp_path / "s", "fpA")
    store.put("a/b", unit_features(1)[0])
    assert store.path("a/b").name == "a__b.npz" and store.has("a/b")
    assert not FeatureStore(tmp_path / "s", "fpB").has("a/b")  # other settings
    store.path("a/b").write_bytes(b"partial")
    assert not store.has("a/b")
    with pytest.raises(FileNotFoundError):
        CrossImageBank.from_store(store, ["a/b"])
    store.remove()
    assert not (tmp_path / "s").exists()


def test_combine_saliency_rules():
    s = np.array([[0.4, 0.1], [0.0, 0.9]], np.float32)
    c = np.array([[0.1, 0.4], [0.5, -1e-7]], np.float32)
    np.testing.assert_allclose(combine_saliency(s, c, "geomean"), [[0.2, 0.2], [0.0, 0.0]], atol=1e-7)
    for rule in ("cross", "mean", "product", "max"):
        np.testing.assert_array_equal(combine_saliency(s, c, rule), combine(s, c, rule))
    with pytest.raises(ValueError):
        combine_saliency(s, c, "sum")
    with pytest.raises(ValueError):
        combine_saliency(s, c[:1], "geomean")
