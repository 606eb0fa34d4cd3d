"""seglens.io.storage: real round trips against moto's S3 server on 127.0.0.1, and file:// on tmp_path."""

from __future__ import annotations

import io
import os
import pickle
import socket
import subprocess
import sys
from importlib.util import find_spec

import pytest
from PIL import Image

from seglens.io import storage
from seglens.io.storage import (
    StorageError,
    download_file,
    exists,
    is_uri,
    join,
    list_files,
    read_bytes,
    relative_name,
    upload_file,
    write_bytes,
)

needs_pyarrow = pytest.mark.skipif(find_spec("pyarrow") is None, reason="pyarrow is not installed")


def _image(fmt: str, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format=fmt)
    return buf.getvalue()


# Objects under s3://seglens-photos/; "photosx/" shares the string prefix "photos" but is another folder.
OBJECTS = {
    "photos/cat.jpg": _image("JPEG", (200, 10, 10)),
    "photos/nested/dog.png": _image("PNG", (10, 200, 10)),
    "photos/nested/deeper/owl.JPG": _image("JPEG", (10, 10, 200)),
    "photos/.x.jpg": _image("JPEG", (1, 2, 3)),
    "photos/.cache/thumb.jpg": _image("JPEG", (4, 5, 6)),
    "photos/notes.txt": b"not an image\n",
    "photosx/other.jpg": _image("JPEG", (7, 8, 9)),
}
IMAGES = {".jpg", ".png"}


@pytest.fixture(scope="module")
def photos(s3_server) -> str:
    root = s3_server.make_bucket("seglens-photos")
    for key, data in OBJECTS.items():
        s3_server.client.put_object(Bucket="seglens-photos", Key=key, Body=data)
    return root


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/key.jpg", True),
        ("S3://bucket", True),
        ("gs://bucket/a", True),
        ("gcs://bucket/a", True),
        ("hdfs://namenode:8020/data", True),
        ("abfs://container@account.dfs.core.windows.net/x", True),
        ("az://container/x", True),
        ("file:///tmp/x.jpg", True),
        ("http://example.com/x.jpg", False),
        ("https://example.com/x.jpg", False),
        ("ftp://example.com/x.jpg", False),
        ("photos/a.jpg", False),
        ("/abs/photos", False),
        ("C:\\photos\\a.jpg", False),
        ("C://photos", False),
        ("s3:/bucket", False),
        ("", False),
        (None, False),
        (b"s3://bucket/x", False),
    ],
)
def test_is_uri(text, expected):
    assert is_uri(text) is expected


@pytest.mark.parametrize(
    ("uri", "rel", "expected"),
    [
        ("s3://b/out", "a/b.png", "s3://b/out/a/b.png"),
        ("s3://b/out/", "a/b.png", "s3://b/out/a/b.png"),
        ("s3://b/out//", "/a//b.png", "s3://b/out/a/b.png"),
        ("s3://b", "x.png", "s3://b/x.png"),
        ("gs://b/out", "./a\\b.png", "gs://b/out/a/b.png"),
        ("file:///", "tmp/x.png", "file:///tmp/x.png"),
        ("file:///tmp/out/", "x.png", "file:///tmp/out/x.png"),
    ],
)
def test_join(uri, rel, expected):
    assert join(uri, rel) == expected


def test_join_refuses_parent():
    with pytest.raises(ValueError, match=r"'\.\.'"):
        join("s3://b/out", "../escape.png")


@pytest.mark.parametrize(
    ("root", "file", "expected"),
    [
        ("s3://b/photos", "s3://b/photos/a/b.JPG", "a/b"),
        ("s3://b/photos/", "s3://b/photos/cat.jpg", "cat"),
        ("s3://b", "s3://b/photos/x.y.png", "photos/x.y"),
        ("s3://b/photos/cat.jpg", "s3://b/photos/cat.jpg", "cat"),
        ("file:///tmp/in%20dir", "file:///tmp/in%20dir/my%20cat.jpg", "my cat"),
        ("file:///", "file:///tmp/a.png", "tmp/a"),
    ],
)
def test_relative_name(root, file, expected):
    assert relative_name(root, file) == expected


def test_relative_name_outside_root():
    with pytest.raises(ValueError, match="not under"):
        relative_name("s3://b/photos", "s3://b/photosx/other.jpg")


def test_storage_error_is_oserror_and_pickles():
    err = StorageError("s3://b/x.jpg: no such object (check the URI)", "s3://b/x.jpg")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, OSError)
    assert (back.reason, back.uri, str(back)) == (err.reason, "s3://b/x.jpg", err.reason)


