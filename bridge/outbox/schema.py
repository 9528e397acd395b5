"""The outbox's schema, as numbered migrations, for SQLite and PostgreSQL.

SQLite: ``PRAGMA user_version`` holds the number of the last migration
applied. At start-up :func:`migrate` applies the missing ones in order, inside
one ``BEGIN IMMEDIATE`` transaction, so two processes opening the same file
never migrate it twice. PostgreSQL: the ``schema_version`` table holds it, and
:func:`pg_migrate` applies the missing ones in one transaction under an
advisory lock, so that instances starting together migrate once. Both run the
same migrations; :func:`pg_dialect` writes PostgreSQL's types for them.
Migrations are history: never edit one that was released; add the next.

Migration 1 is the schema of the releases before versioning. It uses
``IF NOT EXISTS`` throughout, so that an outbox those releases wrote (at
``user_version`` 0, with these tables already there) is adopted as it is.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.outbox.tx import SqliteTx

MIGRATIONS: tuple[str, ...] = (
    # 1: the unversioned schema of the first releases
    """
CREATE TABLE IF NOT EXISTS sms (
    id TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    route TEXT NOT NULL,
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    sender TEXT NOT NULL,
    numbers TEXT NOT NULL,
    text TEXT NOT NULL,
    lang INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    pages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    batch_key TEXT NOT NULL,
    cred_user TEXT,
    cred_pass TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_code TEXT NOT NULL DEFAULT '',
    provider_reply TEXT NOT NULL DEFAULT '',
    provider_msg_id TEXT NOT NULL DEFAULT '',
    points_charged INTEGER,
    balance_after REAL,
    confirmed INTEGER,
    notice TEXT NOT NULL DEFAULT 'none'
);
CREATE INDEX IF NOT EXISTS sms_due ON sms(account, next_attempt) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sms_batch ON sms(account, batch_key, next_attempt) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sms_mail ON sms(mail_id);
CREATE INDEX IF NOT EXISTS sms_state ON sms(state, updated);
CREATE INDEX IF NOT EXISTS sms_notice ON sms(notice) WHERE notice = 'pending';
CREATE TABLE IF NOT EXISTS seen (
    fingerprint TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS imap_seen (
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
);
CREATE TABLE IF NOT EXISTS rejections (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    problems TEXT NOT NULL,
    notice TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_notice ON rejections(notice) WHERE notice = 'pending';
CREATE TABLE IF NOT EXISTS usage (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (scope, window, bucket)
);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance REAL NOT NULL,
    at REAL NOT NULL
);
""",
    # 2: digests and per-number pacing
    """
ALTER TABLE sms ADD COLUMN digest INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sms ADD COLUMN brief TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN alert_key TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN resolved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sms ADD COLUMN carrier TEXT NOT NULL DEFAULT '';
DROP INDEX sms_due;
CREATE INDEX sms_due ON sms(account, next_attempt, id) WHERE state = 'queued';
CREATE INDEX sms_digest ON sms(account, route, sender, numbers, next_attempt) WHERE state = 'queued' AND digest = 1;
CREATE INDEX sms_carrier ON sms(carrier) WHERE carrier != '';
CREATE TABLE pacing (
    account TEXT NOT NULL,
    number TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (account, number)
);
CREATE TABLE digest_series (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    listed INTEGER NOT NULL,
    part INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (account, key)
);
""",
    # 3: who sent it, what was odd about it, the operator's notices, and each message's history
    """
ALTER TABLE sms ADD COLUMN client TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN warnings TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN operator TEXT NOT NULL DEFAULT 'none';
ALTER TABLE rejections ADD COLUMN client TEXT NOT NULL DEFAULT '';
ALTER TABLE rejections ADD COLUMN warnings TEXT NOT NULL DEFAULT '';
ALTER TABLE rejections ADD COLUMN operator TEXT NOT NULL DEFAULT 'none';
CREATE INDEX sms_operator ON sms(operator) WHERE operator = 'pending';
CREATE INDEX rejections_operator ON rejections(operator) WHERE operator = 'pending';
CREATE INDEX sms_created ON sms(created);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sms_id TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_sms ON history(sms_id, seq);
""",
    # 4: failover between accounts
    """
ALTER TABLE sms ADD COLUMN fallbacks TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN tried TEXT NOT NULL DEFAULT '';
""",
    # 5: several instances: claims with a lease and a fencing token, a shared rate, who is running
    """
ALTER TABLE sms ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE sms ADD COLUMN lease_until REAL;
ALTER TABLE sms ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sms_held ON sms(claimed_by) WHERE state IN ('claimed', 'sending');
CREATE TABLE rate (
    account TEXT PRIMARY KEY,
    next_slot REAL NOT NULL
);
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    seen REAL NOT NULL
);
""",
    # 6: notices held for an SMTP session that never answered are found without a scan
    """
CREATE INDEX sms_notice_held ON sms(updated) WHERE notice = 'held';
""",
    # 7: mail refused on the spot (RCPT, MAIL, DATA), one row per address and reason, for the status page
    """
CREATE TABLE refusals (
    key TEXT PRIMARY KEY,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    times INTEGER NOT NULL,
    via TEXT NOT NULL,
    stage TEXT NOT NULL,
    peer TEXT NOT NULL,
    client TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX refusals_last ON refusals(last_at);
""",
)

LATEST = len(MIGRATIONS)


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema up to date under a write lock; (version before, version after)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = version(conn)
        if before > LATEST:
            raise sqlite3.DatabaseError(
                f"the outbox was written by a newer release (schema {before}; this release knows up to {LATEST})"
            )
        for number in range(before + 1, LATEST + 1):
            for statement in MIGRATIONS[number - 1].split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return before, LATEST


def connect(path: str | Path) -> SqliteTx:
    """A connection with the outbox's pragmas, its schema brought up to date."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30, factory=SqliteTx)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")  # erased body credentials are overwritten, not left in free space
    migrate(conn)
    return conn


# -- PostgreSQL ------------------------------------------------------------------

#: SQLite's types as PostgreSQL spells them: REAL is single precision there, INTEGER
#: 32 bits (an IMAP UIDVALIDITY needs 32 unsigned), and ``window`` a reserved word
_PG_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"(?<![\w\"])window(?![\w\"])"), '"window"'),
)

#: the advisory lock the migrations run under (any constant; "smsb" in ASCII)
PG_MIGRATION_LOCK = 0x736D7362


def pg_dialect(statement: str) -> str:
    for pattern, replacement in _PG_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement


def pg_migrate(execute: Callable[..., Any], fetch_version: Callable[[], int | None]) -> tuple[int, int]:
    """Bring a PostgreSQL outbox up to date, in the caller's transaction, under an advisory
    lock held until it commits; (version before, version after)."""
    execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
    execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied DOUBLE PRECISION NOT NULL)")
    before = fetch_version() or 0
    if before > LATEST:
        raise ValueError(
            f"the outbox was written by a newer release (schema {before}; this release knows up to {LATEST})"
        )
    for number in range(before + 1, LATEST + 1):
        for statement in MIGRATIONS[number - 1].split(";\n"):
            if statement.strip():
                execute(pg_dialect(statement))
        execute("INSERT INTO schema_version (version, applied) VALUES (%s, extract(epoch FROM now()))", (number,))
    return before, LATEST
