"""seglens as a library: :func:`segment` runs what ``seglens segment`` runs.

One pipeline under the command line, the benchmark (``seglens bench`` times it) and anything
else that segments many inputs into a folder: input discovery, unique output names, batching
through :meth:`seglens.inference.Segmenter.stream`, atomic writing, per-input results and
failures, a journal for resuming after any kill, ``summary.json`` / ``summary.csv``.

Nothing here prints or exits: results come back as a :class:`RunSummary`, events through
``on_event``, progress through a tqdm-like factory, and errors as exceptions in API terms
(``max_pixels=``, ``outputs=``), which the command line words as its flags.

Imports: this package uses :mod:`seglens.inference`, :mod:`seglens.io`, :mod:`seglens.video` and
:mod:`seglens.visualize`; none of them imports it.

- ``_run``: :func:`segment`, the run itself, :class:`RunEvent`, :class:`RunError`, :class:`RunInterrupted`.
- ``_files``: output names, writing, the summary, the journal, stale temporaries; :class:`RunSummary`.
- ``_warnings``: per-thread capture of Python warnings while an input is read.
"""

from __future__ import annotations

from ._files import DEFAULT_OUTPUTS, JOURNAL, OUTPUT_KINDS, RunSummary
from ._run import RunError, RunEvent, RunInterrupted, segment

__all__ = [
    "DEFAULT_OUTPUTS",
    "JOURNAL",
    "OUTPUT_KINDS",
    "RunError",
    "RunEvent",
    "RunInterrupted",
    "RunSummary",
    "segment",
]
