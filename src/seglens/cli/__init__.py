"""Command line: the only place that prints and chooses exit codes.

Exit codes: 0 every input done; 1 some inputs failed; 2 nothing could start (bad flag, unknown
model, weights missing or unreadable, no images found); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence

from ._argtypes import _UsageError
from ._commands import (
    EXIT_CANNOT_START,
    EXIT_INTERRUPTED,
    _cmd_bench,
    _cmd_eval,
    _cmd_export,
    _cmd_models,
    _cmd_segment,
    _cmd_serve,
)
from ._compare import cmd_compare
from ._parser import _segmenter_configs, build_parser, engine_options
from ._train import cmd_bench_train, cmd_train

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seglens`` command; returns the exit code."""

    def err(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        args = build_parser().parse_args(argv)
        args.segmenter_configs = _segmenter_configs(args)
        args.engine_options = engine_options(args) if hasattr(args, "engine") else {}
    except _UsageError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    try:
        with _sigterm_as_interrupt():
            return _dispatch(args, err)
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns crashes into a clean line
        if args.debug:
            raise
        err(f"error: {type(e).__name__}: {e} (run again with --debug for a traceback)")
        return EXIT_CANNOT_START


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (docker stop, a CI cancel, kill) takes the Ctrl-C path: temporary files removed,
    the summary of what was done written, exit 130. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace, err) -> int:
    if args.command == "models":
        return _cmd_models(args)
    if args.command == "serve":
        return _cmd_serve(args, err)
    if args.command == "bench":
        return cmd_bench_train(args, err) if args.train else _cmd_bench(args, err)
    if args.command == "compare":
        return cmd_compare(args, err)
    if args.command == "export":
        return _cmd_export(args, err)
    if args.command == "eval":
        return _cmd_eval(args, err)
    if args.command == "train":
        return cmd_train(args, err)
    return _cmd_segment(args, err)
