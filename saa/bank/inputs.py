"""The good images a bank is built or calibrated from, as a command line gives them: image files,
folders (their images, not recursive) and glob patterns (``*``, ``?``, ``[...]``; ``**`` any
depth), expanded by the one rule of :func:`saa.datasets.inputs.expand_images` (bounded, link-safe,
each real file once by its device and inode). For a bank, a path that does not exist is an error
here (not later), and every problem is a one-line :class:`~saa.bank.records.BankError`. The same
content under two names is found by its hash when the bank is built."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..datasets import inputs
from ..errors import SaaError
from .records import BankError

__all__ = ["expand_inputs", "MAX_INPUTS"]

#: at most this many images in one command (the expansion's own bound)
MAX_INPUTS = inputs.MAX_MATCHES


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Image paths from command-line words (files as given, folders and patterns expanded; a file
    reached again by another path or a link kept once)."""
    words = [os.path.expanduser(os.fspath(item)) for item in items]
    try:
        found = inputs.expand_images(words)
    except BankError:
        raise
    except SaaError as e:
        raise BankError(str(e)) from None
    for path in found.paths:
        if not os.path.lexists(path):
            raise BankError(f"{inputs.display_name(path)}: no such file or folder")
    return [Path(p) for p in found.paths]
