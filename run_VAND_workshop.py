#!/usr/bin/env python
"""Evaluate SAA+ on the VisA challenge set of the VAND 2023 workshop (writes the submission tree under OUT/vand/).

Config: configs/visa_challenge.yaml (its dataset.root is the default data root). Options:
--data-root DIR, --categories CAT ..., --device D, --out DIR (default results/visa_challenge),
--set KEY=VALUE (repeatable), --no-resume, --no-progress. Same as: saa run configs/visa_challenge.yaml ...
Zero-shot track: OUT/vand/visa_challenge/0shot/0/<category>/Unknown/{classification,segmentation}/.

Few-shot track: --k-shot K (a method that compares images: --method lite or --preset improved) reads
the same root as the ``vand_kshot`` layout (Test/<cat>/Images plus Train/<cat>/Images and
Train/<cat>/selected_samples_per_run.txt, or --seeds DIR) and runs every seed run the lists name for
K (--seed-run R: that one only), each into OUT/run<R>/ (default OUT: results/visa_challenge-<K>shot),
every test image scored against the K listed good images only; the submission is ONE tree:
OUT/vand/visa_challenge/<K>shot/<R>/<category>/Unknown/{classification,segmentation}/.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saa.commands.run import main_for  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_for(ROOT / "configs" / "visa_challenge.yaml", sys.argv[1:], prog=Path(__file__).name,
                      fewshot_submission=True))
