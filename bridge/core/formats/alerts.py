"""Alert profiles: what a monitoring tool's mail says, in one short SMS. Pure.

Each profile reads what the tool's *default* template produces:

- **zabbix**: ``Problem: <name>``, ``Resolved: <name>``, ``Resolved in <duration>: <name>``,
  ``Updated problem in <age>: <name>``; body lines ``Problem name:``, ``Host:``,
  ``Severity:``, ``Operational data:`` (Zabbix sends the body base64-encoded).
- **nagios**: ``** PROBLEM Service Alert: host/service is CRITICAL **`` and
  ``** PROBLEM Host Alert: host is DOWN **``; body ``Additional Info:`` / ``Info:``.
- **icinga2**: ``[PROBLEM] service on host is CRITICAL!`` and ``[PROBLEM] Host host is DOWN!``;
  body ``Info:``.
- **alertmanager** and **grafana**: ``[FIRING:N] <group labels>`` / ``[RESOLVED] …``;
  every alert of the group from its ``Labels`` and ``Annotations`` (``name = value``
  lines; Alertmanager's default mail is HTML only), and ``Firing``/``Resolved``
  section headings for the state of each.
- **cron**: Debian's and cronie's cron mail (``Subject: Cron <root@db1> /usr/local/bin/backup.sh``,
  ``X-Cron-Env:`` headers): ``CRON db1 backup.sh: <the first meaningful lines of the output>``.
- **generic**: anything else: the subject, with a state word if it starts with one.

The SMS text puts the state first, then severity, host and what happened; no
URLs, no IDs, white space collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from bridge.core.model import InboundMail

ProfileName = Literal["auto", "zabbix", "nagios", "icinga2", "alertmanager", "grafana", "cron", "generic"]
PROFILES: tuple[ProfileName, ...] = ("zabbix", "nagios", "icinga2", "alertmanager", "grafana", "cron", "generic")

#: fields a route's ``template`` may use
TEMPLATE_FIELDS = frozenset({"subject", "body", "from", "state", "severity", "host", "name", "summary", "count"})

_URL = re.compile(r"(?i)\b(?:https?|ftp)://\S+|\bwww\.\S+")
_LONG_ID = re.compile(
    r"\b(?=[0-9a-f-]*\d)[0-9a-f]{16,}\b|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I
)
_SPACE = re.compile(r"\s+")

_RESOLVED_WORDS = frozenset({"RESOLVED", "RECOVERY", "OK", "UP"})
_STATE_WORDS = (
    "PROBLEM",
    "RESOLVED",
    "RECOVERY",
    "FIRING",
    "OK",
    "CRITICAL",
    "WARNING",
    "UNKNOWN",
    "DOWN",
    "UP",
    "ALERT",
    "ALARM",
    "ERROR",
    "INFO",
)
_LEADING_STATE = re.compile(r"^\W*(" + "|".join(_STATE_WORDS) + r")\b\W*", re.I)


@dataclass(frozen=True)
class Alert:
    """One alert, as a person on call wants it: what state, how bad, where, what."""

    state: str = ""
    severity: str = ""
    host: str = ""
    name: str = ""
    summary: str = ""
    #: the whole SMS line, where a profile writes it itself (cron)
    text: str = ""

    @property
    def resolved(self) -> bool:
        return self.state.upper() in _RESOLVED_WORDS

    @property
    def key(self) -> str:
        """Pairs a problem with its resolution: same host, same alert."""
        return f"{self.host.lower()}|{self.name.lower()}" if self.name or self.host else ""

    def line(self, *, brief: bool = False) -> str:
        """``PROBLEM High db01: Disk full - 97% used`` (brief: ``PROBLEM db01 Disk full``)."""
        if self.text and not brief:
            return clean(self.text)
        parts = [self.state]
        if not brief and self.severity and self.severity.upper() != self.state.upper():
            parts.append(self.severity)
        where = self.host
        name = self.name
        if where and name.lower().endswith(f" on {where.lower()}"):
            name = name[: -len(where) - 4]
        head = " ".join(p for p in parts if p)
        if brief:
            return clean(" ".join(p for p in (head, where, name or self.severity) if p))
        what = name
        summary = self.summary
        if summary and summary.lower() not in name.lower():
            what = f"{name} - {summary}" if name else summary
        if where and re.search(rf"(?<![\w.-]){re.escape(where)}(?![\w-])", what, re.I):
            where = ""  # the name says where already
        label = f"{head} {where}:" if where else (f"{head}:" if head and what else head)
        return clean(f"{label} {what}")


@dataclass(frozen=True)
class AlertMail:
    """What a profile read from one mail."""

    profile: str
    alerts: tuple[Alert, ...]
    #: alerts the mail says it holds (``[FIRING:3]``), which may exceed those listed
    count: int
    recognised: bool

    @property
    def state(self) -> str:
        states = dict.fromkeys(a.state for a in self.alerts if a.state)
        return "/".join(states)

    def fields(self) -> dict[str, str]:
        """The template fields beyond ``subject``, ``body`` and ``from``."""
        first = self.alerts[0] if self.alerts else Alert()

        def joined(attr: str) -> str:
            return ", ".join(dict.fromkeys(getattr(a, attr) for a in self.alerts if getattr(a, attr)))

        return {
            "state": self.state,
            "severity": first.severity if len(self.alerts) <= 1 else joined("severity"),
            "host": joined("host"),
            "name": joined("name"),
            "summary": first.summary if len(self.alerts) <= 1 else joined("summary"),
            "count": str(self.count),
        }

    def text(self, *, brief: bool = False) -> str:
        """The SMS text: one alert's line, or ``FIRING 3 alerts: db01 X | db02 Y | …``."""
        if len(self.alerts) == 1:
            line = self.alerts[0].line(brief=brief)
            if self.count <= 1:
                return line
            state = self.alerts[0].state
            return clean(f"{state} {self.count} alerts: {line.removeprefix(state).strip()}")
        states = dict.fromkeys(a.state for a in self.alerts)
        if len(states) == 1:
            state = next(iter(states))
            severities = {a.severity for a in self.alerts}
            severity = severities.pop() if len(severities) == 1 else ""
            items = [replace(a, state="").line(brief=True) for a in self.alerts]
            return clean(f"{state} {severity} {self.count} alerts: " + " | ".join(items))
        return clean(f"{self.count} alerts: " + " | ".join(a.line(brief=True) for a in self.alerts))


