"""The README's production install, run as written with the system python3 into a temporary prefix."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import smtplib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import free_port

ROOT = Path(__file__).parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")


def install_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```sh\n(# sms-bridge production install\n.*?)```", readme, re.S)
    assert match, "the README has its production install block"
    return match.group(1)


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system /usr/bin/python3")
async def test_the_readme_production_install_runs_and_the_installed_bridge_sends(tmp_path: Path) -> None:
    prefix, bin_dir, etc = tmp_path / "opt" / "sms-bridge", tmp_path / "bin", tmp_path / "etc" / "sms-bridge"
    bin_dir.mkdir(parents=True)
    source = tmp_path / "src"  # a clean copy of the work tree, as an administrator would have
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "artifacts", "state", "*.sqlite3*", "__pycache__")
    )
    env = {
        "PATH": f"/usr/bin:/bin:{os.environ.get('PATH', '')}",  # the system python3 first
        "PREFIX": str(prefix),
        "BIN": str(bin_dir),
        "ETC": str(etc),
        "HOME": os.environ.get("HOME", "/root"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", install_block(), cwd=source, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    said = out.decode(errors="replace")
    assert proc.returncode == 0, said
    assert f"{etc / 'config.yaml'}: OK" in said
    assert (bin_dir / "sms-bridge").resolve() == (prefix / "bin" / "sms-bridge").resolve()
    assert os.readlink(prefix / "bin" / "python3").endswith("python3") or (prefix / "bin" / "python3").exists()
    assert (
        "/usr/bin/python3" in (prefix / "pyvenv.cfg").read_text()
        or "home = /usr/bin" in (prefix / "pyvenv.cfg").read_text()
    )
    assert oct((etc / "env").stat().st_mode & 0o777) == "0o600"

    # the installed command serves the installed config (ports moved to free ones)
    config = yaml.safe_load((etc / "config.yaml").read_text())
    smtp, sim, admin = free_port(), free_port(), free_port()
    config["smtp"]["listen"] = [f"127.0.0.1:{smtp}"]
    config["simulator"]["listen"] = f"127.0.0.1:{sim}"
    config["accounts"]["demo"]["url"] = f"http://127.0.0.1:{sim}/API/"
    config["admin"]["listen"] = f"127.0.0.1:{admin}"
    config["queue"]["path"] = str(tmp_path / "state" / "outbox.sqlite3")
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    check = await asyncio.create_subprocess_exec(
        str(bin_dir / "sms-bridge"), "check-config", env=env | {"SMS_BRIDGE_CONFIG": str(etc / "config.yaml")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    checked, _ = await check.communicate()
    assert check.returncode == 0, checked.decode()
    server = await asyncio.create_subprocess_exec(
        str(bin_dir / "sms-bridge"), "serve", "-c", str(etc / "config.yaml"), "--env-file", str(etc / "env"), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        delivered = await asyncio.to_thread(send_and_wait, smtp, sim)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 60)
    assert server.returncode == 0
    assert [(d["numbers"], d["text"]) for d in delivered] == [(["96597119440"], "installed and running")]


def send_and_wait(smtp_port: int, sim_port: int) -> list[dict[str, object]]:
    import time

    deadline = time.monotonic() + 60
    while True:  # until the service listens
        try:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                client.sendmail(
                    "ops@example.com",
                    ["sms@sms-bridge.local"],
                    b"Subject: x\r\n\r\nmobile:96597119440\r\ntext:installed and running\r\n",
                )
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/_sim/messages", timeout=10) as reply:
            delivered: list[dict[str, object]] = json.load(reply)
        if delivered or time.monotonic() > deadline:
            return delivered
        time.sleep(0.2)
