"""The ``saa`` command line: one sub-command per module in :mod:`saa.commands`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. User errors (:class:`saa.errors.SaaError`) are printed as one clear message
without a traceback; ``--debug`` shows it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import SaaError

COMMAND_MODULES = ["predict", "run", "prepare", "report", "demo", "ui"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saa",
        description="Zero-shot industrial anomaly segmentation (SAA+): Grounding DINO boxes, SAM masks, "
                    "regularised by expert-knowledge and saliency prompts. Models load from local files only.",
        epilog="Run `saa COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"saa.commands.{name}").register(sub)
    return parser


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
    try:
        return int(func(args) or 0)
    except SaaError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
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
