"""The files of a run: output names, one image's outputs, ``summary.json`` / ``summary.csv``, the
journal a resumed run rebuilds its summary from, and the stale temporaries a killed run left.

The journal, ``OUT/.seglens-journal.jsonl``, is append-only JSON lines, flushed after every
line (to the operating system: a killed process loses nothing written; a power cut may lose
the last lines, as it may lose the outputs): first a header
``{"journal": 1, "settings": {...}, "options": {...}}`` (the run's summary settings and the
options that shape its outputs), then one ``{"entry": {...}}`` per finished input, the entry
exactly as ``summary.json`` lists it. A run writes it from scratch when it starts (with the
entries it takes over from earlier runs, see :func:`previous_entries`) and removes it once
``summary.json`` holds everything; a line cut short by a kill is ignored when read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import InputImage, atomic_open, save_image, save_mask_png, write_csv

OUTPUT_KINDS = ("mask", "overlay", "figure", "confidence")
DEFAULT_OUTPUTS = ("mask", "overlay", "figure")
VIDEO_KINDS = ("overlay", "mask")  # what a video can write (seglens.video.OUTPUT_KINDS)
SUFFIX = {"mask": ".png", "overlay": "_overlay.jpg", "figure": "_figure.png", "confidence": "_confidence.png"}
JOURNAL = ".seglens-journal.jsonl"
SUMMARY_JSON, SUMMARY_CSV = "summary.json", "summary.csv"
_CSV_FIELDS = ("input", "width", "height", "seconds", "class_index", "class_name", "fraction")
# Settings that decide what an input's outputs and entry are: an earlier run's entry is taken
# over only when these agree (device and batch size do not change labels).
_RESULT_SETTINGS = (
    "model", "weights_tag", "weights_sha256", "backend", "precision", "scale", "tile", "overlap", "refine",
)  # fmt: skip
# Temporary names of seglens' own writers, with the final name they stand for:
# seglens.io.atomic_open (tempfile.mkstemp: 8 of [a-z0-9_]) and seglens._video_write
# (".partial", ".partial.a" while the audio is added, ".old" for a folder being replaced).
_TEMPORARY = (
    re.compile(r"^\.(?P<final>.+)\.tmp-[a-z0-9_]{8}$"),
    re.compile(r"^\.(?P<final>.+)\.[0-9a-f]{8}\.(?:partial(?:\.a)?|old)$"),
)


@dataclass(frozen=True)
class RunSummary:
    """What a run did: what ``summary.json`` holds, and the counts the command line prints.

    Attributes:
        items: one entry per input done (segmented now or taken over from an earlier run), in
            input order, images then videos: ``{"input", "width", "height", "seconds",
            "classes", "outputs"}`` (``SegmentationResult.to_dict()`` plus where the outputs
            are; ``"warnings"`` when reading the input raised some), videos as
            :func:`seglens.video.segment_video` returns them.
        failures: ``{"input", "error"}`` per input that failed (``"warnings"`` as above).
        settings: the run's model and settings (``summary.json``'s top-level keys).
        out: the output folder.
        segmented: inputs segmented by this run.
        skipped: inputs whose outputs an earlier run left (``skip_existing``).
    """

    items: tuple[dict, ...]
    failures: tuple[dict, ...]
    settings: dict = field(default_factory=dict)
    out: Path | None = None
    segmented: int = 0
    skipped: int = 0

    @property
    def ok(self) -> bool:
        """True when no input failed."""
        return not self.failures

    def to_dict(self) -> dict:
        """``summary.json``'s content: the settings, ``"images"`` (the items) and ``"failed"``."""
        return {**self.settings, "images": list(self.items), "failed": list(self.failures)}

    def to_json(self) -> str:
        """``summary.json``'s text, byte for byte (UTF-8, indent 2, a final newline)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def unique_names(images: Sequence[InputImage], kinds: Sequence[str]) -> list[str]:
    """Output stems such that no two images write the same file (e.g. 'a_overlay.jpg' vs 'a.jpg')."""
    taken: set[str] = set()
    names = []
    for img in images:
        name, n = img.name, 1
        while any((name + SUFFIX[k]).lower() in taken for k in kinds):
            n += 1
            name = f"{img.name}-{n}"
        taken.update((name + SUFFIX[k]).lower() for k in kinds)
        names.append(name)
    return names


def reserve_video_names(videos: Sequence[InputImage], image_names: Sequence[str]) -> list[InputImage]:
    """Video output stems whose NAME_mask/ folder holds no image output of the same run (installing
    the folder replaces it whole): "clip" becomes "clip-2" when an image is named "clip_mask/..."."""
    taken = {n.lower() for n in image_names}
    out = []
    for video in videos:
        name, n = video.name, 1
        while any(t.startswith(f"{name.lower()}_mask/") for t in taken):
            n += 1
            name = f"{video.name}-{n}"
        out.append(dataclasses.replace(video, name=name))
    return out


def video_output_names(name: str, mask_format: str) -> dict[str, str]:
    """A video's output names relative to the output folder (as seglens.video names them)."""
    return {"overlay": f"{name}_overlay.mp4", "mask": f"{name}_mask" if mask_format == "png" else f"{name}_mask.mkv"}


