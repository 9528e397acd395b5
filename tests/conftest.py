"""Shared fixtures: the test config, the corpus, helpers that build mail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.config import Config, load
from tests import helpers
from tests import pg as pgcluster

HERE = Path(__file__).parent
EML = HERE / "eml"
TEST_CONFIG = HERE / "config.test.yaml"
CANARY = "s3cret-canary-7731"  # the test account's password: must never be printed


@pytest.fixture(scope="session")
def config() -> Config:
    return load(TEST_CONFIG, env={})


def make_mail(body: str, *, to: str = "sms@bridge.test", subject: str = "x", charset: str = "utf-8") -> bytes:
    msg = EmailMessage()
    msg["From"] = "app@corp.example.com"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body, charset=charset)
    return bytes(msg)


# -- the outbox backends -------------------------------------------------------

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """The PostgreSQL cluster the tests share: the one ``.ci/run`` started
    (``SMS_BRIDGE_PG_DIR``), or a throwaway one of their own."""
    given = os.environ.get("SMS_BRIDGE_PG_DIR")
    if given:
        yield pgcluster.Cluster(Path(given))
        return
    if pgcluster.binaries() is None:
        if os.environ.get("SMS_BRIDGE_REQUIRE_PG") == "1":
            pytest.fail("PostgreSQL is required here (SMS_BRIDGE_REQUIRE_PG=1) but not installed")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    directory = pgcluster.throwaway_directory()
    cluster = pgcluster.create(directory)
    try:
        yield cluster
    finally:
        pgcluster.remove(directory)


@pytest.fixture
def pg_url(pg_cluster: pgcluster.Cluster) -> Iterator[str]:
    """A fresh database on the shared cluster, dropped after the test."""
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test once per outbox backend: the configs :mod:`tests.helpers` makes use it."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    url = request.getfixturevalue("pg_url")
    helpers.QUEUE_URL = url
    try:
        yield "postgresql"
    finally:
        helpers.QUEUE_URL = None
