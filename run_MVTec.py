#!/usr/bin/env python
"""Evaluate SAA+ on MVTec-AD.

Config: configs/mvtec.yaml (its dataset.root is the default data root). Options:
--data-root DIR, --categories CAT ..., --device D, --out DIR (default results/mvtec),
--set KEY=VALUE (repeatable), --no-resume, --no-progress. Same as: saa run configs/mvtec.yaml ...

Few-shot (a method that compares images: --method lite or --preset improved): --k-shot K --seed-run R
--seeds DIR scores every test image against the K train/good images that the seed list of run R names
(DIR: the SAA+ authors' datasets/seeds_mvtec/, <category>/selected_samples_per_run.txt); default
--out results/mvtec-<K>shot-run<R>. --bank BANK / --references DIR: good parts of your own.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saa.commands.run import main_for  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_for(ROOT / "configs" / "mvtec.yaml", sys.argv[1:], prog=Path(__file__).name))