def clean(text: str) -> str:
    """No URLs, no long IDs, white space collapsed."""
    text = _URL.sub("", text)
    text = _LONG_ID.sub("", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
    return _SPACE.sub(" ", text).strip(" -:|")


def _field(body: str, *names: str) -> str:
    for name in names:
        match = re.search(rf"(?im)^[ \t*>-]*{re.escape(name)}[ \t]*:[ \t]*(.*\S)", body)
        if match:
            return match.group(1).strip()
    return ""


def _after(body: str, heading: str) -> str:
    """The first non-blank line after a line that is ``heading:`` alone (Nagios' ``Additional Info:``)."""
    match = re.search(rf"(?im)^[ \t]*{re.escape(heading)}[ \t]*:[ \t]*\n\s*(.*\S)", body)
    return match.group(1).strip() if match else ""


# -- zabbix ----------------------------------------------------------------------

_ZABBIX_SUBJECT = re.compile(
    r"^\s*(?P<kind>Problem|Resolved(?: in [^:]{1,40})?|Problem resolved|Updated problem(?: in [^:]{1,40})?|Recovery)\s*:\s*(?P<name>.+)$",
    re.I,
)


def _zabbix(mail: InboundMail) -> AlertMail | None:
    match = _ZABBIX_SUBJECT.match(mail.subject)
    body_name = _field(mail.body, "Problem name", "Trigger")
    if match is None and not (body_name and _field(mail.body, "Host")):
        return None
    kind = match.group("kind").lower() if match else ""
    if kind.startswith(("resolved", "problem resolved", "recovery")) or "has been resolved" in mail.body.lower():
        state = "RESOLVED"
    elif kind.startswith("updated"):
        state = "UPDATED"
    else:
        state = "PROBLEM"
    name = body_name or (match.group("name") if match else mail.subject)
    opdata = _field(mail.body, "Operational data")
    if opdata.strip("* ").upper() in ("UNKNOWN", ""):
        opdata = ""
    alert = Alert(
        state=state,
        severity=_field(mail.body, "Severity"),
        host=_field(mail.body, "Host", "Host name"),
        name=name,
        summary=opdata,
    )
    return AlertMail("zabbix", (alert,), 1, True)


# -- nagios ----------------------------------------------------------------------

_NAGIOS_SUBJECT = re.compile(
    r"^\s*\*\*\s*(?P<type>[A-Z]+(?:START|END)?[A-Z]*)\s+(?P<kind>Service|Host)\s+Alert:\s*(?P<what>.+?)\s+is\s+(?P<state>[A-Z]+)\s*\*\*\s*$",
    re.I,
)


def _nagios(mail: InboundMail) -> AlertMail | None:
    match = _NAGIOS_SUBJECT.match(mail.subject)
    if match is None and ("***** Nagios *****" not in mail.body or not _field(mail.body, "Notification Type")):
        return None
    kind = match.group("kind").lower() if match else ("service" if _field(mail.body, "Service") else "host")
    host = _field(mail.body, "Host")
    service = _field(mail.body, "Service") if kind == "service" else ""
    if match and (not host or (kind == "service" and not service)):
        what = match.group("what")
        if kind == "service" and "/" in what:
            host, _, service = what.partition("/")
        elif not host:
            host = what
    ntype = (_field(mail.body, "Notification Type") or (match.group("type") if match else "")).upper()
    severity = (match.group("state") if match else _field(mail.body, "State")).upper()
    info = _after(mail.body, "Additional Info") or _field(mail.body, "Info")
    state = "RESOLVED" if ntype == "RECOVERY" else ntype
    return AlertMail(
        "nagios",
        (Alert(state=state, severity=severity, host=host, name=service, summary=info),),
        1,
        True,
    )


# -- icinga 2 --------------------------------------------------------------------

_ICINGA_SERVICE = re.compile(
    r"^\s*\[(?P<type>[A-Z]+)\]\s+(?P<svc>.+?)\s+on\s+(?P<host>.+?)\s+is\s+(?P<state>[A-Z]+)!\s*$", re.I
)
_ICINGA_HOST = re.compile(r"^\s*\[(?P<type>[A-Z]+)\]\s+Host\s+(?P<host>.+?)\s+is\s+(?P<state>[A-Z]+)!\s*$", re.I)


def _icinga2(mail: InboundMail) -> AlertMail | None:
    host_match = _ICINGA_HOST.match(mail.subject)
    match = host_match or _ICINGA_SERVICE.match(mail.subject)
    if match is None:
        return None
    ntype = match.group("type").upper()
    severity = match.group("state").upper()
    service = "" if host_match else match.group("svc")
    alert = Alert(
        state="RESOLVED" if ntype == "RECOVERY" else ntype,
        severity=severity,
        host=match.group("host"),
        name=service,
        summary=_field(mail.body, "Info", "Additional Info"),
    )
    return AlertMail("icinga2", (alert,), 1, True)


# -- alertmanager and grafana ----------------------------------------------------

_GROUP_SUBJECT = re.compile(r"^\s*\[(?P<status>FIRING|RESOLVED)(?::(?P<count>\d+))?\]\s*(?P<rest>.*)$", re.I)
_LABEL = re.compile(r"^[ \t]*(?:[-*•][ \t]*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(?P<value>.*?)[ \t]*$")
_SECTION = re.compile(r"^[ \t*#\[]*(?:\d+[\]\s]*)?\s*(?P<state>firing|resolved)\b[^=]*$", re.I)
_INSTANCE = re.compile(r"\b(?:instance|host|hostname)\s*=\s*([\w.:-]+)")
_HOST_LABELS = ("host", "hostname", "instance", "node", "nodename", "pod", "server", "device", "target")
_SUMMARY_ANNOTATIONS = ("summary", "message", "description", "title")


def _host(labels: Mapping[str, str]) -> str:
    for name in _HOST_LABELS:
        value = labels.get(name, "")
        if value:
            value = re.sub(r"^[a-z]+://", "", value)
            value = re.sub(r":\d+(/.*)?$", "", value)  # instance=db01:9100 → db01
            return value
    return ""


def _labelled_alerts(body: str, default_state: str) -> list[Alert]:
    """Every alert in a body of ``Labels:``/``Annotations:`` blocks of ``name = value`` lines."""
    alerts: list[Alert] = []
    state = default_state
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    part = "labels"

    def close() -> None:
        nonlocal labels, annotations
        if labels.get("alertname") or labels.get("__alert_rule_title__"):
            name = labels.get("alertname") or labels.get("__alert_rule_title__", "")
            summary = next((annotations[a] for a in _SUMMARY_ANNOTATIONS if annotations.get(a)), "")
            alerts.append(
                Alert(state=state, severity=labels.get("severity", ""), host=_host(labels), name=name, summary=summary)
            )
        labels, annotations = {}, {}

    for line in body.splitlines():
        stripped = line.strip().strip("*").strip()
        section = _SECTION.match(line)
        if section and "=" not in line and len(stripped) < 40:
            close()
            state = section.group("state").upper()
            part = "labels"
            continue
        lowered = stripped.lower().rstrip(":")
        if lowered == "labels":
            close()
            part = "labels"
            continue
        if lowered == "annotations":
            part = "annotations"
            continue
        if lowered.startswith(("source", "silence", "dashboard", "panel", "value:", "values:")):
            continue
        match = _LABEL.match(line)
        if match is None:
            continue
        name, value = match.group("name"), match.group("value")
        if part == "labels" and name == "alertname" and labels.get("alertname"):
            close()
        (labels if part == "labels" else annotations)[name] = value
    close()
    return alerts


def _grouped(mail: InboundMail, profile: str) -> AlertMail | None:
    match = _GROUP_SUBJECT.match(mail.subject)
    alerts = _labelled_alerts(mail.body, (match.group("status") if match else "FIRING").upper())
    if match is None and not alerts:
        return None
    status = match.group("status").upper() if match else alerts[0].state
    count = int(match.group("count")) if match and match.group("count") else 0
    if not alerts and match is not None:
        rest = match.group("rest").strip()
        name, _, extra = rest.partition(" (")
        hosts = dict.fromkeys(_host({"instance": h}) for h in _INSTANCE.findall(mail.body))
        alerts = [Alert(state=status, host=", ".join(hosts), name=name.strip(), summary=extra.rstrip(")").strip())]
    return AlertMail(profile, tuple(alerts), max(count, len(alerts)), True)


def _is_grafana(mail: InboundMail) -> bool:
    sender = f"{mail.from_header} {mail.mail_from}".lower()
    return "grafana" in sender or "grafana_folder" in mail.body or "alert_rule_title" in mail.body


def _alertmanager(mail: InboundMail) -> AlertMail | None:
    return _grouped(mail, "alertmanager")


def _grafana(mail: InboundMail) -> AlertMail | None:
    return _grouped(mail, "grafana")


# -- cron ------------------------------------------------------------------------

_CRON_SUBJECT = re.compile(r"^\s*Cron\s+<(?P<user>[^@>\s]+)@(?P<host>[^>\s]+)>\s*(?P<command>.*)$", re.I)
#: what stands before the command itself in a crontab line
_CRON_PRELUDE = frozenset({"cd", "test", "[", "[[", "true", ":", "exit", "set", "umask", "fi", "done", "esac"})
_CRON_WRAPPERS = frozenset(
    {"sudo", "nice", "ionice", "env", "chronic", "nohup", "exec", "time", "command"}
    | {"if", "then", "else", "elif", "do", "!", "{"}
)
#: an interpreter's script names the job better: ``php /var/www/cron.php`` → ``cron.php``
_INTERPRETERS = frozenset({"sh", "bash", "php", "python", "python3", "perl", "ruby", "node"})
_CRON_WITH_VALUE = {"timeout": 1, "flock": 1, "-n": 1, "-c": 1, "-u": 1}
_NOISE = re.compile(r"^[\W_]*$")


def _cron_command(command: str) -> str:
    """``cd / && run-parts --report /etc/cron.daily`` → ``run-parts cron.daily``;
    ``/usr/local/bin/backup.sh --full`` → ``backup.sh``."""
    for segment in re.split(r"&&|\|\||[;|()]", command):
        words = [w.strip("'\"") for w in segment.split()]
        while words and (("=" in words[0] and not words[0].startswith("-")) or words[0] in _CRON_WRAPPERS):
            words.pop(0)
        while words and words[0] in _CRON_WITH_VALUE:  # timeout 60 job, flock /run/x job
            words = words[1 + _CRON_WITH_VALUE[words[0]] :]
        if not words or words[0] in _CRON_PRELUDE:
            continue
        name = words[0].rstrip("/").rpartition("/")[2]
        scripts = [w for w in words[1:] if not w.startswith("-")]
        if name in _INTERPRETERS and scripts:
            return scripts[0].rpartition("/")[2]
        if name == "run-parts":
            return f"run-parts {scripts[-1].rstrip('/').rpartition('/')[2]}" if scripts else name
        return name
    return command.strip()


def _cron(mail: InboundMail) -> AlertMail | None:
    match = _CRON_SUBJECT.match(mail.subject)
    if match is None and not mail.cron_env:
        return None
    host = match.group("host") if match else ""
    command = _cron_command(match.group("command")) if match else clean(mail.subject)
    lines = [line.strip() for line in mail.body.splitlines()]
    output = [line for line in lines if line and not _NOISE.match(line)][:4]
    said = " | ".join(output) if output else "(no output)"
    head = " ".join(p for p in ("CRON", host, command) if p)
    alert = Alert(state="CRON", host=host, name=command, summary=said, text=f"{head}: {said}")
    return AlertMail("cron", (alert,), 1, True)


# -- generic ---------------------------------------------------------------------


def generic(mail: InboundMail) -> AlertMail:
    subject = clean(mail.subject) or clean(mail.body.split("\n", 1)[0])
    match = _LEADING_STATE.match(subject)
    state, name = (match.group(1).upper(), subject[match.end() :]) if match else ("", subject)
    return AlertMail("generic", (Alert(state=state, name=name),), 1, False)


_READERS = {
    "zabbix": _zabbix,
    "nagios": _nagios,
    "icinga2": _icinga2,
    "alertmanager": _alertmanager,
    "grafana": _grafana,
    "cron": _cron,
}


def read(mail: InboundMail, profile: ProfileName = "auto") -> AlertMail:
    """The alerts in ``mail``, by the named profile, or by the first that recognises it.
    Mail no profile recognises is read by the generic one (``recognised`` is False)."""
    if profile == "generic":
        return replace(generic(mail), recognised=True)
    if profile != "auto":
        return _READERS[profile](mail) or generic(mail)
    order = ["cron", "zabbix", "nagios", "icinga2", "grafana" if _is_grafana(mail) else "alertmanager"]
    for name in order:
        found = _READERS[name](mail)
        if found is not None and found.alerts:
            return found
    return generic(mail)


# -- webhooks ----------------------------------------------------------------------


class WebhookError(ValueError):
    """A webhook body that is not an Alertmanager or Grafana notification; says what is wrong."""


def _strings(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebhookError(f"{where}: must be an object of names and values")
    return {str(k): str(v) for k, v in value.items()}


def from_webhook(payload: object) -> tuple[AlertMail, str]:
    """An Alertmanager or Grafana webhook notification (JSON, already decoded) → its alerts
    and a title. Both send ``{"status", "alerts": [{"status", "labels", "annotations"}], ...}``;
    Grafana adds ``orgId``, ``title`` and ``message``."""
    if not isinstance(payload, dict):
        raise WebhookError("the body must be a JSON object (an Alertmanager or Grafana webhook notification)")
    items = payload.get("alerts")
    if not isinstance(items, list):
        raise WebhookError("alerts: missing, or not a list")
    if not items:
        raise WebhookError("alerts: the list is empty; there is nothing to send")
    profile = "grafana" if "orgId" in payload or "title" in payload else "alertmanager"
    group_status = str(payload.get("status", "firing")).upper()
    found: list[Alert] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise WebhookError(f"alerts.{i}: must be an object")
        labels = _strings(item.get("labels"), f"alerts.{i}.labels")
        annotations = _strings(item.get("annotations"), f"alerts.{i}.annotations")
        name = labels.get("alertname") or labels.get("__alert_rule_title__") or ""
        if not name:
            raise WebhookError(f"alerts.{i}.labels: no alertname")
        summary = next((annotations[a] for a in _SUMMARY_ANNOTATIONS if annotations.get(a)), "")
        state = str(item.get("status") or group_status).upper()
        found.append(
            Alert(state=state, severity=labels.get("severity", ""), host=_host(labels), name=name, summary=summary)
        )
    truncated = payload.get("truncatedAlerts", 0)
    extra = truncated if isinstance(truncated, int) and truncated > 0 else 0
    title = str(payload.get("title") or f"[{group_status}:{len(found) + extra}] {found[0].name}")
    return AlertMail(profile, tuple(found), len(found) + extra, True), title
