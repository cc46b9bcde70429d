"""Reference banks of good parts (saa.bank, `saa bank`): round trip, refusal of a bank made with
another method / setting / model file, maps that depend on the bank only (bit-identical alone and in
any batch, through lite), no image ever its own reference, thresholds from good parts at the
requested false-alarm rate, the greedy coreset, and the command line."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from saa.bank import (REVIEW, BankError, ReferenceBank, bank_verdict, build_bank, calibrate_bank,
                      calibration_from_scores, clopper_pearson, greedy_coreset, open_bank, threshold_at)
from saa.bank.inputs import expand_inputs
from saa.cli import main
from saa.config import config_from_dict
from saa.methods import register_method, unregister_method
from saa.saliency.cross import nearest_search

from tests.conftest import BOTTLE, REPO  # noqa: E402


from bank_toys import NoRefs, ToyRefs  # noqa: E402  (tests/support)


def config(**options):
    data = {"out_size": 16, "categories": {"part": {"object": "part,", "n_objects": 1, "k_mask": 1, "area_ratio": 0.5}}}
    if options:
        data["method_options"] = {ToyRefs.name: options}
    return config_from_dict(data)


def write_images(folder: Path, n: int, seed: int = 0, side: int = 24, prefix: str = "") -> list[Path]:
    """``n`` smooth random colour images (PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(60, 200, size=(4, 4, 3)).astype(np.uint8)
        im = cv2.resize(base, (side, side), interpolation=cv2.INTER_CUBIC)
        p = folder / f"{prefix}{i:03d}.png"
        cv2.imwrite(str(p), im[:, :, ::-1])
        out.append(p)
    return out


def rgb_of(path: Path) -> np.ndarray:
    from saa.image_io import read_rgb

    return read_rgb(path)


# ---------------------------------------------------------------------------------------------
# round trip


def test_bank_round_trip(tmp_path, toy):
    refs = write_images(tmp_path / "good", 5)
    method = ToyRefs(config())
    bank = build_bank(method, "part", refs, tmp_path / "bank", max_positions=0, source="good/")
    again = ReferenceBank.open(tmp_path / "bank")
    m = again.manifest
    assert m == bank.manifest and len(again) == 5 and m.category == "part" and m.channels == 3
    assert [r.name for r in m.images] == [p.name for p in refs]
    import hashlib
    assert [r.sha256 for r in m.images] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in refs]
    assert m.method.name == ToyRefs.name and m.method.settings == {"cell": 8, "weights": ""}
    assert m.method.fingerprint == method.fingerprint("part", None) and m.kshot is None and m.source == "good/"
    assert m.scoring.positions_total == m.scoring.positions_kept == 5 * 64 and m.scoring.coreset is None
    assert (tmp_path / "bank" / "README.txt").read_text().startswith("saa reference bank: category part, 5 good")
    assert (tmp_path / "bank" / "config.yaml").is_file()
    # the stored positions are the reference features: the bank scores a query exactly as a search over them
    query = write_images(tmp_path / "q", 1, seed=7)[0]
    rgb = rgb_of(query)
    want = nearest_search(method.reference_features(rgb), [method.reference_features(rgb_of(p)) for p in refs], k=1)
    got = again.predict(method, rgb, "part", path=query)
    assert got.notes == []
    np.testing.assert_allclose(cv2.resize(got.anomaly_map_full, (8, 8), interpolation=cv2.INTER_NEAREST), want,
                               atol=1e-6)
    assert float(np.max(want)) > 0.0


