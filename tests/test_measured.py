"""Every speed and memory figure the README and `saa doctor` state comes from saa/measurements.json,
which the measuring scripts write (with the command, machine, threads and date): the README's
figures are equal to the file's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from saa.measured import MEASUREMENTS, figure, memory_phrase, measurements, time_phrase, wall_phrase

from tests.conftest import REPO  # noqa: E402
#: the records the README's requirements table states, time and memory of each
STATED = ("lite_bottle", "lite_mtd", "saa_vit_b_cpu")


def test_every_record_says_how_it_was_measured():
    data = json.loads(MEASUREMENTS.read_text(encoding="utf-8"))
    assert set(STATED) <= set(data)
    for name, m in data.items():
        for key in ("what", "images", "seconds_per_image", "peak_rss_gb", "threads", "command", "script",
                    "machine", "date"):
            assert m.get(key) not in (None, ""), f"{name}: no {key}"
        assert (REPO / m["script"].split()[1]).is_file(), f"{name}: {m['script']} names no script of the repository"
        assert m["seconds_per_image"] > 0 and m["peak_rss_gb"] > 0 and m["images"] > 0


@pytest.mark.parametrize("name", STATED)
def test_the_readme_states_the_recorded_figures(name):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for phrase in (time_phrase(name), memory_phrase(name)):
        assert "not measured" not in phrase
        assert phrase in readme, f"README.md does not state {phrase!r} (saa/measurements.json, {name})"
    if name.startswith("lite_"):  # a user's whole run, beside the per-image compute time
        assert wall_phrase(name) in readme, f"README.md does not state {wall_phrase(name)!r} ({name})"


def test_doctor_states_the_recorded_figures():
    from saa.commands.doctor import speed_line

    line = speed_line()
    assert time_phrase("lite_bottle") in line and time_phrase("saa_vit_b_cpu") in line
    assert figure("lite_bottle")["date"] in line


def test_phrases_follow_the_file(monkeypatch, tmp_path):
    import saa.measured as M

    path = tmp_path / "m.json"
    path.write_text(json.dumps({"x": {"seconds_per_image": 0.614, "peak_rss_gb": 1.31, "images": 31,
                                      "threads": 2, "date": "2026-01-01"}}))
    monkeypatch.setattr(M, "MEASUREMENTS", path)
    M.measurements.cache_clear()
    try:
        assert M.time_phrase("x") == "0.61 s per image (2 CPU threads)"
        assert M.memory_phrase("x") == "peak 1.3 GB for 31 images"
        assert M.time_phrase("missing") == "not measured"
        assert M.wall_phrase("x") == "not measured"  # the record has no wall time
    finally:
        M.measurements.cache_clear()
    assert measurements() is not None
