"""`sms-bridge simulate` and `sms-bridge send` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import SIM_PASSWORD, running_simulator

ROOT = Path(__file__).parent.parent


def test_the_simulator_imports_nothing_from_the_bridge() -> None:
    """It is written from the provider documents, so that it can disagree with the bridge."""
    tree = ast.parse((ROOT / "bridge" / "simulator.py").read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.split(".")[0] == "bridge"]


def write_config(tmp_path: Path, url: str, **extra: str) -> Path:
    lines = [
        "accounts:",
        "  kwt:",
        "    provider: kwtsms-http",
        f"    url: {url}/API/",
        "    username: corp",
        f"    password: {SIM_PASSWORD}",
        "    sender: KWT-SMS",
        "    rate: 4",
    ]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    lines += ["routes:", "  body: {format: kwtsms, account: kwt, recipients: [sms@b.test]}"]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_send_splits_450_numbers_into_200_200_50(tmp_path: Path) -> None:
    numbers = [f"9655{i:07d}" for i in range(450)]
    async with running_simulator() as (sim, url):
        config = write_config(tmp_path, url)
        code, out, err = await run_cli(
            "send", "-c", str(config), "--account", "kwt", "--to", ",".join(numbers), "--text", "storm"
        )
    assert code == 0, out + err
    assert [len(r["params"]["mobile"].split(",")) for r in sim.requests] == [200, 200, 50]
    assert [n for d in sim.delivered for n in d.numbers] == numbers
    assert "[3/3] sent: 50 number(s)" in out
    assert SIM_PASSWORD not in out + err


async def test_send_validates_exactly_as_mail_does(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = write_config(tmp_path, url, senders="[KWT-SMS]")
        code, out, _ = await run_cli(
            "send", "-c", str(config), "--account", "kwt", "--to", "22223333", "--text", "x", "--sender", "kwt-sms"
        )
    assert code == 1
    assert "to: '22223333' is a Kuwait landline" in out
    assert "did you mean 'KWT-SMS'" in out
    assert not sim.requests


async def test_send_reports_an_ambiguous_reply_without_resending(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        sim.arm("drop")
        config = write_config(tmp_path, url)
        code, out, _ = await run_cli(
            "send", "-c", str(config), "--account", "kwt", "--to", "96597119440", "--text", "x"
        )
    assert code == 1
    assert "unknown:" in out
    assert "not resent" in out
    assert len(sim.requests) == 1
    assert len(sim.delivered) == 1


async def test_balance_and_senders_commands(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = write_config(tmp_path, url)
        code, out, _ = await run_cli("balance", "-c", str(config))
        assert (code, out.strip()) == (0, "kwt: 1000 points available of 1000 purchased")
        code, out, _ = await run_cli("senders", "-c", str(config), "--account", "kwt")
        assert (code, out.split()) == (0, ["KWT-SMS", "MY-COMPANY"])


async def test_simulate_command_serves_and_records_jsonl(tmp_path: Path) -> None:
    jsonl = tmp_path / "sms.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "simulate", "--listen", "127.0.0.1:0", "--jsonl", str(jsonl),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert first.startswith("simulator listening on http://127.0.0.1:")
        url = first.split()[-1]
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{url}/API/send/",
                data={
                    "username": "demo",
                    "password": "demo-password",
                    "sender": "KWT-SMS",
                    "mobile": "96597119440",
                    "message": "hi",
                },
            )
        assert reply.text.startswith("OK:")
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        while not line.startswith("[simulator]"):
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert "96597119440" in line
        assert '"text": "hi"' in jsonl.read_text()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("fault", ["drop", "http500"])
async def test_faults_can_be_armed_over_http(fault: str) -> None:
    async with running_simulator() as (sim, url), httpx.AsyncClient() as client:
        armed = await client.post(f"{url}/_sim/faults", json={"fault": fault, "count": 1})
        assert armed.status_code == 200
        assert sim.faults[0]["fault"] == fault
