"""Fixtures for the poller tests: loopback servers on 127.0.0.1, fast retries, a throwaway warehouse and key."""

from __future__ import annotations

import json

import pytest
from pollerfakes import RecordingSleep, TokenEndpoint

from watch_pipeline.pollers.http import RetryPolicy
from watch_pipeline.warehouse import DuckDBWarehouse


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def fast_retry(sleeps) -> RetryPolicy:
    return RetryPolicy(attempts=4, backoff=0.5, max_wait=4.0, jitter=0.25, timeout=2.0, sleep=sleeps)


@pytest.fixture
def warehouse(tmp_path):
    wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    yield wh
    wh.close()


@pytest.fixture(scope="session")
def rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def google_key(httpserver, rsa_pem):
    """(key JSON, token endpoint) for a throwaway service account whose token_uri is the local server."""
    endpoint = TokenEndpoint()
    httpserver.expect_request("/token", method="POST").respond_with_handler(endpoint)
    info = {
        "type": "service_account",
        "project_id": "watch-test",
        "private_key_id": "0123456789abcdef",
        "private_key": rsa_pem,
        "client_email": "poller@watch-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": httpserver.url_for("/token"),
    }
    return json.dumps(info), endpoint
