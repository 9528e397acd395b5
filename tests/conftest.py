"""Shared fixtures: the test config, the corpus, helpers that build mail."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from bridge.config import Config, load

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
