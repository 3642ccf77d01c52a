"""Shared fixtures: real servers (moto for AWS), never mocks of our own code."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from tests.service import free_port

AWS_TEST_ENV = {
    "AWS_REGION": "us-east-1",
    # boto3 reads only AWS_DEFAULT_REGION; pyarrow and our sinks read AWS_REGION too.
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
# Variables that would point boto3 or pyarrow away from the test server.
AWS_OVERRIDDEN = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


# moto's server logs every request; a failing test's report should show the failure.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on a free loopback port, with the AWS variables pointing at it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*AWS_TEST_ENV, *AWS_OVERRIDDEN, "AWS_ENDPOINT_URL")}
    for key in AWS_OVERRIDDEN:
        os.environ.pop(key, None)
    os.environ.update(AWS_TEST_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
