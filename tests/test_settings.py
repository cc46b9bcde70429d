"""Model files found from anywhere (saa.settings, SaaConfig.resolve_path), and every missing one
named at once before any model loads (saa run / predict / run_*.py)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saa.cli import main
from saa.config import load_config
from saa.methods.saa_plus import required_model_files
from saa.settings import REPO_WEIGHTS_DIR, read_settings, record_weights_dir, settings_path, weights_dirs

OWN = "weights/ folder of this clone"


from tests.conftest import REPO

MVTEC = REPO / "configs" / "mvtec.yaml"


@pytest.fixture(autouse=True)
def _own_settings(tmp_path, monkeypatch):
    """No test reads or writes the real per-user settings, nor sees a $SAA_WEIGHTS_DIR of the shell."""
    monkeypatch.setenv("SAA_SETTINGS", str(tmp_path / "settings" / "settings.json"))
    monkeypatch.delenv("SAA_WEIGHTS_DIR", raising=False)


def relative_models(tiny) -> dict:
    """The tiny model files by their names only (relative paths: a weights folder must supply them)."""
    return {
        "grounding": {"config": Path(tiny.grounding_config).name, "checkpoint": Path(tiny.grounding_checkpoint).name,
                      "text_encoder": Path(tiny.text_encoder).name},
        "sam": {"checkpoint": Path(tiny.sam_checkpoint).name},
        "saliency": {"backbone": tiny.saliency_backbone, "checkpoint": Path(tiny.saliency_checkpoint).name},
    }


def relative_overrides(tiny) -> list[str]:
    return [f"models.{sec}.{k}={v}" for sec, d in relative_models(tiny).items() for k, v in d.items()]


def test_config_file_weights_dir_is_relative_to_the_file_not_the_cwd(tiny_models, tmp_path, monkeypatch, capsys,
                                                                     real_image):
    root = Path(tiny_models.root)
    conf_dir = tmp_path / "project" / "configs"
    conf_dir.mkdir(parents=True)
    data = yaml.safe_load(MVTEC.read_text())
    data["models"] = {"weights_dir": os.path.relpath(root, conf_dir), **relative_models(tiny_models)}
    cfg_file = conf_dir / "mine.yaml"
    cfg_file.write_text(yaml.safe_dump(data, sort_keys=False))
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)

    cfg = load_config(cfg_file)
    assert cfg.resolve_path("sam_tiny.pth") == root / "sam_tiny.pth"
    assert cfg.weights_dirs() == [("models.weights_dir", root)]
    assert required_model_files(cfg) == []
    # the resolved config (what a run writes as config.yaml) names the same folder from anywhere
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(cfg.to_yaml())
    again = load_config(tmp_path / "run" / "config.yaml")
    assert again.resolve_path("sam_tiny.pth") == root / "sam_tiny.pth"

    # the full method runs from this third folder, with every model loaded from the config's folder
    img = real_image("mvtec_ad__*/bottle/test/broken_large/000.png", tmp_path, size=128)
    out = tmp_path / "pred"
    assert main(["-q", "predict", "--config", str(cfg_file), "--category", "bottle", "--out", str(out),
                 "--set", "out_size=128", "--panels", "none", str(img)]) == 0
    info = json.loads((out / f"{img.stem}.json").read_text())
    assert info["method"] == "saa" and len(info["candidates"]) > 0  # Grounding DINO + SAM ran
    capsys.readouterr()
    assert main(["doctor", "--config", str(cfg_file)]) == 0
    said = capsys.readouterr().out
    assert f"found    {root / 'sam_tiny.pth'}" in said and "MISSING" not in said


def test_lookup_order_settings_then_repository_env_alone(tiny_models, tmp_path, monkeypatch):
    root = Path(tiny_models.root)
    monkeypatch.chdir(tmp_path)
    ov = relative_overrides(tiny_models)
    # nothing set: the repository's weights/ folder (a checkout), wherever the current folder is
    assert weights_dirs() == [(OWN, REPO_WEIGHTS_DIR)]
    assert load_config(MVTEC, ov).resolve_path("sam_tiny.pth") == REPO_WEIGHTS_DIR / "sam_tiny.pth"

    # the folder install.sh recorded
    path = record_weights_dir(root)
    assert path == settings_path() and json.loads(path.read_text()) == {
        "weights_dir": str(root), "recorded_by": str(REPO), "clones": {str(REPO): str(root)}}
    cfg = load_config(MVTEC, ov)
    assert [p for _, p in cfg.weights_dirs()] == [root, REPO_WEIGHTS_DIR]
    assert required_model_files(cfg) == []
    assert cfg.resolve_path("bert") == root / "bert"

    # the recorded folder and the repository's weights/ are searched file by file
    monkeypatch.setattr("saa.settings.REPO_WEIGHTS_DIR", tmp_path / "repo_weights")
    (tmp_path / "repo_weights").mkdir()
    (tmp_path / "repo_weights" / "only_in_repo.pth").write_bytes(b"x")
    cfg = load_config(MVTEC, ov)
    assert cfg.resolve_path("only_in_repo.pth") == tmp_path / "repo_weights" / "only_in_repo.pth"
    assert cfg.resolve_path("sam_tiny.pth") == root / "sam_tiny.pth"
    # an empty folder (what a failed download can leave) does not hide the real one ...
    (tmp_path / "repo_weights" / "bert").mkdir()
    record_weights_dir(tmp_path / "repo_weights")
    monkeypatch.setattr("saa.settings.REPO_WEIGHTS_DIR", root)
    assert load_config(MVTEC, ov).resolve_path("bert") == root / "bert"
    # ... and a file no folder holds is reported under the first folder
    assert load_config(MVTEC, ov).resolve_path("nowhere.pth") == tmp_path / "repo_weights" / "nowhere.pth"
    record_weights_dir(root)

    # $SAA_WEIGHTS_DIR, when set, is the one folder (what the shell says wins over what was recorded)
    env_dir = tmp_path / "env_weights"
    env_dir.mkdir()
    (env_dir / "sam_tiny.pth").write_bytes(Path(tiny_models.sam_checkpoint).read_bytes())
    monkeypatch.setenv("SAA_WEIGHTS_DIR", str(env_dir))
    cfg = load_config(MVTEC, ov)
    assert cfg.weights_dirs() == [("$SAA_WEIGHTS_DIR", env_dir)]
    assert cfg.resolve_path("sam_tiny.pth") == env_dir / "sam_tiny.pth"
    assert cfg.resolve_path("bert") == env_dir / "bert"
    assert len(required_model_files(cfg)) == 3

    # a weights_dir the config sets is the only folder: no fall-back to the recorded one
    cfg = load_config(MVTEC, ov + [f"models.weights_dir={tmp_path / 'empty'}"])
    assert len(required_model_files(cfg)) == 4
    (tmp_path / "empty" / "bert").mkdir(parents=True)
    assert str(tmp_path / "empty" / "bert") in required_model_files(cfg)  # an empty folder is no model
    assert cfg.resolve_path("sam_tiny.pth") == tmp_path / "empty" / "sam_tiny.pth"


def test_unusable_settings_file_is_ignored_with_a_warning(tmp_path, caplog, capsys):
    p = settings_path()
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="saa.settings"):
        assert read_settings() == {}
    assert str(p) in caplog.text and "not valid JSON" in caplog.text
    assert weights_dirs() == [(OWN, REPO_WEIGHTS_DIR)]
    assert main(["doctor"]) in (0, 3)
    assert "UNUSABLE, ignored: not valid JSON" in capsys.readouterr().out
    # writing keeps the broken file aside and writes a new one; a good file keeps its other keys
    record_weights_dir(tmp_path / "w1")
    assert p.with_name("settings.json.unusable").read_text() == "{not json"
    p.write_text(json.dumps({**json.loads(p.read_text()), "note": "kept"}))
    record_weights_dir(tmp_path / "w2")
    assert json.loads(p.read_text()) == {"weights_dir": str(tmp_path / "w2"), "note": "kept", "recorded_by": str(REPO),
                                         "clones": {str(REPO): str(tmp_path / "w2")}}
    p.write_text(json.dumps({"weights_dir": 5}))
    assert read_settings() == {}


BAD_SETTINGS = [
    ("utf16", '{"weights_dir": "/data/weights"}'.encode("utf-16"),
     "it is UTF-16 text; saa reads it as UTF-8 (save it as UTF-8)"),
    ("utf16_no_bom", '{"weights_dir": "/data/weights"}'.encode("utf-16-le"),
     "it is UTF-16 text without a byte-order mark"),
    ("latin1", '{"weights_dir": "/données/weights"}'.encode("latin-1"),
     "it is not UTF-8 text (byte 0xe9 at offset 22; Latin-1 or another legacy encoding?); save it as UTF-8"),
    ("not_json", b"weights_dir = /data/weights\n", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    ("not_object", b'["/data/weights"]', "expected a JSON object ({...}), got list"),
    ("wrong_type", b'{"weights_dir": 5}', "weights_dir: Input should be a valid string (got 5)"),
    ("relative", b'{"weights_dir": "weights"}', "weights_dir: must be an absolute path, got 'weights'"),
    ("nul", b'{"weights_dir": "/a\\u0000b"}', "weights_dir: must not contain a NUL character"),
    ("clones_type", b'{"clones": {"/repo": ["/w"]}}', "clones./repo: Input should be a valid string"),
    ("too_deep", b"[" * 50000 + b"]" * 50000, "not valid JSON (nested too deeply)"),
]


@pytest.mark.parametrize("raw, problem", [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS])
def test_bad_settings_file_one_line_then_defaults(raw, problem, caplog, capsys):
    """Another encoding, not JSON, wrong types: one line naming the file and the problem (no
    traceback), and saa goes on with the defaults (no recorded folder) and says so."""
    from saa import settings as S

    p = settings_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(raw)
    S._warned.clear()
    with caplog.at_level(logging.WARNING, logger="saa.settings"):
        assert read_settings() == {}
        assert weights_dirs() == [(OWN, REPO_WEIGHTS_DIR)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "saa.settings"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings  # once, one line
    assert warnings[0].startswith(f"settings file {p} ignored: ") and problem in warnings[0]
    assert "as if no weights folder were recorded" in warnings[0]
    assert main(["doctor"]) in (0, 3)  # keeps working
    out = capsys.readouterr().out
    assert f"settings file: {p}  [UNUSABLE, ignored: " in out and problem in out
    # install.sh's record step keeps the unusable file aside and writes a good one
    assert S.main(["--record-weights-dir", str(p.parent / "w")]) == 0
    said = capsys.readouterr().out
    assert "was kept as settings.json.unusable" in said and problem in said
    assert p.with_name("settings.json.unusable").read_bytes() == raw
    assert read_settings()["weights_dir"] == str(p.parent / "w")


def test_settings_location_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("SAA_SETTINGS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings_path() == tmp_path / "xdg" / "saa" / "settings.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings_path() == tmp_path / "home" / ".config" / "saa" / "settings.json"


# ------------------------------------------------------------------ all missing files at once
def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, SAA_SETTINGS=str(tmp_path / "settings.json"), PYTHONPATH=str(REPO))
    env.pop("SAA_WEIGHTS_DIR", None)
    return env


def _check_missing_message(r: subprocess.CompletedProcess, weights: Path, prog: str) -> None:
    err = r.stderr
    assert r.returncode == 1, r.stdout + err
    assert "Traceback" not in err and "%|" not in err  # one message, before any progress bar
    assert err.startswith(f"{prog}: error: the full method (SAA+) needs 3 model files that were not found:")
    for name in ("bert-base-uncased", "sam_vit_h_4b8939.pth", "wide_resnet50_2.pth"):
        assert f"  - {weights / name}  (" in err, name
    assert "groundingdino_swint_ogc.pth" not in err  # the one in place is not named
    assert f"looked in: {weights} (models.weights_dir)" in err
    assert "bash install.sh" in err and "--method lite" in err and "saa doctor" in err


@pytest.fixture
def partial_weights(tmp_path) -> Path:
    w = tmp_path / "partial"
    w.mkdir()
    (w / "groundingdino_swint_ogc.pth").write_bytes(b"present")
    return w


def test_run_lists_every_missing_file_before_loading(tmp_path, partial_weights, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "saa", "run", str(MVTEC), "--data-root", str(data), "--out", str(out),
                        "--set", f"models.weights_dir={partial_weights}"],
                       capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    _check_missing_message(r, partial_weights, "saa")
    assert not out.exists()  # nothing was written


def test_run_script_lists_every_missing_file(tmp_path, partial_weights, make_mvtec):
    data = make_mvtec(tmp_path / "data")
    r = subprocess.run([sys.executable, str(REPO / "run_MVTec.py"), "--data-root", str(data),
                        "--out", str(tmp_path / "run"), "--set", f"models.weights_dir={partial_weights}"],
                       capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    _check_missing_message(r, partial_weights, "run_MVTec.py")


def test_predict_lists_every_missing_file(tmp_path, partial_weights, real_image):
    img = real_image("mvtec_ad__*/bottle/test/good/000.png", tmp_path, size=64)
    out = tmp_path / "pred"
    r = subprocess.run([sys.executable, "-m", "saa", "predict", "--config", str(MVTEC), "--category", "bottle",
                        "--out", str(out), "--set", f"models.weights_dir={partial_weights}", str(img)],
                       capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    _check_missing_message(r, partial_weights, "saa")
    assert not out.exists()


def test_lite_needs_no_model_file(tmp_path, partial_weights, capsys, real_image):
    img = real_image("mvtec_ad__*/bottle/test/good/000.png", tmp_path, size=64)
    assert main(["-q", "predict", "--config", str(MVTEC), "--category", "bottle", "--method", "lite",
                 "--out", str(tmp_path / "pred"), "--set", f"models.weights_dir={partial_weights}",
                 "--panels", "none", str(img)]) == 0


def test_finished_run_reevaluates_without_model_files(tiny_models, tmp_path, make_mvtec):
    """Nothing to compute: a complete run folder is evaluated again where the model files are gone
    (weights_dir is not part of a map's fingerprint, so every stored map is reused)."""
    from saa.run import evaluate_run

    data = make_mvtec(tmp_path / "data")
    ov = relative_overrides(tiny_models) + ["general_prompts=[]", "out_size=128"]
    out = tmp_path / "run"
    first = evaluate_run(load_config(MVTEC, ov + [f"models.weights_dir={tiny_models.root}"]), out,
                           data_root=data, progress=False, print_table=False)
    assert first["totals"]["computed"] == 3
    gone = load_config(MVTEC, ov + [f"models.weights_dir={tmp_path / 'gone'}"])
    again = evaluate_run(gone, out, data_root=data, progress=False, print_table=False)
    assert again["totals"]["reused"] == 3 and again["categories"] == {
        c: {**v, "seconds": again["categories"][c]["seconds"], "computed": 0, "reused": 3}
        for c, v in first["categories"].items()}
    # recomputing needs the files: all of them named at once
    from saa.errors import CheckpointError

    with pytest.raises(CheckpointError, match="needs 4 model files"):
        evaluate_run(gone, out, data_root=data, progress=False, print_table=False, resume=False)


def test_demo_and_doctor_find_recorded_weights_from_any_folder(tiny_models, tmp_path, monkeypatch, capsys):
    """The shipped config names the real files; a recorded folder holding files of those names (the
    tiny ones, linked) is found from an unrelated working folder, so `saa demo` picks the full method."""
    from saa.samples import choose_method, default_config_path, missing_model_files

    w = tmp_path / "recorded"
    w.mkdir()
    for name, target in [("groundingdino_swint_ogc.pth", tiny_models.grounding_checkpoint),
                         ("GroundingDINO_SwinT_OGC.py", tiny_models.grounding_config),
                         ("bert-base-uncased", tiny_models.text_encoder),
                         ("sam_vit_h_4b8939.pth", tiny_models.sam_checkpoint),
                         ("wide_resnet50_2.pth", tiny_models.saliency_checkpoint)]:
        (w / name).symlink_to(target)
    record_weights_dir(w)
    cwd = tmp_path / "anywhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = load_config(default_config_path())
    assert missing_model_files(cfg) == []
    assert choose_method("auto", missing_model_files(cfg)) == "saa"
    assert cfg.resolve_path(cfg.models.grounding.config) == w / "GroundingDINO_SwinT_OGC.py"
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"1. {w}  [settings file {settings_path()}, recorded by this clone's install.sh; exists]" in out
    assert f"found    {w / 'sam_vit_h_4b8939.pth'}" in out


# ------------------------------------------------------------------ one settings file, several clones
def _as_clone(monkeypatch, root: Path) -> None:
    """Run as if the saa package sat in the clone ``root`` (its weights/ folder: root/weights)."""
    monkeypatch.setattr("saa.settings.REPO_ROOT", root)
    monkeypatch.setattr("saa.settings.REPO_WEIGHTS_DIR", root / "weights")


def test_two_clones_each_finds_its_own_weights(tmp_path, monkeypatch, capsys):
    """Clone A ran install.sh, then clone B did: A still looks in its own folder first, its
    missing-file messages name its own folder, and `saa doctor` says which clone recorded which."""
    from saa.samples import missing_files_message

    a, b, c = tmp_path / "cloneA", tmp_path / "cloneB", tmp_path / "cloneC"
    for clone in (a, b):
        (clone / "weights").mkdir(parents=True)
        (clone / "weights" / "groundingdino_swint_ogc.pth").write_bytes(b"x")
    (b / "weights" / "sam_vit_h_4b8939.pth").write_bytes(b"only in B")
    sp = settings_path()
    _as_clone(monkeypatch, a)
    record_weights_dir(a / "weights")  # what A's install.sh does (python -m saa.settings --clone A)
    _as_clone(monkeypatch, b)
    record_weights_dir(b / "weights")  # then B's: the latest record
    assert json.loads(sp.read_text()) == {"weights_dir": str(b / "weights"), "recorded_by": str(b),
                                          "clones": {str(a): str(a / "weights"), str(b): str(b / "weights")}}

    _as_clone(monkeypatch, a)
    assert weights_dirs() == [(f"settings file {sp}, recorded by this clone's install.sh", a / "weights"),
                              (f"settings file {sp}, recorded by install.sh of the clone {b}", b / "weights")]
    cfg = load_config(MVTEC)
    # a file A lacks is reported under A's folder, never B's
    assert cfg.resolve_path("bert-base-uncased") == a / "weights" / "bert-base-uncased"
    assert cfg.resolve_path("groundingdino_swint_ogc.pth") == a / "weights" / "groundingdino_swint_ogc.pth"
    assert cfg.resolve_path("sam_vit_h_4b8939.pth") == b / "weights" / "sam_vit_h_4b8939.pth"  # last resort
    msg = missing_files_message([str(cfg.resolve_path("bert-base-uncased"))], folders=cfg.weights_dirs())
    assert f"  - {a / 'weights' / 'bert-base-uncased'}" in msg and str(b / "weights" / "bert") not in msg
    assert main(["doctor"]) == 3
    out = capsys.readouterr().out
    assert f"  weights folder {a / 'weights'}  recorded by the clone {a} (this one)\n" in out
    assert (f"  weights folder {b / 'weights'}  recorded by the clone {b}; the latest record, used where a clone "
            "has none of its own\n") in out
    assert f"this clone (where this saa package sits): {a}" in out
    assert f"1. {a / 'weights'}  [settings file {sp}, recorded by this clone's install.sh; exists]" in out
    assert f"MISSING  {a / 'weights' / 'bert-base-uncased'}" in out

    # B, the latest, sees its own folder only
    _as_clone(monkeypatch, b)
    assert [p for _, p in weights_dirs()] == [b / "weights"]

    # a third clone that never ran install.sh: its own weights/ first when it has files there ...
    _as_clone(monkeypatch, c)
    assert [p for _, p in weights_dirs()] == [b / "weights", c / "weights"]  # none of its own: the record first
    (c / "weights").mkdir(parents=True)
    assert [p for _, p in weights_dirs()] == [b / "weights", c / "weights"]  # an empty folder is not "its own"
    (c / "weights" / "groundingdino_swint_ogc.pth").write_bytes(b"x")
    assert [p for _, p in weights_dirs()] == [c / "weights", b / "weights"]
    assert load_config(MVTEC).resolve_path("bert-base-uncased") == c / "weights" / "bert-base-uncased"


def test_settings_file_of_an_older_install_sh(tmp_path, monkeypatch, capsys):
    """A file with only weights_dir (no clone recorded) is the user-wide record; a clone with files of
    its own in weights/ looks there first."""
    sp = settings_path()
    sp.parent.mkdir(parents=True, exist_ok=True)
    sp.write_text(json.dumps({"weights_dir": str(tmp_path / "old")}))
    clone = tmp_path / "clone"
    _as_clone(monkeypatch, clone)
    label = f"settings file {sp}, recorded by an install.sh that did not say which clone (an older saa)"
    assert weights_dirs() == [(label, tmp_path / "old"), (OWN, clone / "weights")]
    (clone / "weights").mkdir(parents=True)
    (clone / "weights" / "x.pth").write_bytes(b"x")
    assert weights_dirs() == [(OWN, clone / "weights"), (label, tmp_path / "old")]
    assert main(["doctor"]) == 3
    assert (f"  weights folder {tmp_path / 'old'}  recorded by an older install.sh (it did not say which clone); "
            "the latest record") in capsys.readouterr().out
