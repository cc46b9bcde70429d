"""The ``saa`` command line: one sub-command per module in :mod:`saa.commands`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. User errors (:class:`saa.errors.SaaError`) and operating-system errors
(``OSError``: a folder that is not writable, a read-only file system, a full disk, a file name too
long, a file where a folder should be, ...) are printed as one clear message without a traceback:
``saa: error: <path>: <what happened>; <what to do>``; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from pathlib import Path

from .errors import SaaError

COMMAND_MODULES = ["predict", "run", "bank", "prepare", "report", "demo", "ui", "doctor"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saa",
        description="Zero-shot industrial anomaly segmentation (SAA+): Grounding DINO boxes, SAM masks, "
                    "regularised by expert-knowledge and saliency prompts. Models load from local files only.",
        epilog="Run `saa COMMAND --help` for the options of a command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"saa {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--max-pixels", type=_pixels_arg, default=None, metavar="N",
                        help="largest image read, in pixels (default 100000000 = 100 Mpx, or $SAA_MAX_PIXELS; "
                             "0 = no limit); checked from the file header before decoding")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"saa.commands.{name}").register(sub)
    return parser


def _pixels_arg(text: str) -> int:
    from .image_io import parse_max_pixels

    try:
        return parse_max_pixels(text, "")
    except SaaError as e:
        raise argparse.ArgumentTypeError(str(e).lstrip(": ")) from None


_WRITE_HINT = "choose an output folder you can write to (--out DIR) or change its permissions"
_SPACE_HINT = ("free some space or choose another output folder (--out DIR), then run the same command "
               "again (files already written are kept)")
#: errno -> (what happened, what to do)
_OS_ERRORS = {
    errno.EACCES: ("permission denied", _WRITE_HINT),
    errno.EPERM: ("operation not permitted", _WRITE_HINT),
    errno.EROFS: ("read-only file system", "write to a folder on a writable file system (--out DIR)"),
    errno.ENOSPC: ("no space left on the device", _SPACE_HINT),
    errno.EDQUOT: ("disk quota exceeded", _SPACE_HINT),
    errno.EFBIG: ("file too large for this file system", _SPACE_HINT),
    errno.ENAMETOOLONG: ("file name too long", "use shorter file and folder names (at most 255 bytes a name) "
                                               "or a shorter output path"),
    errno.EEXIST: ("already exists",
                   "remove or rename it, or choose another output folder (--out DIR)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder",
                    "remove or rename that file, or choose another output folder (--out DIR)"),
    errno.EISDIR: ("is a folder where a file is to be written", "remove or rename that folder"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and run the command again"),
    errno.ENFILE: ("too many open files in the system", "close other programs and run the command again"),
    errno.EIO: ("input/output error", "check the disk or network file system, then run the command again"),
}


def _first_file_in(path: str) -> str:
    """The deepest existing ancestor of ``path`` that is not a folder (for ENOTDIR), else ``path``."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if os.path.lexists(parent) and not parent.is_dir():
            return str(parent)
    return str(path)


def os_error_message(e: OSError) -> str:
    """One line for an OSError: ``<path>: <what happened>; <what to do>``."""
    path = e.filename2 if e.filename2 is not None else e.filename  # a rename: name the final file
    what, todo = _OS_ERRORS.get(e.errno, (None, None))
    if what is None:
        what = (e.strerror or str(e) or type(e).__name__).strip()
        todo = "check the path and run the command again"
    if path is not None:
        path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
        if e.errno == errno.ENOTDIR:
            blocker = _first_file_in(path)
            if blocker != path:
                what = f"{blocker} is a file, not a folder"
        elif e.errno == errno.EEXIST and os.path.isfile(path):
            what = "is a file, not a folder"
        return f"{path}: {what}; {todo}"
    if e.errno is None:
        return str(e)  # e.g. OSError("<path>: PNG encoding failed"): already one line with its path
    return f"{what}; {todo}"


def execute(func, args, prog: str = "saa") -> int:
    """Run ``func(args)`` with logging set up from ``--debug``/``--quiet`` and user errors printed
    as one message (traceback only with ``--debug``). Shared by ``saa`` and the run_*.py scripts."""
    debug = getattr(args, "debug", False)
    level = logging.DEBUG if debug else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "timm", "PIL", "matplotlib", "httpx", "gradio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not debug:
        import warnings

        warnings.filterwarnings("ignore")
    if getattr(args, "max_pixels", None) is not None:
        from .image_io import set_max_pixels

        set_max_pixels(args.max_pixels)
    try:
        return int(func(args) or 0)
    except SaaError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if debug:
            raise
        print(f"{prog}: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted. Results written so far are kept; run the same command again to resume.",
              file=sys.stderr)
        return 130


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return execute(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
