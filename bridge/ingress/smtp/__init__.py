"""SMTP and LMTP: the protocol (:mod:`~bridge.ingress.smtp.protocol`), the handler that decides
what to answer (:mod:`~bridge.ingress.smtp.handler`), and LMTP's differences
(:mod:`~bridge.ingress.smtp.lmtp`)."""

from __future__ import annotations

from bridge.ingress.smtp.handler import Handler
from bridge.ingress.smtp.lmtp import BridgeLMTP, LmtpHandler, lmtp_factory
from bridge.ingress.smtp.protocol import (
    BridgeSMTP,
    ConnectionLimits,
    ascii_reply,
    peer_text,
    protocol_factory,
    tls_context,
)

__all__ = [
    "BridgeLMTP",
    "BridgeSMTP",
    "ConnectionLimits",
    "Handler",
    "LmtpHandler",
    "ascii_reply",
    "lmtp_factory",
    "peer_text",
    "protocol_factory",
    "tls_context",
]
