"""The ``seglens`` console script: imports the CLI (torch and friends: seconds) inside a guard,
so Ctrl-C while it starts exits 130 with one line instead of an import traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return cli_main()
