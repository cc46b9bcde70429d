"""``python -m saa``: the same as the ``saa`` command."""
import sys

from .cli import main

sys.exit(main())
