#!/usr/bin/env python
"""Write ``.ci/constraints.txt``: the exact versions of saa's dependency closure (with the ``test``
and ``ui`` extras) as installed in the current environment. CI installs with this file
(``install.sh --constraints .ci/constraints.txt``), so a new upstream release cannot change CI
until the file is refreshed:

    python -m venv /tmp/fresh && /tmp/fresh/bin/pip install -U -e ".[test,ui]"
    /tmp/fresh/bin/python scripts/refresh_constraints.py     # then run the suite, commit the file

Only distributions reachable from saa's requirements are listed (not whatever else the environment
holds); torch / torchvision are included as installed (install.sh pins them separately).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: md.Distribution, extras: set[str]) -> list[str]:
    out = []
    for req in dist.requires or []:
        name = re.match(r"\s*([A-Za-z0-9_.\-]+)", req).group(1)
        marker = req.split(";", 1)[1] if ";" in req else ""
        m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if m and m.group(1) not in extras:
            continue
        if marker and not m:
            try:
                from packaging.markers import Marker

                if not Marker(marker).evaluate({"extra": ""}):
                    continue
            except Exception:  # noqa: BLE001 - keep the requirement when the marker cannot be read
                pass
        out.append(name)
    return out


def closure(root: str, extras: set[str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, ex = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = canon(dist.metadata["Name"])
        if key in seen:
            continue
        seen[key] = dist.version
        todo += [(r, set()) for r in requirements(dist, ex)]
    seen.pop(canon(root), None)
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / ".ci" / "constraints.txt"))
    ap.add_argument("--extras", default="test,ui")
    a = ap.parse_args(argv)
    pins = closure("saa", set(a.extras.split(",")))
    if not pins:
        sys.exit("saa is not installed in this environment (pip install -e '.[test,ui]' first)")
    head = ["# Exact versions CI installs (pip -c). Refresh: see scripts/refresh_constraints.py.",
            f"# Python {sys.version.split()[0]}; {len(pins)} distributions."]
    Path(a.out).write_text("\n".join(head + [f"{k}=={v}" for k, v in sorted(pins.items())]) + "\n")
    print(f"wrote {a.out}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
