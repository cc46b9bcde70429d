"""The speed and memory figures saa states (README, ``saa doctor``), as measured by the scripts in
``scripts/`` and recorded in ``saa/measurements.json`` with the command, machine, threads and date.
No figure is typed by hand: ``python scripts/measure_lite.py --write`` and
``python scripts/benchmark.py ... --record NAME`` write them, and a test keeps the README's figures
equal to this file."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

__all__ = ["MEASUREMENTS", "measurements", "figure", "time_phrase", "wall_phrase", "memory_phrase"]

MEASUREMENTS = Path(__file__).with_name("measurements.json")


@lru_cache(maxsize=1)
def measurements() -> dict[str, dict[str, Any]]:
    """Every recorded measurement (empty when the file is missing or unreadable)."""
    try:
        data = json.loads(MEASUREMENTS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def figure(name: str) -> Optional[dict[str, Any]]:
    m = measurements().get(name)
    return m if isinstance(m, dict) else None


def _gb(n: float) -> str:
    return f"{n:.1f} GB"


def time_phrase(name: str) -> str:
    """e.g. ``0.9 s per image (2 CPU threads)``; ``not measured`` when there is no record."""
    m = figure(name)
    if m is None:
        return "not measured"
    s = float(m["seconds_per_image"])
    value = f"{s:.0f} s" if s >= 10 else f"{s:.1f} s" if s >= 0.95 else f"{s:.2f} s"
    return f"{value} per image ({m['threads']} CPU threads)"


def wall_phrase(name: str) -> str:
    """e.g. ``0.58 s per image with start-up, model loading and metrics`` (a whole run's wall time over
    its images); ``not measured`` when the record has none."""
    m = figure(name)
    if m is None or not m.get("wall_seconds_per_image"):
        return "not measured"
    return f"{float(m['wall_seconds_per_image']):.2f} s per image with start-up, model loading and metrics"


def memory_phrase(name: str) -> str:
    """e.g. ``peak 1.3 GB for 31 images``."""
    m = figure(name)
    if m is None:
        return "not measured"
    return f"peak {_gb(float(m['peak_rss_gb']))} for {m['images']} images"
