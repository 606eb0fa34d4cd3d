"""Object-store inputs and outputs: ``s3://``, ``gs://``, ``abfs://``, ``hdfs://`` and ``file://`` URIs.

Plain functions of URI strings (nothing to pickle), so the Ray engine runs the same code in its
driver and its workers. The filesystems are pyarrow's (the optional ``ray`` extra; Ray Data reads
through them too), cached per process; schemes pyarrow lacks (``az://``, ``adl://``) go through
fsspec. S3 follows the AWS environment: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (MinIO,
moto; a bare ``host:port`` is https unless ``AWS_ALLOW_HTTP=true``), ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_NO_SIGN_REQUEST=true`` for public buckets, and the SDK's usual
credentials (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...). Every failure is a :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import urllib.parse
import uuid
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Callable

__all__ = [
    "StorageError",
    "download_file",
    "exists",
    "is_uri",
    "join",
    "list_files",
    "read_bytes",
    "relative_name",
    "upload_file",
    "write_bytes",
]

# hdfs/viewfs need a local Hadoop client (libjvm); az/adl need fsspec's adlfs.
_SCHEMES = frozenset({"s3", "gs", "gcs", "abfs", "abfss", "az", "adl", "hdfs", "viewfs", "file"})
_NATIVE = frozenset({"s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs"})  # pyarrow's own; others via fsspec
_OBJECT_STORES = frozenset({"s3", "gs", "gcs", "abfs", "abfss", "az"})  # a PUT is atomic: no temporary name
_URI_RE = re.compile(r"^([a-z][a-z0-9+.-]+)://", re.IGNORECASE)
_FILESYSTEMS: dict[tuple[str, ...], tuple[Any, str]] = {}  # (filesystem, path of the URI's netloc)


class StorageError(OSError):
    """A storage URI that could not be listed, read or written.

    ``reason`` (also ``str(error)``) is one line naming the URI and the fix, e.g.
    ``"s3://b/x.jpg: no such object (check the URI)"``; ``uri`` is the URI (or local path) concerned.
    """

    def __init__(self, reason: str, uri: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.uri = reason, uri

    def __reduce__(self) -> tuple[Any, ...]:  # pickles whole: Ray sends workers' errors to the driver
        return type(self), (self.reason, self.uri)


def _fail(uri: str, problem: str) -> StorageError:
    return StorageError(f"{uri}: {problem}", uri)


def is_uri(text: object) -> bool:
    """Whether ``text`` is a str "scheme://..." of a storage scheme (s3, gs, gcs, abfs(s), az, adl, hdfs, file).

    http(s) URLs (:mod:`seglens.io.fetch` downloads those), paths, ``C:\\x`` and non-str values are not.
    """
    m = _URI_RE.match(text) if isinstance(text, str) else None
    return m is not None and m.group(1).lower() in _SCHEMES


def _base(uri: str) -> str:
    """``uri`` without trailing slashes, but "file:///" stays "file://"."""
    base = uri.rstrip("/")
    return base + "//" if base.endswith(":") else base


def join(uri: str, rel: str) -> str:
    """``join("s3://b/out", "a/b.png") == "s3://b/out/a/b.png"``, with no double slashes; ".." is refused."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{rel!r}: '..' is not allowed in a relative name")
    return "/".join([_base(uri), *parts])


def relative_name(root_uri: str, file_uri: str) -> str:
    """The output name of ``file_uri`` found under ``root_uri``, as seglens names a local folder's files.

    The POSIX relative path without extension (``"s3://b/photos/a/b.JPG"`` under ``"s3://b/photos"``
    is ``"a/b"``); a root that is the object itself gives its stem.
    """
    base = _base(root_uri)
    if _base(file_uri) == base:
        rel = base.rsplit("/", 1)[-1]
    elif file_uri.startswith(base + "/"):
        rel = file_uri[len(base) + 1 :]
    else:
        raise ValueError(f"{file_uri} is not under {root_uri}")
    rel = urllib.parse.unquote(rel) if root_uri.lower().startswith("file:") else rel
    return PurePosixPath(rel).with_suffix("").as_posix()


def _env(*names: str) -> str:
    return next((os.environ[n] for n in names if os.environ.get(n)), "")


