"""A real Dovecot for IMAP tests, with its own directories, users and port.

Runs as root here, so (see shared docs/testing.md): logins run as ``dovenull``,
internals as ``dovecot``, and the mail user is the ``dovecot`` user, which owns
the maildir; every directory on the way is made ``o+x``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

USER = "sms"
PASSWORD = "imap-canary-2718"


def dovecot_available() -> bool:
    return shutil.which("dovecot") is not None and os.geteuid() == 0


@dataclass
class Dovecot:
    root: Path
    port: int
    process_pid: int = 0

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def write_config(self) -> None:
        mail_user = pwd.getpwnam("dovecot")
        home = self.root / "home"
        for path in (self.root, home, self.root / "run", self.root / "state"):
            path.mkdir(parents=True, exist_ok=True)
        # the dovecot user must be able to walk into every directory on the way
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        (self.root / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{mail_user.pw_uid}:{mail_user.pw_gid}::{home}::\n"
        )
        (self.root / "passwd").chmod(0o644)
        self.config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = sms-bridge-test-{self.port}
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.root}/passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""
        )

    def start(self) -> None:
        self.write_config()
        subprocess.run(
            [shutil.which("dovecot") or "/usr/sbin/dovecot", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("dovecot did not start:\n" + (self.log.read_text() if self.log.exists() else ""))

    def stop(self) -> None:
        """Stop the whole instance, as a restart does: the master and every session process.
        (SIGTERM to the master alone leaves running ``imap`` sessions behind.)"""
        pid_file = self.root / "run" / "master.pid"
        if not pid_file.exists():
            return
        try:
            group = os.getpgid(int(pid_file.read_text().strip()))
        except (ProcessLookupError, ValueError):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)


def new_dovecot(root: Path) -> Dovecot:
    return Dovecot(root, free_port())