def write_outputs(result, paths: dict[str, Path], alpha: float, title: str, low_confidence: float = 0.0) -> None:
    """One image's outputs, each written atomically (``paths``: kind -> file)."""
    from ..visualize import heat_palette, outline_low_confidence

    if "mask" in paths:
        save_mask_png(paths["mask"], result.labels, result.palette)
    if "confidence" in paths:
        save_mask_png(paths["confidence"], result.confidence, heat_palette())
    if "overlay" in paths:
        rgb = result.overlay(alpha)
        if result.confidence is not None and low_confidence > 0:
            rgb = outline_low_confidence(
                rgb, result.confidence, threshold=low_confidence, width=max(1, round(max(rgb.shape[:2]) / 500))
            )
        save_image(paths["overlay"], rgb)
    if "figure" in paths:  # drawn with Pillow: matplotlib's layout cost more than a small model (seglens._figure)
        from .._figure import figure_image

        figure = figure_image(
            result.image, result.labels, result.categories, result.palette, title=title, confidence=result.confidence
        )
        with atomic_open(paths["figure"]) as f:  # zlib level 1, Z_RLE: 3x faster than the default, as small
            figure.save(f, format="PNG", compress_level=1, compress_type=3)


def image_entry(img: InputImage, result, paths: dict[str, Path], out: Path, warnings: Sequence[str] = ()) -> dict:
    """An image's summary entry: ``SegmentationResult.to_dict()`` with the input and its outputs."""
    entry = {
        "input": img.label,
        **result.to_dict(),
        "outputs": {k: p.relative_to(out).as_posix() for k, p in paths.items()},
    }
    if warnings:
        entry["warnings"] = list(warnings)
    return entry


def write_summary(out: Path, summary: RunSummary) -> None:
    """``summary.json`` (:meth:`RunSummary.to_json`) and ``summary.csv`` (one row per class)."""
    with atomic_open(out / SUMMARY_JSON, "w") as f:
        f.write(summary.to_json())
    rows = [
        {
            "input": e["input"],
            "width": e["width"],
            "height": e["height"],
            "seconds": e["seconds"],
            "class_index": c["index"],
            "class_name": c["name"],
            "fraction": c["fraction"],
        }
        for e in summary.items
        for c in e["classes"]
    ]
    write_csv(out / SUMMARY_CSV, rows, _CSV_FIELDS)


# ---------------------------------------------------------------- resume


def _same_results(settings: Any, current: dict) -> bool:
    return isinstance(settings, dict) and all(settings.get(k) == current.get(k) for k in _RESULT_SETTINGS)


def previous_entries(out: Path, settings: dict, options: dict) -> dict[str, list[dict]]:
    """Entries of earlier runs into ``out`` that this run would repeat, by input: those of
    ``summary.json``, then the journal's (a run killed before it wrote its summary), later
    ones last. A source made with other result settings (model, weights, backend, precision,
    scale, tile, overlap; for the journal also the output options) is not used."""
    found: dict[str, list[dict]] = defaultdict(list)
    try:
        data = json.loads((out / SUMMARY_JSON).read_text(encoding="utf-8"))
        if _same_results(data, settings):
            for entry in data.get("images", []):
                found[entry["input"]].append(entry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    header, entries = read_journal(out)
    if header is not None and _same_results(header.get("settings"), settings) and header.get("options") == options:
        for entry in entries:
            found[entry["input"]].append(entry)
    return found


def reuse(entries: Sequence[dict] | None, outputs: dict[str, str]) -> dict | None:
    """The latest of an input's earlier ``entries`` that lists every one of ``outputs`` (kind ->
    relative path) under the same name, with its ``"outputs"`` narrowed to them (a clean run's
    entry); None if there is none."""
    for entry in reversed(entries or ()):
        listed = entry.get("outputs")
        if isinstance(listed, dict) and all(listed.get(k) == rel for k, rel in outputs.items()):
            taken = dict(entry)
            taken["outputs"] = dict(outputs)
            return taken
    return None


def read_journal(out: Path) -> tuple[dict | None, list[dict]]:
    """The journal's header and entries; lines that do not parse (cut short by a kill) are skipped."""
    header, entries = None, []
    try:
        text = (out / JOURNAL).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, []
    for n, line in enumerate(text.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if n == 0 and record.get("journal") == 1:
            header = record
        elif (
            header is not None
            and isinstance(record.get("entry"), dict)
            and isinstance(record["entry"].get("input"), str)
        ):
            entries.append(record["entry"])
    return header, entries


class Journal:
    """The run's journal (see the module's description); written from one thread only."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL
        self._file = None

    def start(self, header: dict, entries: Iterable[dict]) -> None:
        """Write the header and the entries taken over (whole, atomically), then keep it open to append."""
        with atomic_open(self.path, "w") as f:
            f.write(_line(header))
            for entry in entries:
                f.write(_line({"entry": entry}))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, entry: dict) -> None:
        if self._file is not None:
            self._file.write(_line({"entry": entry}))
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def remove_stale_temporaries(finals: Iterable[Path]) -> list[Path]:
    """Remove the temporary files and folders seglens' writers make on the way to ``finals``
    (``.NAME.tmp-XXXXXXXX``, ``.NAME.XXXXXXXX.partial``, ...), left by a killed run. Other
    files are not touched. Returns what was removed."""
    wanted: dict[Path, set[str]] = defaultdict(set)
    for final in finals:
        wanted[final.parent].add(final.name)
    removed = []
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            match = entry.startswith(".") and next((m for p in _TEMPORARY if (m := p.match(entry))), None)
            if not match or match["final"] not in names:
                continue
            path = folder / entry
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed
