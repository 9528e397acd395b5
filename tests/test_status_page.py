"""The status page: in a real headless Chromium (selenium), and its refusals over plain HTTP.

Screenshots of each page are written to ``$SMS_BRIDGE_ARTIFACTS`` (default
``artifacts/screenshots`` in the work tree), not committed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.config import load_text
from bridge.core.access import hash_password
from bridge.outbox import State
from tests.helpers import (
    SIM_PASSWORD,
    RunningBridge,
    config_data,
    eventually,
    free_port,
    mail,
    running_bridge,
    running_simulator,
    submit,
)

ADMIN_PASSWORD = "page-password-canary-9"
K1 = "96597119440"
ARTIFACTS = Path(os.environ.get("SMS_BRIDGE_ARTIFACTS", Path(__file__).parent.parent / "artifacts" / "screenshots"))


@asynccontextmanager
async def page_bridge(tmp_path: Path, *, users: bool = True, **admin: Any) -> AsyncIterator[tuple[RunningBridge, str]]:
    port = free_port()
    async with running_simulator() as (_, url):
        data = config_data(tmp_path, url, extra={"admin": {"listen": f"127.0.0.1:{port}", **admin}})
        data["accounts"]["kwt"]["senders"] = ["KWT-SMS", "NOT-ALLOWED"]
        if users:
            data["admin"]["users"] = {"admin": hash_password(ADMIN_PASSWORD)}
        config = load_text(yaml.safe_dump(data), env={})
        async with running_bridge(config) as bridge:
            yield bridge, f"http://127.0.0.1:{port}"


async def a_failed_and_a_warned_message(bridge: RunningBridge) -> tuple[str, str]:
    """One SMS the provider refuses (a sender ID it does not know), one sent with its emoji removed."""
    _, failed = await submit(bridge.port, mail(f"sender:NOT-ALLOWED\nmobile:{K1}\ntext:will fail"))
    _, warned = await submit(bridge.port, mail(f"mobile:{K1}\ntext:Server down 🔥 now"))
    failed_id, warned_id = failed.split()[-1], warned.split()[-1]
    await eventually(lambda: bridge.rows(failed_id)[0].delivery.state == State.FAILED, "the failure")
    await eventually(lambda: bridge.rows(warned_id)[0].delivery.state == State.SENT, "the sent SMS")
    return failed_id, warned_id


# -- in a real browser -------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(90)
    try:
        yield chrome
    finally:
        chrome.quit()


def shot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_for(check: Any, what: str, within: float = 20.0) -> None:
    """Poll ``check`` (in the browser's thread) until it holds."""
    import time

    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.usefixtures("backend")  # on SQLite and on a shared PostgreSQL outbox
async def test_log_in_find_a_failed_message_retry_it_and_see_the_retry_in_its_history(
    tmp_path: Path, browser: Any
) -> None:
    """The whole visit runs in a thread of its own: the bridge's event loop serves the pages meanwhile."""
    import asyncio

    from selenium.webdriver.common.by import By

    async with page_bridge(tmp_path) as (bridge, base):
        failed_id, warned_id = await a_failed_and_a_warned_message(bridge)

        def text_of(by: str, value: str) -> str:
            from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

            try:
                return str(browser.find_element(by, value).text)
            except (NoSuchElementException, StaleElementReferenceException):
                return ""

        def visit() -> list[str]:
            seen = []
            browser.get(base + "/")
            assert "Overview" in browser.title
            assert browser.find_element(By.ID, "problems").text.split("\n")[:2] == ["failed", "1"]
            shot(browser, "1-overview")
            seen.append(browser.page_source)
            # a wrong password: a generic refusal
            browser.get(base + "/login")
            browser.find_element(By.ID, "user").send_keys("admin")
            browser.find_element(By.ID, "password").send_keys("not the password")
            browser.find_element(By.ID, "login").click()
            wait_for(lambda: text_of(By.ID, "error") == "Wrong user name or password.", "the refusal")
            browser.find_element(By.ID, "user").send_keys("admin")
            browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
            browser.find_element(By.ID, "login").click()
            wait_for(lambda: "signed in as admin" in text_of(By.TAG_NAME, "header"), "the login")
            # find the failed message through the list's filter
            browser.get(base + "/messages?state=failed")
            shot(browser, "2-messages-failed")
            seen.append(browser.page_source)
            assert failed_id in seen[-1]
            assert warned_id not in seen[-1]
            browser.find_element(By.LINK_TEXT, failed_id).click()
            wait_for(lambda: text_of(By.ID, "state") == "failed", "the message page")
            shot(browser, "3-message-failed")
            browser.find_element(By.ID, f"retry-{failed_id}").click()
            retried = "retry queued again by the operator status:admin"
            wait_for(lambda: retried in text_of(By.ID, f"history-{failed_id}"), "the retry in the history")
            wait_for(lambda: bridge.rows(failed_id)[0].delivery.attempts == 2, "the retry's attempt")
            browser.get(f"{base}/messages/{failed_id}")
            shot(browser, "4-message-retried")
            seen.append(browser.page_source)
            # the stripped emoji's warning is on the sent message's page
            browser.get(f"{base}/messages/{warned_id}")
            assert "emoji removed" in browser.find_element(By.CLASS_NAME, "warning").text
            shot(browser, "5-message-warning")
            seen.append(browser.page_source)
            return seen

        pages = await asyncio.to_thread(visit)
    for html in pages:
        assert K1 not in html  # numbers are masked
        assert SIM_PASSWORD not in html
        assert ADMIN_PASSWORD not in html


async def test_without_admin_users_the_page_is_read_only_and_says_how_to_act(tmp_path: Path, browser: Any) -> None:
    import asyncio

    async with page_bridge(tmp_path, users=False) as (bridge, base):
        failed_id, _ = await a_failed_and_a_warned_message(bridge)

        def visit() -> str:
            browser.get(f"{base}/messages/{failed_id}")
            shot(browser, "6-read-only")
            return str(browser.page_source)

        html = await asyncio.to_thread(visit)
    assert "Read-only: add" in html
    assert "admin.users" in html
    assert f"retry-{failed_id}" not in html


# -- refusals, over plain HTTP ---------------------------------------------------------


async def logged_in(client: httpx.AsyncClient, base: str) -> str:
    """Log in; the CSRF token of the session."""
    reply = await client.post(f"{base}/login", data={"user": "admin", "password": ADMIN_PASSWORD})
    assert reply.status_code == 303
    page = await client.get(f"{base}/")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


async def test_a_forged_or_missing_csrf_token_gets_403_and_changes_nothing(tmp_path: Path) -> None:
    async with page_bridge(tmp_path) as (bridge, base), httpx.AsyncClient() as client:
        failed_id, _ = await a_failed_and_a_warned_message(bridge)
        await logged_in(client, base)
        forged = await client.post(f"{base}/messages/{failed_id}/retry", data={"csrf": "forged"})
        missing = await client.post(f"{base}/messages/{failed_id}/retry")
        state = bridge.rows(failed_id)[0].delivery.state
    assert (forged.status_code, missing.status_code) == (403, 403)
    assert state == State.FAILED


async def test_an_action_needs_a_login(tmp_path: Path) -> None:
    async with page_bridge(tmp_path) as (bridge, base), httpx.AsyncClient() as client:
        failed_id, _ = await a_failed_and_a_warned_message(bridge)
        reply = await client.post(f"{base}/messages/{failed_id}/retry", data={"csrf": "x"})
        assert bridge.rows(failed_id)[0].delivery.state == State.FAILED
    assert reply.status_code == 403


async def test_an_action_on_a_row_in_the_wrong_state_says_why_and_changes_nothing(tmp_path: Path) -> None:
    async with page_bridge(tmp_path) as (bridge, base), httpx.AsyncClient() as client:
        _, sent_id = await a_failed_and_a_warned_message(bridge)
        csrf = await logged_in(client, base)
        reply = await client.post(f"{base}/messages/{sent_id}/cancel", data={"csrf": csrf})
        state = bridge.rows(sent_id)[0].delivery.state
    assert reply.status_code == 409
    assert "nothing changed; only queued messages can be cancelled" in reply.text
    assert state == State.SENT


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("state=lost", "state: 'lost' is not a state"),
        ("route=nope", "route: no route named 'nope'"),
        ("client=x%27%20OR%201=1", "client: no client named"),
        ("since=yesterday", "since: give a date as YYYY-MM-DD"),
        ("limit=0", "limit: a number from 1 to 1000"),
    ],
)
async def test_page_parameters_are_validated(tmp_path: Path, query: str, why: str) -> None:
    async with page_bridge(tmp_path) as (_, base), httpx.AsyncClient() as client:
        reply = await client.get(f"{base}/messages?{query}")
    assert reply.status_code == 400
    assert why.replace("'", "&#39;") in reply.text


async def test_search_finds_by_message_id_and_sender(tmp_path: Path) -> None:
    async with page_bridge(tmp_path) as (bridge, base), httpx.AsyncClient() as client:
        await submit(
            bridge.port, mail(f"mobile:{K1}\ntext:findme", mail_from="erp@corp.example.com", message_id="<m-42@corp>")
        )
        by_id = await client.get(f"{base}/messages", params={"q": "<m-42@corp>"})
        by_sender = await client.get(f"{base}/messages", params={"q": "ERP@corp.example.com"})
        neither = await client.get(f"{base}/messages", params={"q": "%"})
    assert "findme" in by_id.text
    assert "findme" in by_sender.text
    assert "findme" not in neither.text  # a LIKE wildcard is a character, not a wildcard


async def test_wrong_logins_slow_down_then_lock_out(tmp_path: Path) -> None:
    async with page_bridge(tmp_path, login_failures=2, lockout=60) as (_, base), httpx.AsyncClient() as client:
        first = await client.post(f"{base}/login", data={"user": "admin", "password": "wrong"})
        second = await client.post(f"{base}/login", data={"user": "nobody", "password": "wrong"})
        locked = await client.post(f"{base}/login", data={"user": "admin", "password": ADMIN_PASSWORD})
    assert (first.status_code, second.status_code, locked.status_code) == (403, 403, 429)
    assert "Wrong user name or password." in first.text
    assert "Wrong user name or password." in second.text  # the same words for an unknown user


