"""Finding inputs: :func:`find_images` expands files, folders, glob patterns and URLs."""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import IMAGE_EXTENSIONS, StrPath
from .fetch import _OTHER_SCHEME, _other_scheme, _url_key, _url_name, is_url

__all__ = ["InputImage", "find_images"]


@dataclass(frozen=True)
class InputImage:
    """One image found by :func:`find_images`.

    Attributes:
        path: the file, or an http(s) URL string (as given); pass it to :func:`load_image`.
        name: output stem, a POSIX relative path without extension (e.g. "a/b"), unique
            (case-insensitively) within one :func:`find_images` call.
    """

    path: Path | str
    name: str

    @property
    def is_url(self) -> bool:
        """Whether ``path`` is an http(s) URL rather than a file."""
        return is_url(self.path)

    @property
    def label(self) -> str:
        """The input as shown in messages and summaries: the URL, or ``str(path)``."""
        return str(self.path)


def find_images(
    inputs: Sequence[StrPath], *, suffixes: frozenset[str] = IMAGE_EXTENSIONS, exclude: Sequence[StrPath] = ()
) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """Expand files, folders, glob patterns and URLs into a sorted, de-duplicated list of images.

    Folders are searched recursively for files with an ``IMAGE_EXTENSIONS`` suffix (any case),
    skipping names that start with "."; a folder file is named by its path relative to the
    folder ("photos/a/b.JPG" -> "a/b"). A file given directly is accepted whatever its
    extension and named by its stem, as are image files matched by a glob pattern (a string
    with ``*?[`` that is not an existing path; ``**`` recurses). Names that collide
    (case-insensitively) get their lowercase extension appended ("cat_jpg", "cat_png"); any
    still colliding get "-2", "-3", ... in sorted-path order.

    A str starting with http:// or https:// (:func:`is_url`) is an image URL: it is not
    checked here (no network access), its ``path`` is the URL string, and it is named by the
    last segment of its path, percent-decoded, without query and extension, made safe for file
    names and cut to 100 characters, else by its host ("https://example.com/img/cat.jpg?x=1" ->
    "cat", "https://example.com/" -> "example.com"). The same URL given twice (scheme and host
    in any case, fragment ignored) is listed once, as first spelled. Other schemes ("ftp://...",
    "file://...", "data:...") are problems, unless a file of that name exists.

    Args:
        inputs: file paths, folder paths, glob patterns and http(s) URLs.
        suffixes: what folders and glob patterns pick up (default ``IMAGE_EXTENSIONS``; the
            CLI adds video suffixes).
        exclude: folders that folder walks and glob patterns skip (the CLI's output folder, so a
            second run over "." does not segment the first run's outputs).

    Returns:
        ``(images, problems)``: the files sorted by path, each file once, then the URLs in the
        order given; names are made unique over both together. Problems are ``(input,
        reason)`` for inputs that are missing, match nothing, hold no images or have another
        URL scheme.
    """
    skip = {Path(e).resolve() for e in exclude}
    found: list[tuple[Path, str]] = []
    urls: dict[str, str] = {}  # _url_key -> the URL as first given; dicts keep input order
    problems: list[tuple[str, str]] = []
    for item in inputs:
        text = os.fsdecode(item)
        if is_url(text):
            urls.setdefault(_url_key(text), text)
            continue
        path = Path(text)
        if path.is_dir():
            files = _walk_images(path, problems, suffixes, skip)
            found += [(f, f.relative_to(path).with_suffix("").as_posix()) for f in files]
            if not files:
                problems.append((text, f"folder contains no images ({', '.join(sorted(suffixes))})"))
        elif path.is_file():
            found.append((path, path.stem))
        elif path.exists():
            problems.append((text, "not a regular file or folder"))
        elif _other_scheme(text):
            problems.append((text, _OTHER_SCHEME))
        elif any(c in text for c in "*?["):
            files = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [f for f in files if f.suffix.lower() in suffixes and f.is_file() and not _under(f, skip)]
            found += [(f, f.stem) for f in files]
            if not files:
                problems.append((text, "pattern matched no image files"))
        else:
            problems.append((text, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for path, name in found:  # the first mention of a file wins
        if (key := path.resolve()) not in seen:
            seen.add(key)
            unique.append((path, name))
    unique.sort(key=lambda item: item[0].as_posix())
    url_names = [_url_name(url) for url in urls.values()]
    names = _unique_names([(n, p.suffix) for p, n in unique] + url_names)
    sources: list[Path | str] = [p for p, _ in unique] + list(urls.values())
    return [InputImage(path=p, name=n) for p, n in zip(sources, names)], problems


def _under(path: Path, folders: set[Path]) -> bool:
    return bool(folders) and any(p in folders for p in path.resolve().parents)


def _walk_images(
    root: Path,
    problems: list[tuple[str, str]],
    suffixes: frozenset[str] = IMAGE_EXTENSIONS,
    skip: set[Path] = frozenset(),
) -> list[Path]:
    def on_error(e: OSError) -> None:
        problems.append((os.fsdecode(e.filename or root), f"cannot read folder ({e.strerror or e})"))

    files = []
    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (skip and Path(folder, d).resolve() in skip))
        for name in sorted(names):
            path = Path(folder, name)
            if not name.startswith(".") and path.suffix.lower() in suffixes and path.is_file():
                files.append(path)
    return files


def _unique_names(items: list[tuple[str, str]]) -> list[str]:
    """Unique names for ``(name, suffix)`` items: see :func:`find_images`."""
    safe = ["/".join(p if p not in ("", ".", "..") else "_" for p in n.split("/")) for n, _ in items]
    counts = Counter(name.casefold() for name in safe)
    names = [
        f"{name}_{suffix.lower()[1:]}" if counts[name.casefold()] > 1 and suffix else name
        for (_, suffix), name in zip(items, safe)
    ]
    taken: set[str] = set()
    result = []
    for name in names:  # items are in output order: sorted files, then URLs
        unique, k = name, 2
        while unique.casefold() in taken:
            unique, k = f"{name}-{k}", k + 1
        taken.add(unique.casefold())
        result.append(unique)
    return result