def test_error_reasons_for_denied_and_other_failures():
    denied = storage._error(
        "s3://b/x.jpg", OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied")
    )
    assert denied.reason == (
        "s3://b/x.jpg: access denied; check credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    )
    assert storage._error("gs://b/x", PermissionError("nope")).reason == (
        "gs://b/x: access denied; check credentials (GOOGLE_APPLICATION_CREDENTIALS)"
    )
    assert storage._error("s3://b/x", OSError("first line\nsecond line")).reason == "s3://b/x: first line"


def test_not_a_storage_uri():
    with pytest.raises(StorageError) as e:
        read_bytes("/local/path.jpg")
    assert e.value.reason == (
        "/local/path.jpg: not a storage URI (s3://bucket/key, gs://bucket/key, file:///path, ...)"
    )


def test_list_files_with_suffixes(photos):
    expected = [
        "s3://seglens-photos/photos/cat.jpg",
        "s3://seglens-photos/photos/nested/deeper/owl.JPG",
        "s3://seglens-photos/photos/nested/dog.png",
    ]
    assert list_files(f"{photos}/photos", IMAGES) == expected
    assert list_files(f"{photos}/photos/", {".JPG", ".PNG"}) == expected  # suffixes in any case
    assert list_files(f"{photos}/photos") == [*expected, "s3://seglens-photos/photos/notes.txt"]
    assert [relative_name(f"{photos}/photos", u) for u in expected] == ["cat", "nested/deeper/owl", "nested/dog"]
    everything = list_files(photos, IMAGES)  # the bucket itself
    assert everything == [*expected, "s3://seglens-photos/photosx/other.jpg"]


def test_list_files_single_object(photos):
    uri = f"{photos}/photos/nested/dog.png"
    assert list_files(uri, IMAGES) == [uri]
    assert relative_name(uri, list_files(uri)[0]) == "dog"


def test_read_bytes_round_trip(photos):
    for key in ("photos/cat.jpg", "photos/nested/deeper/owl.JPG", "photos/notes.txt"):
        assert read_bytes(f"{photos}/{key}") == OBJECTS[key]
    data = OBJECTS["photos/cat.jpg"]
    assert read_bytes(f"{photos}/photos/cat.jpg", max_bytes=len(data)) == data
    with pytest.raises(StorageError) as e:
        read_bytes(f"{photos}/photos/cat.jpg", max_bytes=100)
    assert e.value.reason == (
        f"s3://seglens-photos/photos/cat.jpg: {len(data)} bytes, more than the limit of 100 (raise the limit)"
    )


def test_missing_object_prefix_and_bucket(photos, tmp_path):
    with pytest.raises(StorageError) as e:
        read_bytes(f"{photos}/photos/nope.jpg")
    assert e.value.reason == "s3://seglens-photos/photos/nope.jpg: no such object (check the URI)"
    assert e.value.uri == "s3://seglens-photos/photos/nope.jpg"
    with pytest.raises(StorageError) as e:
        list_files(f"{photos}/nope")
    assert e.value.reason == "s3://seglens-photos/nope: no object or prefix of that name (check the URI)"
    with pytest.raises(StorageError) as e:
        list_files(f"{photos}/photos", {".webp"})
    assert e.value.reason == "s3://seglens-photos/photos: no files (.webp) under this prefix (check the URI)"
    no_bucket = "bucket 'seglens-nobucket' does not exist (check the URI and the endpoint, AWS_ENDPOINT_URL)"
    for call, uri in [
        (read_bytes, "s3://seglens-nobucket/x.jpg"),
        (list_files, "s3://seglens-nobucket/photos"),
        (lambda u: write_bytes(u, b"x"), "s3://seglens-nobucket/out/x.png"),
        (lambda u: download_file(u, tmp_path / "x.jpg"), "s3://seglens-nobucket/x.jpg"),
    ]:
        with pytest.raises(StorageError) as e:
            call(uri)
        assert e.value.reason == f"{uri}: {no_bucket}"
    assert list(tmp_path.iterdir()) == []
    assert exists(["s3://seglens-nobucket/out/x.png"]) == set()  # nothing exists there; writing says why


def test_write_upload_download_exists(s3_server, tmp_path):
    out = s3_server.make_bucket("seglens-out")
    png, jpg = _image("PNG", (1, 1, 1)), _image("JPEG", (2, 2, 2))
    write_bytes(join(out, "run/a/b.png"), png)
    assert s3_server.client.get_object(Bucket="seglens-out", Key="run/a/b.png")["Body"].read() == png
    write_bytes(join(out, "run/a/b.png"), jpg)  # overwrite
    assert s3_server.client.get_object(Bucket="seglens-out", Key="run/a/b.png")["Body"].read() == jpg
    local = tmp_path / "c.png"
    local.write_bytes(png)
    upload_file(local, join(out, "run/c.png"))
    assert s3_server.client.get_object(Bucket="seglens-out", Key="run/c.png")["Body"].read() == png

    assert download_file(join(out, "run/a/b.png"), tmp_path / "down/b.png") is True
    assert (tmp_path / "down/b.png").read_bytes() == jpg
    assert download_file(join(out, "run/missing.png"), tmp_path / "down/missing.png") is False
    assert sorted(p.name for p in (tmp_path / "down").iterdir()) == ["b.png"]  # no partial file left

    asked = [
        "s3://seglens-out/run/a/b.png",
        "s3://seglens-out/run/a/zz.png",
        "s3://seglens-out/run/c.png",
        "s3://seglens-out/run/a",  # a "folder", not a file
        "s3://seglens-out/other/x.png",
        "s3://seglens-out/run/missing/deep.png",
    ]
    assert exists(asked) == {"s3://seglens-out/run/a/b.png", "s3://seglens-out/run/c.png"}
    assert exists([]) == set()
    assert list_files(out) == ["s3://seglens-out/run/a/b.png", "s3://seglens-out/run/c.png"]


def test_exists_lists_once_per_parent(s3_server, monkeypatch):
    out = s3_server.make_bucket("seglens-exists")
    for name in ("a.png", "b.png", "c.png"):
        write_bytes(join(out, f"dir/{name}"), b"x")
    calls = []
    real = storage._resolve
    monkeypatch.setattr(storage, "_resolve", lambda uri: calls.append(uri) or real(uri))
    asked = [join(out, f"dir/{n}.png") for n in "abcdefgh"]
    assert exists(asked) == set(asked[:3])
    assert calls == ["s3://seglens-exists/dir"]


def test_endpoint_from_environment(s3_server, monkeypatch):
    bucket = s3_server.make_bucket("seglens-env")
    write_bytes(join(bucket, "x.bin"), b"hello")
    host_port = s3_server.endpoint.split("://", 1)[1]
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    # AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    assert read_bytes(f"{bucket}/x.bin") == b"hello"
    # host:port without a scheme: http only with AWS_ALLOW_HTTP
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", host_port)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    assert read_bytes(f"{bucket}/x.bin") == b"hello"
    # nothing listening: one line naming the endpoint
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    with pytest.raises(StorageError) as e:
        read_bytes(f"{bucket}/x.bin")
    assert (
        e.value.reason == f"s3://seglens-env/x.bin: cannot connect to {dead} (check the network and AWS_ENDPOINT_URL)"
    )


@needs_pyarrow
def test_file_uri_round_trip(tmp_path):
    root = (tmp_path / "in dir").as_uri()  # "file:///.../in%20dir"
    assert root.endswith("/in%20dir")
    write_bytes(join(root, "a/b.png"), b"png-bytes")
    write_bytes(join(root, "my cat.jpg"), b"old")
    write_bytes(join(root, "my cat.jpg"), b"jpg-bytes")  # overwrite through a temporary name
    assert sorted(p.name for p in (tmp_path / "in dir").iterdir()) == ["a", "my cat.jpg"]  # no temporary left
    assert (tmp_path / "in dir/a/b.png").read_bytes() == b"png-bytes"

    files = list_files(root, IMAGES)
    assert files == [f"{root}/a/b.png", f"{root}/my%20cat.jpg"]
    assert [relative_name(root, f) for f in files] == ["a/b", "my cat"]
    assert [read_bytes(f) for f in files] == [b"png-bytes", b"jpg-bytes"]
    assert exists([*files, f"{root}/a/none.png", f"{root}/none/x.png"]) == set(files)

    local = tmp_path / "upload.bin"
    local.write_bytes(b"uploaded")
    upload_file(local, join(root, "deep/er/u.bin"))
    assert (tmp_path / "in dir/deep/er/u.bin").read_bytes() == b"uploaded"
    assert download_file(join(root, "deep/er/u.bin"), tmp_path / "d/u.bin") is True
    assert (tmp_path / "d/u.bin").read_bytes() == b"uploaded"
    assert download_file(join(root, "nope.bin"), tmp_path / "d/nope.bin") is False
    assert not (tmp_path / "d/nope.bin").exists()
    with pytest.raises(StorageError) as e:
        read_bytes(join(root, "nope.bin"))
    assert e.value.reason == f"{root}/nope.bin: no such object (check the URI)"


@needs_pyarrow
def test_local_side_errors(tmp_path):
    root = tmp_path.as_uri()
    write_bytes(join(root, "x.bin"), b"x")
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    dest = tmp_path / "blocker" / "x.bin"
    with pytest.raises(StorageError) as e:
        download_file(join(root, "x.bin"), dest)
    assert e.value.reason == f"{dest}: cannot write this local file (File exists)"
    with pytest.raises(StorageError) as e:
        upload_file(tmp_path / "missing.bin", join(root, "y.bin"))
    assert e.value.reason == f"{tmp_path / 'missing.bin'}: cannot read this local file (No such file or directory)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "x.bin"]


def test_a_new_process_needs_only_the_environment(s3_server):
    """As a Ray worker would: a fresh interpreter, configured by the inherited os.environ alone."""
    bucket = s3_server.make_bucket("seglens-child")
    write_bytes(join(bucket, "in/a.jpg"), b"from the parent")
    code = (
        "from seglens.io.storage import list_files, read_bytes, write_bytes\n"
        "[uri] = list_files('s3://seglens-child/in', {'.jpg'})\n"
        "write_bytes('s3://seglens-child/out/a.png', read_bytes(uri) + b' and the child')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=dict(os.environ))
    body = s3_server.client.get_object(Bucket="seglens-child", Key="out/a.png")["Body"].read()
    assert body == b"from the parent and the child"