def _s3(bucket: str, endpoint: str) -> Any:
    from pyarrow import fs as pafs

    kw: dict[str, Any] = {"region": _env("AWS_REGION", "AWS_DEFAULT_REGION") or None}
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        if not sep:
            scheme, host = ("http" if _env("AWS_ALLOW_HTTP").lower() in ("1", "true") else "https"), endpoint
        kw.update(endpoint_override=host.rstrip("/"), scheme=scheme.lower())
    elif bucket:  # AWS itself: a bucket answers only in its own region (as pyarrow's from_uri does)
        with contextlib.suppress(OSError):  # a missing bucket fails later, with its own reason
            kw["region"] = pafs.resolve_s3_region(bucket)
    return pafs.S3FileSystem(anonymous=_env("AWS_NO_SIGN_REQUEST").lower() in ("1", "true"), **kw)


def _resolve(uri: str) -> tuple[Any, str]:
    """The (cached) pyarrow filesystem of ``uri`` and the path in it."""
    if not is_uri(uri):
        raise _fail(str(uri), "not a storage URI (s3://bucket/key, gs://bucket/key, file:///path, ...)")
    try:
        from pyarrow import fs as pafs
    except ImportError:
        raise _fail(uri, "storage URIs need pyarrow: pip install 'seglens[ray]'") from None
    scheme, rest = uri.split("://", 1)
    scheme, (netloc, _, key) = scheme.lower(), rest.partition("/")
    if scheme == "file":
        if netloc not in ("", "localhost"):
            raise _fail(uri, "a file URI names this machine's files: use file:///absolute/path")
        path = urllib.parse.unquote("/" + key)
        return pafs.LocalFileSystem(), (path[1:] if re.match(r"/[A-Za-z]:", path) else path.rstrip("/") or "/")
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if scheme == "s3" else ""
    cache_key = (scheme, netloc, endpoint, _env("AWS_ACCESS_KEY_ID"), _env("AWS_REGION", "AWS_DEFAULT_REGION"))
    if cache_key not in _FILESYSTEMS:
        try:
            if scheme == "s3":
                _FILESYSTEMS[cache_key] = (_s3(netloc, endpoint), netloc)
            else:
                prefix = "" if scheme in _NATIVE else "fsspec+"
                _FILESYSTEMS[cache_key] = pafs.FileSystem.from_uri(f"{prefix}{scheme}://{netloc}")
        except Exception as e:
            raise _error(uri, e) from e
    fs, root = _FILESYSTEMS[cache_key]
    return fs, (f"{root.rstrip('/')}/{key}" if key else root).rstrip("/") or "/"


def _no_bucket(uri: str, fs: Any) -> bool:
    """Whether the s3/gs bucket of ``uri`` is missing (one request; asked only after a "not found")."""
    from pyarrow import fs as pafs

    scheme, rest = uri.split("://", 1)
    with contextlib.suppress(Exception):  # fs None, or the check itself failing: say "no such object"
        return (
            scheme.lower() in ("s3", "gs", "gcs")
            and fs.get_file_info(rest.split("/")[0]).type == pafs.FileType.NotFound
        )
    return False


def _error(uri: str, e: BaseException, fs: Any = None, missing: str = "no such object (check the URI)") -> StorageError:
    """A one-line StorageError for an exception from pyarrow or fsspec."""
    scheme, text = uri.split("://", 1)[0].lower(), str(e)
    if isinstance(e, StorageError):
        return e
    if isinstance(e, ImportError):
        return _fail(uri, f"{text.splitlines()[0]} (install the package for {scheme}:// URIs)")
    if re.search("NO_SUCH_BUCKET|NoSuchBucket", text) or (isinstance(e, FileNotFoundError) and _no_bucket(uri, fs)):
        bucket = uri.split("://", 1)[1].split("/", 1)[0]
        return _fail(uri, f"bucket {bucket!r} does not exist (check the URI and the endpoint, AWS_ENDPOINT_URL)")
    if isinstance(e, FileNotFoundError):
        return _fail(uri, missing)
    if isinstance(e, PermissionError) or re.search(r"ACCESS_DENIED|AccessDenied|Forbidden|\b403\b", text):
        hint = {"s3": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE", "gs": "GOOGLE_APPLICATION_CREDENTIALS"}
        return _fail(uri, f"access denied; check credentials ({hint.get(scheme.replace('gcs', 'gs'), 'of the store')})")
    if re.search("NETWORK_CONNECTION|curlCode|Could not resolve|Connection refused", text):
        where = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if scheme == "s3" else ""
        return _fail(uri, f"cannot connect{' to ' + where if where else ''} (check the network and AWS_ENDPOINT_URL)")
    return _fail(uri, next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)[:300])


