"""Ingress: how mail reaches the bridge (SMTP server, IMAP poller)."""
