"""Python warnings raised while one item is read, kept with that item instead of printed.

Why not ``warnings.catch_warnings(record=True)``: it swaps process-wide state (``warnings.showwarning``
and ``warnings.filters``) on entry and puts back what it saved on exit. Before Python 3.14 (and in
3.14 unless ``sys.flags.context_aware_warnings`` is on) two reading threads using it at once
restore each other's state: one thread's warnings land in the other's list, or escape to the
console, or a stale recorder stays installed for good.

What is done instead: one :class:`_Router` is made ``warnings.showwarning`` by the thread that
starts a run (:func:`routing`), before any reading thread exists. The router looks at the
*calling* thread: a thread inside :func:`capture` gets the warning appended to its own list
(thread-local, so no thread sees another's); any other thread's warning goes on to the
``showwarning`` that was in place before (printed, or recorded by an outer ``catch_warnings``),
so nothing else in the process changes. The filters are left alone: a warning the program's
filters ignore is not recorded, one they turn into an error fails the item as any error would.
When the last run ends, the previous ``showwarning`` is put back (unless someone replaced the
router meanwhile: then theirs stays).

Python shows a ``"default"``-action warning once per code location; :func:`capture` resets those
once-registries when an item starts (a process-wide counter bump, harmless to other threads:
at worst one of their repeated warnings shows once more), so two files with the same problem
both get it recorded.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

__all__ = ["capture", "routing"]

_local = threading.local()  # .sink: the list of the item this thread is reading, or None
_lock = threading.Lock()
_users = 0  # runs currently routing


class _Router:
    """``warnings.showwarning`` replacement: per-thread capture, else the previous function."""

    def __init__(self, fallback) -> None:
        self.fallback = fallback

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        sink = getattr(_local, "sink", None)
        if sink is None:
            self.fallback(message, category, filename, lineno, file, line)
            return
        line = f"{category.__name__}: {' '.join(str(message).split())}"  # one line
        if line not in sink:  # a decoder may read the same damaged tag more than once
            sink.append(line)


@contextlib.contextmanager
def routing() -> Iterator[None]:
    """Install the router for the duration of a run (nested and concurrent runs share one)."""
    global _users
    with _lock:
        if not isinstance(warnings.showwarning, _Router):
            warnings.showwarning = _Router(warnings.showwarning)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            current = warnings.showwarning
            if _users == 0 and isinstance(current, _Router):
                warnings.showwarning = current.fallback


@contextlib.contextmanager
def capture(sink: list[str]) -> Iterator[list[str]]:
    """Warnings this thread raises inside the block go to ``sink`` as ``"Category: message"``
    lines, each distinct one once (while :func:`routing` is active; else they are shown as usual)."""
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    reset = getattr(warnings, "_filters_mutated", None)  # CPython: invalidates once-registries
    if reset is not None:
        reset()
    try:
        yield sink
    finally:
        _local.sink = previous
