"""A throwaway Postfix instance for tests (Debian's ``postfix``), with no inet listener.

Its own config, queue and data directories under a temporary directory (mode
0755, since the daemons run as ``postfix``), a small ``master.cf`` with chroot
off, and ``transport_maps`` given by the test. Mail goes in with Postfix's own
``sendmail -C DIR``; ``postfix -c DIR stop`` and the directory's removal end it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       1       1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Postfix:
    base: Path
    conf: Path

    def sendmail(self, sender: str, recipients: list[str], message: bytes) -> None:
        subprocess.run(
            [SENDMAIL, "-C", str(self.conf), "-f", sender, "-i", *recipients],
            input=message,
            check=True,
            timeout=30,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def flush(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.conf), "flush"], check=False, timeout=30, capture_output=True)


def available() -> str | None:
    """Why Postfix cannot run here, or None."""
    if not Path(POSTFIX).exists() or not Path(SENDMAIL).exists():
        return "postfix is not installed (.ci/run installs it)"
    return None


@contextmanager
def running_postfix(transports: dict[str, str], relay_domains: list[str]) -> Iterator[Postfix]:
    base = Path(tempfile.mkdtemp(prefix="sms-bridge-postfix-"))
    base.chmod(0o755)
    conf, queue, data = base / "conf", base / "queue", base / "data"
    for folder in (conf, queue, data):
        folder.mkdir(mode=0o755)
    shutil.chown(data, "postfix")
    table = ", ".join(f"{domain}={transport}" for domain, transport in transports.items())
    (conf / "main.cf").write_text(
        f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relay_domains = {", ".join(relay_domains)}
transport_maps = inline:{{ {table} }}
default_transport = error:this test relays nowhere else
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
maillog_file = {base / "maillog"}
maillog_file_prefixes = {base}
delay_warning_time = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
"""
    )
    (conf / "master.cf").write_text(MASTER_CF)
    postfix = Postfix(base, conf)
    with (base / "start.log").open("w") as out:  # the master outlives the command: a file, never a pipe
        subprocess.run([POSTFIX, "-c", str(conf), "start"], stdout=out, stderr=out, check=False, timeout=60)
    deadline = time.monotonic() + 20
    while not (queue / "pid" / "master.pid").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("postfix did not start:\n" + (base / "start.log").read_text() + postfix.log())
        time.sleep(0.1)
    try:
        yield postfix
    finally:
        subprocess.run([POSTFIX, "-c", str(conf), "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