async def test_search_by_number_in_any_spelling_and_by_text_in_a_browser(tmp_path: Path, browser: Any) -> None:
    """The operator's first question, "did 9711 9440 get it?", typed as people write numbers;
    the list shows when each was sent, the page can reload itself, and a balance of whole points
    reads as the provider gives it."""
    import asyncio

    from selenium.webdriver.common.by import By

    async with page_bridge(tmp_path) as (bridge, base):
        ids = {}
        for number, text in ((K1, "invoice 7 is ready"), ("96566074414", "your table is ready")):
            _, reply = await submit(bridge.port, mail(f"mobile:{number}\ntext:{text}"))
            ids[number] = reply.split()[-1]
        await eventually(lambda: all(r.delivery.state == State.SENT for r in bridge.rows()), "both sent")

        def search(query: str) -> str:
            browser.get(base + "/messages")
            box = browser.find_element(By.NAME, "q")
            box.clear()
            box.send_keys(query)
            box.submit()
            wait_for(lambda: "q=" in browser.current_url, "the search")
            return str(browser.find_element(By.ID, "messages").text)

        def visit() -> dict[str, str]:
            found = {q: search(q) for q in ("+965 9711 9440", "97119440", "00965-9711-9440", "9711", "table is")}
            shot(browser, "7-search-by-number")
            browser.get(base + "/")
            wait_for(lambda: "Overview" in browser.title, "the overview")
            found["refresh-link"] = browser.find_element(By.ID, "refresh").text
            browser.find_element(By.LINK_TEXT, "Reload every 30 s").click()
            wait_for(lambda: "refresh=30" in browser.current_url, "the reloading page")
            found["refresh-meta"] = str(browser.page_source)
            found["accounts"] = browser.find_element(By.ID, "accounts").text
            shot(browser, "8-overview-refusals-and-balance")
            return found

        found = await asyncio.to_thread(visit)
    for query in ("+965 9711 9440", "97119440", "00965-9711-9440", "9711"):
        assert ids[K1] in found[query], query
        assert ids["96566074414"] not in found[query], query
        assert "sent" in found[query]
    assert ids["96566074414"] in found["table is"]
    assert ids[K1] not in found["table is"]
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z sent|sent \d{4}-\d{2}-\d{2}", found["97119440"])
    assert '<meta http-equiv="refresh" content="30">' in found["refresh-meta"]
    assert "Reloading every 30 s" in found["refresh-meta"]
    assert re.search(r"\b998\b", found["accounts"])
    assert "998.00" not in found["accounts"]