def test_show_and_one_line_errors_of_damaged_banks(tmp_path, toy, capsys):
    refs = write_images(tmp_path / "good", 3)
    build_bank(ToyRefs(config()), "part", refs, tmp_path / "bank")
    assert main(["bank", "show", str(tmp_path / "bank")]) == 0
    out = capsys.readouterr().out
    assert "3 good reference image(s)" in out and "000.png" in out and "calibration: none" in out
    assert main(["bank", "show", str(tmp_path / "bank"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["category"] == "part"

    def error(folder) -> str:
        assert main(["bank", "show", str(folder)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        return err

    assert "reference bank not found" in error(tmp_path / "nothing")
    assert "not a reference bank" in error(tmp_path / "good")
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "bank", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["images"][0]["sha256"] = "x"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert "invalid bank manifest: images.0.sha256" in error(broken)
    (broken / "manifest.json").write_text("{")
    assert "not valid JSON" in error(broken)
    shutil.rmtree(broken)
    shutil.copytree(tmp_path / "bank", broken)
    np.save(broken / "positions.npy", np.zeros((5, 3), np.float32))
    assert "positions.npy" in error(broken) and "damaged" in error(broken)


# ---------------------------------------------------------------------------------------------
# refusal of a mismatched bank


def test_bank_refuses_another_method_setting_or_model_file(tmp_path, toy):
    weights = tmp_path / "toy.bin"
    weights.write_bytes(b"0123456789" * 1000)
    refs = write_images(tmp_path / "good", 3)
    build_bank(ToyRefs(config(weights=str(weights))), "part", refs, tmp_path / "bank")
    open_bank(tmp_path / "bank", ToyRefs(config(weights=str(weights))), "part")  # the same: fine

    def refused(method, category="part") -> str:
        with pytest.raises(BankError) as e:
            open_bank(tmp_path / "bank", method, category)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "method 'toy_bank_norefs' compares no images" in refused(NoRefs(config()))
    msg = refused(ToyRefs(config(weights=str(weights), cell=6)))
    assert "method_options.toy_bank_refs.cell = 8" in msg and "6 now" in msg
    assert "category 'part', not 'other'" in refused(ToyRefs(config(weights=str(weights))), "other")
    # the same path, other content: the model file check names it
    weights.write_bytes(b"0123456789" * 1000 + b"!")
    msg = refused(ToyRefs(config(weights=str(weights))))
    assert "model file 'toy weights'" in msg and str(weights) in msg
    # another method with references
    register_method(type("OtherRefs", (ToyRefs,), {"name": "toy_bank_other"}), replace=True)
    try:
        from saa.methods import get_method

        msg = refused(get_method("toy_bank_other")(config()))
        assert "built with method 'toy_bank_refs'" in msg and "not 'toy_bank_other'" in msg
    finally:
        unregister_method("toy_bank_other")


def test_a_method_without_references_gets_one_line(tmp_path, toy, capsys):
    refs = write_images(tmp_path / "good", 2)
    with pytest.raises(BankError, match="compares no images"):
        build_bank(NoRefs(config()), "part", refs, tmp_path / "bank")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config().to_yaml())
    assert main(["bank", "build", "--config", str(cfg), "--method", NoRefs.name, "--category", "part",
                 "--out", str(tmp_path / "b"), str(tmp_path / "good")]) == 1
    err = capsys.readouterr().err.strip()
    assert "compares no images" in err and err.count("\n") == 0
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------
# maps that depend on the bank only (through lite)


def small_bottles(tmp_path: Path, names, side: int = 96) -> list[Path]:
    out = []
    for folder, name in names:
        im = cv2.imread(str(BOTTLE / folder / name))
        p = tmp_path / f"{folder.replace('/', '_')}_{name}"
        cv2.imwrite(str(p), cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA))
        out.append(p)
    return out


def lite_method(**settings):
    from saa.methods.lite import LiteMethod

    cfg = config_from_dict({"method": "lite", "out_size": 32,
                            "categories": {"bottle": {"object": "bottle,", "n_objects": 1, "k_mask": 1,
                                                      "area_ratio": 0.5}},
                            "method_options": {"lite": {"size": 64, **settings}}})
    return LiteMethod(cfg)


def test_a_map_depends_on_the_bank_only_bit_identical_alone_and_in_batches(tmp_path):
    refs = small_bottles(tmp_path, [("train/good", n) for n in ("010.png", "013.png", "019.png")])
    others = small_bottles(tmp_path, [("test/good", "000.png"), ("test/broken_large", "000.png"),
                                      ("test/contamination", "003.png"), ("test/broken_small", "004.png")])
    x = others[1]
    method = lite_method()
    bank = build_bank(method, "bottle", refs, tmp_path / "bank")
    rgb = rgb_of(x)
    alone = ReferenceBank.open(tmp_path / "bank").predict(method, rgb, "bottle", path=x)
    assert alone.saliency_branch == "cross" and alone.notes == []
    batches = [[others[0], x], [others[3], others[2], x, others[0]], [x, x, others[2]]]
    for batch in batches:
        b = open_bank(tmp_path / "bank", method, "bottle")
        for p in batch:
            pred = b.predict(method, rgb_of(p), "bottle", path=p)
            if p == x:
                assert np.array_equal(pred.anomaly_map, alone.anomaly_map)
                assert np.array_equal(pred.anomaly_map_full, alone.anomaly_map_full)
                assert pred.score == alone.score
    # the bank object itself as `bank=` of the method: the same map
    direct = method.predict(rgb, "bottle", bank=bank, index=None)
    assert np.array_equal(direct.anomaly_map, alone.anomaly_map)
    # and not the map the batch would give when scored transductively (the point of a bank)
    trans = method.bank_from_features([method.reference_features(rgb_of(p)) for p in others])
    assert not np.array_equal(method.predict(rgb, "bottle", bank=trans, index=1).anomaly_map, alone.anomaly_map)
    # calibrated verdicts are the same too
    calibrate_bank(bank, method, [others[0]], false_alarm_rate=0.5, review_rate=0.9)
    v = [open_bank(tmp_path / "bank", method).verdict(open_bank(tmp_path / "bank", method).predict(
        method, rgb, path=x).score) for _ in range(2)]
    assert v[0] == v[1] == bank.verdict(alone.score)


# ---------------------------------------------------------------------------------------------
# no image is its own reference


def test_duplicates_never_self_reference(tmp_path, toy):
    refs = write_images(tmp_path / "good", 4)
    a = refs[0]
    method = ToyRefs(config())
    # the same file twice and a byte copy under another name: counted once
    copy = tmp_path / "copy_of_a.png"
    shutil.copyfile(a, copy)
    bank = build_bank(method, "part", [*refs, a, copy], tmp_path / "bank", max_positions=0)
    assert len(bank) == 4 and len(bank.manifest.skipped) == 2
    assert all("left out" in s for s in bank.manifest.skipped)
    without_a = build_bank(method, "part", refs[1:], tmp_path / "bank_without_a", max_positions=0)
    rgb = rgb_of(a)
    want = without_a.predict(method, rgb, "part").anomaly_map
    assert float(want.max()) > 0
    # the same picture in another format (other bytes, same pixels)
    bmp = tmp_path / "a_again.bmp"
    cv2.imwrite(str(bmp), cv2.imread(str(a)))
    assert bmp.read_bytes() != a.read_bytes()
    for path in (a, copy, bmp, tmp_path / "good" / ".." / "good" / a.name):
        pred = bank.predict(method, rgb_of(path), "part", path=path)
        assert np.array_equal(pred.anomaly_map, want), path
        assert any("never against itself" in n for n in pred.notes)
    # through the bank object directly (no identity given): its features give it away
    pred = method.predict(rgb, "part", bank=bank, index=None)
    assert np.array_equal(pred.anomaly_map, want)
    # a one-image bank queried with its own image: nothing left to compare with
    one = build_bank(method, "part", [a], tmp_path / "one")
    assert float(one.predict(method, rgb, "part", path=a).anomaly_map.max()) == 0.0
    # calibration images must not be references
    with pytest.raises(BankError, match="must not be in the bank"):
        calibrate_bank(bank, method, [bmp])


def test_leave_one_out_with_a_coreset_drops_the_images_own_positions(tmp_path, toy):
    refs = write_images(tmp_path / "good", 6)
    method = ToyRefs(config())
    bank = build_bank(method, "part", refs, tmp_path / "bank", max_positions=100)
    s = bank.manifest.scoring
    assert (s.positions_total, s.positions_kept) == (6 * 64, 100) and s.coreset is not None and s.coreset.dims == 3
    assert sum(r.kept for r in bank.manifest.images) == 100
    origin = np.load(tmp_path / "bank" / "origin.npy")
    kept_pos = np.load(tmp_path / "bank" / "positions.npy")
    j = 2
    rgb = rgb_of(refs[j])
    others = torch.from_numpy(kept_pos[origin != j]).T.unsqueeze(-1)
    want = nearest_search(method.reference_features(rgb), [others], k=1)
    got = bank.predict(method, rgb, "part", path=refs[j]).anomaly_map_full
    np.testing.assert_allclose(cv2.resize(got, (8, 8), interpolation=cv2.INTER_NEAREST), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# the coreset


def test_greedy_coreset_keeps_the_farthest_points_deterministically():
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 5.0], [10.1, 0.0], [0.0, 5.1]])
    assert greedy_coreset(pts, 3).tolist() == [0, 4, 5]  # 0, then the farthest from it (4), then from both (5)
    assert greedy_coreset(pts, 10).tolist() == list(range(6))
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    a, b = greedy_coreset(x, 50), greedy_coreset(x, 50)
    assert torch.equal(a, b) and len(set(a.tolist())) == 50
    # every point is closer to the coreset than the coreset's covering radius found by random picks
    d_core = torch.cdist(x, x[a]).min(dim=1).values.max()
    d_rand = torch.cdist(x, x[torch.randperm(500, generator=torch.Generator().manual_seed(1))[:50]]).min(dim=1).values.max()
    assert d_core < d_rand


# ---------------------------------------------------------------------------------------------
# thresholds from good parts only


def test_threshold_gives_the_requested_false_alarm_rate():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200)
    for rate in (0.005, 0.01, 0.05, 0.1, 0.25):
        t, m = threshold_at(scores, rate)
        assert m == int(rate * 200) and int((scores >= t).sum()) == m
        assert int((scores >= np.nextafter(t, -np.inf) - 1e-12).sum()) >= m  # the lowest such threshold
    # float32 scores: the same count whether compared in float32 or float64
    s32 = rng.random(1000).astype(np.float32)
    t, m = threshold_at(s32, 0.01)
    assert int((s32 >= t).sum()) == int((s32.astype(np.float64) >= t).sum()) == m == 10
    # ties never give more false alarms than allowed
    tied = np.array([1.0] * 5 + [0.5] * 5)
    t, _ = threshold_at(tied, 0.2)
    assert int((tied >= t).sum()) == 0
    cal = calibration_from_scores(scores, bank_id="b", fingerprint="f", mode="images", names=["x"] * 200,
                                  shas=["0"] * 200, false_alarm_rate=0.05, review_rate=0.2)
    verdicts = [bank_verdict(s, cal) for s in scores]
    assert verdicts.count("DEFECT") == 10 and verdicts.count(REVIEW) == 30 and verdicts.count("OK") == 160
    assert (cal.false_alarms, cal.reviews, cal.measured_far) == (10, 30, 0.05)
    assert cal.t_review < cal.t_defect and cal.expected_far_new == pytest.approx(11 / 201)
    lo, hi = cal.far_ci95
    assert lo < 0.05 < hi and not cal.notes
    assert bank_verdict(float("nan"), cal) == REVIEW
    with pytest.raises(BankError, match="review-rate"):
        calibration_from_scores(scores, bank_id="b", fingerprint="f", mode="images", names=[], shas=[],
                                false_alarm_rate=0.1, review_rate=0.05)
    # too few images for the rate: said, and the threshold sits just above the highest good score
    cal = calibration_from_scores(scores[:20], bank_id="b", fingerprint="f", mode="images", names=["x"] * 20,
                                  shas=["0"] * 20, false_alarm_rate=0.01)
    assert cal.false_alarms == 0 and cal.t_defect > scores[:20].max() and "1/20" in cal.notes[0]


