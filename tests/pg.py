"""A throwaway PostgreSQL cluster for the tests: Debian's ``postgresql`` package,
``initdb`` into a temporary directory, ``pg_ctl`` on a free loopback port.

``.ci/run`` starts one with ``python -m tests.pg start DIR`` (and removes it
with ``python -m tests.pg stop DIR``), and hands it to the tests through
``SMS_BRIDGE_PG_DIR``; without it the tests start their own, or skip the
PostgreSQL cases when the package is not installed (unless
``SMS_BRIDGE_REQUIRE_PG=1``, as in CI). Each test gets its own database, owned
by the role ``bridge``, which logs in over TCP with a password (SCRAM); the
superuser uses the private Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from tests.ports import free_port

ROLE = "bridge"
#: the bridge role's password: a canary that must never be printed
PASSWORD = "pg-canary-5521"


class Url(str):
    """A database URL whose ``repr`` (what pytest prints of a failing test's arguments)
    hides the password; as a string it is the whole URL."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(self.replace(PASSWORD, "***"))


# written into the tests' config files as the plain string it is
yaml.SafeDumper.add_representer(Url, lambda dumper, url: dumper.represent_str(str(url)))


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb``."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class Cluster:
    """A cluster in ``directory`` (``data/``, ``log``, the socket, ``port``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        bindir = binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bin = bindir
        port_file = directory / "port"
        self.port = int(port_file.read_text()) if port_file.exists() else free_port()

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _as_owner(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        (self.directory / "port").write_text(str(self.port))
        result = self._as_owner(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._check(result, "initdb")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=300"
        result = self._as_owner(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "log"),
            "-w",
            "-o",
            options,
            "start",
        )
        self._check(result, "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        result = self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")
        self._check(result, "pg_ctl stop")

    def running(self) -> bool:
        return self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def admin(self) -> str:
        """The superuser's conninfo, over the private socket."""
        return f"host={self.directory} port={self.port} user=postgres dbname=postgres"

    def create_role(self) -> None:
        self.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")

    def sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin(), autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def create_database(self) -> Url:
        """A new empty database owned by the bridge role; its URL."""
        name = "t_" + secrets.token_hex(6)
        self.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        with contextlib.suppress(Exception):
            self.sql(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def url(self, database: str) -> Url:
        return Url(f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{database}")


def create(directory: Path) -> Cluster:
    cluster = Cluster(directory)
    cluster.init()
    cluster.start()
    cluster.create_role()
    return cluster


def remove(directory: Path) -> None:
    cluster = Cluster(directory)
    if cluster.running():
        cluster.stop("immediate")
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def name_taken_from(url: str, instance: str) -> AsyncIterator[None]:
    """End bridge ``instance``'s presence session (as a network cut would) and hold its
    name, as another bridge of that name starting meanwhile would; until the block ends."""
    import psycopg

    from bridge.outbox.pg import lock_key, presence_name

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
        await other.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (presence_name(instance),),
        )
        deadline = time.monotonic() + 10
        while True:
            cur = await other.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(f"instance:{instance}"),))
            if await cur.fetchone() == (True,):
                break
            assert time.monotonic() < deadline, f"{instance}'s session kept its name for 10 s"
            await asyncio.sleep(0.02)  # polling interval
        yield


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pg start|stop DIR", file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if argv[0] == "start":
        cluster = create(directory)
        print(f"PostgreSQL {cluster.bin.parent.name} on 127.0.0.1:{cluster.port}, data in {cluster.data}")
    else:
        remove(directory)
    return 0


def throwaway_directory() -> Path:
    return Path(tempfile.mkdtemp(prefix="sms-bridge-pg-"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
