#!/usr/bin/env python
"""Evaluate SAA+ on the VisA challenge set of the VAND 2023 workshop (writes the submission tree under OUT/vand/).

Config: configs/visa_challenge.yaml (its dataset.root is the default data root). Options:
--data-root DIR, --categories CAT ..., --device D, --out DIR (default results/visa_challenge),
--set KEY=VALUE (repeatable), --no-resume, --no-progress. Same as: saa run configs/visa_challenge.yaml ...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saa.commands.run import main_for  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_for(ROOT / "configs" / "visa_challenge.yaml", sys.argv[1:], prog=Path(__file__).name))
