"""The documented production install (docs/install.md), run as written with the system python3 into a temporary prefix."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import shutil
import smtplib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import SIM_PASSWORD, eventually, free_port, running_simulator, running_sink

ROOT = Path(__file__).parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")


def install_block() -> str:
    readme = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    match = re.search(r"```sh\n(# sms-bridge production install\n.*?)```", readme, re.S)
    assert match, "docs/install.md has its production install block"
    return match.group(1)


#: the service user the test's install creates (left in place: a second run reuses it)
SERVICE_USER = "sms-bridge-test"


def reachable(path: Path) -> None:
    """Every directory from ``path`` up may be walked through by other users (pytest's are 0700)."""
    for directory in [path, *path.parents]:
        directory.chmod(directory.stat().st_mode | 0o001)


async def run(*command: str, env: dict[str, str], cwd: Path | None = None, **user: Any) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, **user
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system /usr/bin/python3")
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="installs as root, serves as a user")
async def test_the_readme_production_install_runs_and_the_installed_bridge_sends(tmp_path: Path) -> None:
    """The README's block as written, then ``check-config`` and ``serve`` as the service user
    (not root): it reads its config and env file, which no other user can."""
    prefix, bin_dir, etc = tmp_path / "opt" / "sms-bridge", tmp_path / "bin", tmp_path / "etc" / "sms-bridge"
    state = tmp_path / "var" / "lib" / "sms-bridge"
    bin_dir.mkdir(parents=True)
    state.parent.mkdir(parents=True)
    reachable(tmp_path)
    source = tmp_path / "src"  # a clean copy of the work tree, as an administrator would have
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "artifacts", "state", "*.sqlite3*", "__pycache__")
    )
    env = {
        "PATH": f"/usr/bin:/bin:/usr/sbin:/sbin:{os.environ.get('PATH', '')}",  # the system python3 first
        "PREFIX": str(prefix),
        "BIN": str(bin_dir),
        "ETC": str(etc),
        "STATE": str(state),
        "SERVICE_USER": SERVICE_USER,
        "HOME": os.environ.get("HOME", "/root"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    code, said = await run("bash", "-euo", "pipefail", "-c", install_block(), cwd=source, env=env)
    assert code == 0, said
    assert f"{etc / 'config.yaml'}: OK" in said  # check-config, run by the block as the service user
    assert (bin_dir / "sms-bridge").resolve() == (prefix / "bin" / "sms-bridge").resolve()
    assert os.readlink(prefix / "bin" / "python3").endswith("python3") or (prefix / "bin" / "python3").exists()
    assert (
        "/usr/bin/python3" in (prefix / "pyvenv.cfg").read_text()
        or "home = /usr/bin" in (prefix / "pyvenv.cfg").read_text()
    )
    group = grp.getgrnam(SERVICE_USER).gr_gid
    for path in (etc / "config.yaml", etc / "env"):
        info = path.stat()
        assert (oct(info.st_mode & 0o777), info.st_uid, info.st_gid) == ("0o640", 0, group), path
    assert pwd.getpwnam(SERVICE_USER).pw_uid != 0
    code, _ = await run("runuser", "-u", "nobody", "--", "cat", str(etc / "config.yaml"), env=env)
    assert code != 0, "another user can read the config"

    # the installed production config, pointed at a simulator and a sink, on free ports
    config = yaml.safe_load((etc / "config.yaml").read_text())
    smtp, admin = free_port(), free_port()
    async with running_simulator() as (sim, url), running_sink() as (_, sink_port):
        config["smtp"]["listen"] = [f"127.0.0.1:{smtp}"]
        config["accounts"]["kwtsms"]["url"] = f"{url}/API/"
        config["accounts"]["kwtsms"]["sender"] = "KWT-SMS"
        config["accounts"]["kwtsms"]["senders"] = ["KWT-SMS"]
        config["admin"]["listen"] = f"127.0.0.1:{admin}"
        config["queue"]["path"] = str(state / "outbox.sqlite3")
        config["notify"] |= {"smarthost": f"127.0.0.1:{sink_port}", "tls": "none"}
        (etc / "config.yaml").write_text(yaml.safe_dump(config))  # keeps its owner and mode
        (etc / "env").write_text(f"KWTSMS_USERNAME=corp\nKWTSMS_PASSWORD={SIM_PASSWORD}\nSMARTHOST_PASSWORD=unused\n")
        # as the unit runs it: the service user and its group, nothing of root's
        as_user: dict[str, Any] = {"user": SERVICE_USER, "group": SERVICE_USER, "extra_groups": [], "cwd": state}
        command = (str(bin_dir / "sms-bridge"), "-c", str(etc / "config.yaml"), "--env-file", str(etc / "env"))
        code, checked = await run(*command, "check-config", env=env, **as_user)
        assert code == 0, checked
        assert SIM_PASSWORD not in checked
        server = await asyncio.create_subprocess_exec(
            *command, "serve", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, **as_user
        )
        try:
            await asyncio.to_thread(send, smtp)
            await eventually(lambda: len(sim.delivered) == 1, "the SMS", within=60)
        finally:
            server.terminate()
            _, err = await asyncio.wait_for(server.communicate(), 60)
        assert server.returncode == 0, err.decode(errors="replace")
    assert [(d.numbers, d.text) for d in sim.delivered] == [(["96597119440"], "installed and running")]
    assert (state / "outbox.sqlite3").stat().st_uid == pwd.getpwnam(SERVICE_USER).pw_uid


def send(smtp_port: int) -> None:
    import time

    deadline = time.monotonic() + 60
    while True:  # until the service listens
        try:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                client.sendmail(
                    "ops@example.com",
                    ["sms@sms-bridge.corp.example"],
                    b"Subject: x\r\n\r\nmobile:96597119440\r\ntext:installed and running\r\n",
                )
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