def test_clopper_pearson_interval():
    lo, hi = clopper_pearson(0, 29)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 29), abs=1e-9)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10), abs=1e-9)
    lo, hi = clopper_pearson(5, 100)  # published value: 0.0164 - 0.1128
    assert lo == pytest.approx(0.01643, abs=1e-4) and hi == pytest.approx(0.11284, abs=1e-4)


def test_calibrated_bank_gives_the_requested_rate_on_its_calibration_images(tmp_path, toy, capsys):
    refs = write_images(tmp_path / "good", 4, seed=1)
    calib = write_images(tmp_path / "calib", 20, seed=2, prefix="c")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config().to_yaml())
    out = tmp_path / "bank"
    assert main(["bank", "build", "--config", str(cfg), "--method", ToyRefs.name, "--category", "part", "--out",
                 str(out), str(tmp_path / "good"), "--no-progress"]) == 0
    assert main(["bank", "calibrate", str(out), "--images", str(tmp_path / "calib" / "*.png"),
                 "--false-alarm-rate", "0.1", "--review-rate", "0.3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 20 good images" in printed and "REVIEW when" in printed
    method = ToyRefs(config())
    bank = open_bank(out, method, "part")
    cal = bank.calibration
    assert (cal.mode, cal.n, cal.false_alarms, cal.reviews) == ("images", 20, 2, 4)
    verdicts = [bank.verdict(bank.predict(method, rgb_of(p), path=p).score) for p in calib]
    assert verdicts.count("DEFECT") == 2 and verdicts.count(REVIEW) == 4
    assert [c.score for c in cal.images] == [bank.predict(method, rgb_of(p)).score for p in calib]
    assert cal.pixel_threshold is not None and "calibration (images, 20 good image(s)" in (out / "README.txt").read_text()
    # leave-one-out within the bank (the bank's config.yaml rebuilds the method)
    assert main(["bank", "calibrate", str(out), "--false-alarm-rate", "0.25", "--no-progress"]) == 0
    cal = ReferenceBank.open(out).calibration
    assert cal.mode == "leave-one-out" and cal.n == 4 and cal.false_alarms == 1
    # a rebuilt bank invalidates the old calibration record
    (out / "calibration.json").write_text((out / "calibration.json").read_text().replace(cal.bank_id, "0" * 64))
    with pytest.raises(BankError, match="belongs to another bank"):
        ReferenceBank.open(out)


# ---------------------------------------------------------------------------------------------
# inputs and the command line


def test_build_inputs_and_output_folder_rules(tmp_path, toy, capsys):
    refs = write_images(tmp_path / "good" / "a", 2)
    write_images(tmp_path / "good" / "b", 2, seed=3, prefix="b")
    (tmp_path / "good" / "loop").symlink_to(tmp_path / "good")
    found = expand_inputs([str(tmp_path / "good" / "**" / "*.png"), refs[0]])
    assert sorted(p.name for p in found) == ["000.png", "001.png", "b000.png", "b001.png"]
    for bad, words in (([str(tmp_path / "none.png")], "no such file"), ([str(tmp_path / "good" / "*.jpg")], "no image"),
                       ([str(tmp_path / "good")], "folder has no image")):
        with pytest.raises(BankError, match=words):
            expand_inputs(bad)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config().to_yaml())
    base = ["bank", "build", "--config", str(cfg), "--method", ToyRefs.name, "--category", "part", "--no-progress"]
    notbank = tmp_path / "mine"
    notbank.mkdir()
    (notbank / "keep.txt").write_text("x")
    assert main(base + ["--out", str(notbank), str(tmp_path / "good" / "a")]) == 1
    assert "not a reference bank" in capsys.readouterr().err and (notbank / "keep.txt").exists()
    out = tmp_path / "bank"
    assert main(base + ["--out", str(out), str(tmp_path / "good" / "a")]) == 0
    assert main(base + ["--out", str(out), str(tmp_path / "good" / "b")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(base + ["--out", str(out), str(tmp_path / "good" / "b"), "--force"]) == 0
    assert [r.name for r in ReferenceBank.open(out).manifest.images] == ["b000.png", "b001.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bank.")]  # no temporary folder left
    # a file name that is not UTF-8: kept (read back the same), shown with escapes
    odd = tmp_path / "odd"
    odd.mkdir()
    name = os.fsdecode(b"\xff\xfe.png")
    shutil.copyfile(refs[0], odd / name)
    assert main(base + ["--out", str(tmp_path / "oddbank"), str(odd)]) == 0
    assert [r.name for r in ReferenceBank.open(tmp_path / "oddbank").manifest.images] == [name]
    capsys.readouterr()
    assert main(["bank", "show", str(tmp_path / "oddbank")]) == 0
    assert "\\xff\\xfe.png" in capsys.readouterr().out
    for extra, words in ((["--k-shot", "1", str(refs[0])], "add --from-dataset"),
                         ([str(refs[0]), "--from-dataset"], "not both"), ([], "no good image")):
        assert main(base + ["--out", str(tmp_path / "x")] + extra) == 1
        assert words in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the improved preset (SAA+ with cross-image saliency) through a bank, tiny random models


def test_improved_preset_bank_round_trip(tmp_path, tiny_models):
    from saa.config import load_config
    from saa.run import make_method
    from saa.testing import tiny_config_overrides

    cfg = load_config(REPO / "configs" / "mvtec.yaml",
                      tiny_config_overrides(tiny_models) + ["preset=improved", "general_prompts=[]", "out_size=32"])
    method = make_method(cfg)
    refs = small_bottles(tmp_path, [("train/good", "010.png"), ("train/good", "013.png")], side=64)
    query = small_bottles(tmp_path, [("test/broken_large", "000.png")], side=64)[0]
    build_bank(method, "bottle", refs, tmp_path / "bank")
    bank = open_bank(tmp_path / "bank", method, "bottle")
    assert bank.manifest.method.name == "saa" and len(bank.manifest.method.model_files) >= 3
    pred = bank.predict(method, rgb_of(query), path=query)
    again = open_bank(tmp_path / "bank", make_method(cfg), "bottle").predict(method, rgb_of(query))
    assert np.array_equal(pred.anomaly_map, again.anomaly_map) and np.isfinite(pred.anomaly_map).all()
    with pytest.raises(BankError, match="cross-image saliency"):
        open_bank(tmp_path / "bank", make_method(load_config(
            REPO / "configs" / "mvtec.yaml", tiny_config_overrides(tiny_models) + [
                "preset=improved", "general_prompts=[]", "out_size=32", "behaviour.cross_image_k=2"])), "bottle")