def list_files(uri: str, suffixes: Iterable[str] | None = None) -> list[str]:
    """``[uri]`` for one object; for a prefix ("folder"), every object under it, recursively.

    Sorted full URIs spelt like ``uri``. As in a local folder, names in or under a hidden segment
    (".x.jpg", ".cache/") are skipped; ``suffixes`` (e.g. ``{".jpg", ".png"}``) keeps the names whose
    lowercased extension is one of them. StorageError when nothing is there.
    """
    fs, path = _resolve(uri)
    from pyarrow import fs as pafs

    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            return [uri]
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(path)
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except Exception as e:
        raise _error(uri, e, fs, missing="no object or prefix of that name (check the URI)") from e
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    quote = urllib.parse.quote if uri.lower().startswith("file:") else str
    found = []
    for info in infos:
        rel = info.path[len(path.rstrip("/")) + 1 :]
        if info.type != pafs.FileType.File or any(p.startswith(".") for p in rel.split("/")):
            continue
        if wanted is None or PurePosixPath(rel).suffix.lower() in wanted:
            found.append(f"{_base(uri)}/{quote(rel)}")
    if not found:
        kinds = f" ({', '.join(sorted(wanted))})" if wanted else ""
        raise _fail(uri, f"no files{kinds} under this prefix (check the URI)")
    return sorted(found)


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """The content of one object; one larger than ``max_bytes`` is refused before it is read."""
    fs, path = _resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            if max_bytes is not None and f.size() > max_bytes:
                raise _fail(uri, f"{f.size()} bytes, more than the limit of {max_bytes} (raise the limit)")
            return f.read()
    except Exception as e:
        raise _error(uri, e, fs) from e


def _put(uri: str, write: Callable[[BinaryIO], None]) -> None:
    """One PUT on object stores; elsewhere a hidden temporary name next to ``uri``, then a rename."""
    fs, path = _resolve(uri)
    direct = uri.split("://", 1)[0].lower() in _OBJECT_STORES
    parent, _, name = path.rpartition("/")
    tmp = path if direct else f"{parent}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        if not direct:
            fs.create_dir(parent or "/", recursive=True)
        with fs.open_output_stream(tmp) as out:
            write(out)
        if not direct:
            fs.move(tmp, path)
    except Exception as e:
        if not direct:
            with contextlib.suppress(Exception):
                fs.delete_file(tmp)
        raise _error(uri, e, fs) from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``; a reader sees the old content or the new, never a part."""
    _put(uri, lambda out: out.write(data))


def upload_file(local_path: str | os.PathLike[str], uri: str) -> None:
    """Copy a local file to ``uri``, as atomically as :func:`write_bytes`."""
    try:
        src = open(local_path, "rb")
    except OSError as e:
        raise _fail(os.fspath(local_path), f"cannot read this local file ({e.strerror})") from e
    with src:
        _put(uri, lambda out: shutil.copyfileobj(src, out, 1 << 20))


def download_file(uri: str, local_path: str | os.PathLike[str]) -> bool:
    """Copy ``uri`` to ``local_path`` through a temporary name next to it; False when there is no such object."""
    fs, path = _resolve(uri)
    try:
        src = fs.open_input_stream(path)
    except Exception as e:
        if isinstance(e, FileNotFoundError) and not _no_bucket(uri, fs):
            return False
        raise _error(uri, e, fs) from e
    dest = os.fspath(local_path)
    tmp = f"{dest}.{uuid.uuid4().hex[:12]}.part"
    try:
        with src:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            with open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
    except Exception as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        local = isinstance(e, OSError) and e.filename is not None  # pyarrow's errors name no file
        raise (_fail(dest, f"cannot write this local file ({e.strerror})") if local else _error(uri, e)) from e
    return True


def exists(uris: Iterable[str]) -> set[str]:
    """Which of ``uris`` are existing files: one listing per parent prefix, not one request per URI.

    A missing folder or bucket holds no files (no error: the first write there says what is wrong).
    """
    groups: dict[str, list[str]] = {}
    for uri in uris:
        groups.setdefault(uri.rstrip("/").rsplit("/", 1)[0], []).append(uri)
    found: set[str] = set()
    for parent, members in groups.items():
        fs, path = _resolve(parent)
        from pyarrow import fs as pafs

        try:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except Exception as e:
            raise _error(parent, e, fs) from e
        names = {i.base_name for i in infos if i.type == pafs.FileType.File}
        unquote = urllib.parse.unquote if parent.lower().startswith("file:") else str
        found.update(u for u in members if unquote(u.rstrip("/").rsplit("/", 1)[1]) in names)
    return found
