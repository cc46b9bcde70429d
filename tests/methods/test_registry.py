"""The method registry (saa.methods.registry): methods found by name (old names too), unknown names
answered with the closest one, a name registered twice refused."""
from __future__ import annotations

import pytest

from saa.errors import SaaError
from saa.methods import available_methods, get_method, register_method

from toy_methods import Brightness


def test_registry_finds_by_name_and_says_what_exists(toy_methods):
    assert {"saa", "lite", "toy_brightness"} <= set(available_methods())
    assert get_method("full") is get_method("saa")  # the old name keeps working
    with pytest.raises(SaaError, match=r"unknown method 'toy_brightnes'.*did you mean 'toy_brightness'"):
        get_method("toy_brightnes")
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (Brightness,), {}), name="toy_brightness")


def test_a_plugin_written_in_one_file_runs_through_every_command_with_its_setting(
        tmp_path, capsys, make_mvtec, no_weights, stored_maps):
    """tests/support/plugin_method.py (one file, one typed setting) registered: `saa run`,
    `saa predict` and `saa demo` run it, and `--set method_options.toy_blur.sigma=...` changes its
    setting, its maps and its fingerprint (the web UI runs it in tests/test_ui_browser.py)."""
    import json

    import numpy as np

    import plugin_method
    from saa.cli import main
    from saa.config import load_config
    from saa.methods import unregister_method

    from tests.conftest import REPO

    plugin_method.register()
    name = plugin_method.NAME
    try:
        data = make_mvtec(tmp_path / "data")
        sets = [a for s in no_weights(tmp_path) for a in ("--set", s)]
        out = tmp_path / "run"

        def run(sigma: str) -> dict:
            capsys.readouterr()
            assert main(["-q", "run", str(REPO / "configs" / "mvtec.yaml"), "--data-root", str(data), "--out",
                         str(out), "--no-progress", "--method", name, "--set",
                         f"method_options.{name}.sigma={sigma}"] + sets) == 0
            return json.loads((out / "metrics.json").read_text())

        first = run("5")
        assert first["method"] == name and first["totals"]["computed"] == 3
        assert load_config(out / "config.yaml").method_options[name] == {"sigma": 5.0}  # recorded in full
        maps5 = stored_maps(out)
        assert run("5")["totals"]["reused"] == 3  # the same setting: every stored map is reused
        again = run("1.5")  # another setting: another fingerprint, every map recomputed
        assert again["totals"]["computed"] == 3
        maps15 = stored_maps(out)
        assert all(maps5[k]["fingerprint"] != maps15[k]["fingerprint"] for k in maps5)
        assert not all(np.array_equal(maps5[k]["map"], maps15[k]["map"]) for k in maps5)

        images = [str(p) for p in sorted((data / "bottle" / "test").glob("*/*.png"))][:2]
        for sigma in ("5", "1.5"):
            assert main(["-q", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"), "--category", "bottle",
                         "--method", name, "--set", f"method_options.{name}.sigma={sigma}", "--out",
                         str(tmp_path / f"pred{sigma}"), "--panels", "none", *images] + sets) == 0
        a = np.load(tmp_path / "pred5" / f"{tmp_path.joinpath(images[0]).stem}.npy")
        b = np.load(tmp_path / "pred1.5" / f"{tmp_path.joinpath(images[0]).stem}.npy")
        assert a.shape == b.shape and not np.array_equal(a, b)
        info = json.loads((tmp_path / "pred5" / f"{tmp_path.joinpath(images[0]).stem}.json").read_text())
        assert info["method"] == name

        capsys.readouterr()
        assert main(["-q", "demo", "--method", name, "--set", f"method_options.{name}.sigma=5", "--out",
                     str(tmp_path / "demo")] + sets) == 0
        assert "toy blur difference (sigma 5)" in (tmp_path / "demo" / "report.html").read_text()

        capsys.readouterr()
        assert main(["-q", "predict", "--config", str(REPO / "configs" / "mvtec.yaml"), "--category", "bottle",
                     "--method", name, "--set", f"method_options.{name}.sigma=0", "--out", str(tmp_path / "bad"),
                     *images] + sets) == 1
        err = capsys.readouterr().err
        assert f"method_options.{name}.sigma:" in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()
    finally:
        unregister_method(name)
