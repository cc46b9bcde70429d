"""saa.cli: an OS error anywhere (a file where a folder should be, a name too long, a full disk, no
permission, a read-only file system) ends the command with one line naming the file and what to do,
never a traceback; ``--debug`` raises it."""
from __future__ import annotations

import errno
import os

import pytest

from saa import image_io
from saa.image_io import atomic_write_bytes, atomic_write_text


#: every test here starts from the default pixel limit
pytestmark = pytest.mark.usefixtures("default_pixel_limit")


def _execute(func, debug=False):
    import argparse

    from saa.cli import execute

    return execute(func, argparse.Namespace(debug=debug, quiet=True))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saa: error: ") and "Traceback" not in err, err
    return err


def test_os_errors_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("I am a file")
    # --out is an existing file
    assert _execute(lambda a: atomic_write_text(a_file / "bottle" / "x.json", "{}")) == 1
    err = _one_error_line(capsys)
    assert str(a_file) in err and "is a file, not a folder" in err and "--out" in err
    # a folder where a result file should be
    (tmp_path / "x.json").mkdir()
    assert _execute(lambda a: atomic_write_text(tmp_path / "x.json", "{}")) == 1
    err = _one_error_line(capsys)
    assert f"{tmp_path / 'x.json'}: is a folder where a file is to be written" in err
    # file name too long
    long = tmp_path / ("n" * 300 + ".npz")
    assert _execute(lambda a: atomic_write_bytes(long, b"x")) == 1
    assert "file name too long" in _one_error_line(capsys)
    # disk full (a real ENOSPC from /dev/full, which names no file)
    def fill(a):
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 100000)

    assert _execute(fill) == 1
    err = _one_error_line(capsys)
    assert "no space left on the device" in err and "run the same command again" in err
    # not writable / read-only file system (simulated: the tests run as root)
    for code, text in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):
        def deny(a, code=code):
            raise OSError(code, os.strerror(code), str(tmp_path / "ro" / "maps"))

        assert _execute(deny) == 1
        err = _one_error_line(capsys)
        assert f"{tmp_path / 'ro' / 'maps'}: {text};" in err
    with pytest.raises(OSError):
        _execute(fill, debug=True)


def test_disk_full_during_an_atomic_write_names_the_file(tmp_path, capsys, monkeypatch):
    target = tmp_path / "maps" / "a.npz"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image_io.os, "replace", full)
    assert _execute(lambda a: atomic_write_bytes(target, b"data")) == 1
    err = _one_error_line(capsys)
    assert f"{target}: no space left on the device" in err
    assert not target.exists() and not list(target.parent.iterdir())  # no temporary file left


def test_cli_out_is_an_existing_file(tmp_path, run_cli):
    f = tmp_path / "out.txt"
    f.write_text("x")
    r = run_cli("demo", "--method", "lite", "--out", f)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith(f"saa: error: {f}: is a file, not a folder;")
