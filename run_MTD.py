#!/usr/bin/env python
"""Evaluate SAA+ on the Magnetic Tile Defect dataset (MTD).

Config: configs/mtd.yaml (its dataset.root is the default data root). Options:
--data-root DIR, --categories CAT ..., --device D, --out DIR (default results/mtd),
--set KEY=VALUE (repeatable), --no-resume, --no-progress. Same as: saa run configs/mtd.yaml ...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saa.commands.run import main_for  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_for(ROOT / "configs" / "mtd.yaml", sys.argv[1:], prog=Path(__file__).name))
