"""The images a bank is built or calibrated from (saa/bank/inputs.py) are expanded by the one rule of
saa.datasets.inputs.expand_images (the one `saa predict` uses): the same files in the same order, a
file reached again through a link kept once, a link back to an ancestor never followed forever; what
is wrong is one BankError line."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from saa.bank import BankError
from saa.bank.inputs import expand_inputs
from saa.datasets.inputs import expand_images


def test_bank_inputs_are_expanded_by_the_one_rule(tmp_path):
    for rel in ("a/1.png", "a/2.jpg", "b/c/3.png", "b/notes.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".txt":
            p.write_text("x")
        else:
            cv2.imwrite(str(p), np.full((8, 8, 3), 7, np.uint8))
    (tmp_path / "b" / "loop").symlink_to(tmp_path)  # a link back to an ancestor
    (tmp_path / "a" / "same.png").symlink_to(tmp_path / "a" / "1.png")  # the same file again
    words = [str(tmp_path / "a"), str(tmp_path / "**" / "*.png"), str(tmp_path / "a" / "1.png")]
    want = expand_images(words)
    got = expand_inputs(words)
    assert [str(p) for p in got] == want.paths
    assert sorted(os.path.basename(p) for p in want.paths) == ["1.png", "2.jpg", "3.png"]
    assert want.duplicates  # the link and the repeated path: each file once
    for words, message in (([tmp_path / "none.png"], "no such file or folder"),
                           ([tmp_path / "b" / "*.jpg"], "no image file matches"),
                           ([tmp_path / "b"], "folder has no image file")):
        with pytest.raises(BankError, match=message) as e:
            expand_inputs(words)
        assert "\n" not in str(e.value)
