"""A real S3-compatible server on 127.0.0.1 for tests: moto's server mode, not an in-process mock.

``from tests._s3 import s3_server`` and take ``s3_server`` as a parameter. The fixture starts one
``ThreadedMotoServer`` per session on a free port and points the standard AWS environment at it
(``AWS_ENDPOINT_URL``, test credentials, region), so pyarrow, boto3 and Ray workers started
afterwards (they inherit ``os.environ``) all talk to it; the old environment comes back at the end.
Buckets outlive a test: give each test its own bucket name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Set while the server runs; the rest of the AWS variables that could redirect or sign requests are removed.
_ENV_REMOVED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_NO_SIGN_REQUEST")


@dataclass
class S3Server:
    endpoint: str  # "http://127.0.0.1:PORT"
    client: Any  # a boto3 S3 client for the server, for test setup and inspection

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 lowercase characters; again is fine) and return "s3://name"."""
        try:
            self.client.create_bucket(Bucket=name)
        except self.client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    pytest.importorskip("pyarrow.fs", reason="pyarrow is needed for the S3 tests")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in _ENV_REMOVED:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)  # nothing from ~/.aws
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        try:
            yield S3Server(endpoint=endpoint, client=client)
        finally:
            server.stop()
