"""What HTTP providers share: one request, transport failures classified once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from bridge.config import KwtsmsHttpAccount, OpentechHttpAccount
from bridge.errors import AmbiguousDelivery, PermanentDelivery, TransientDelivery
from bridge.providers.base import RateLimiter


class HttpProvider:
    """What the HTTP providers share: an account, the injected client, the limiter."""

    def __init__(
        self,
        name: str,
        account: KwtsmsHttpAccount | OpentechHttpAccount,
        client: httpx.AsyncClient,
        limiter: RateLimiter,
    ) -> None:
        self.name = name
        self.account = account
        self.client = client
        self.limiter = limiter
        self.base = account.base_url().rstrip("/") + "/"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(account={self.name!r}, url={self.base!r})"


#: statuses that say the server did not act on the request
NOT_PROCESSED = frozenset({408, 425, 429, 503})
#: of those, the ones that say the provider is down or overloaded: another account may take the SMS
FAILOVER_STATUSES = frozenset({429, 503})


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    reply_within: float,
    params: Mapping[str, str] | str | None = None,
    data: Mapping[str, str] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One HTTP exchange; transport failures become delivery errors.

    A failure before the request could have been read (no connection, pool
    full, request not written) is transient. A failure after it was written
    (no reply, reply cut off, reply timed out) is ambiguous: the provider may
    have sent the SMS.
    """
    try:
        return await client.request(
            method, url, params=params, data=data, json=json, headers=headers, timeout=reply_within
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # refused, no such host, TLS handshake failed: nothing was sent
        raise TransientDelivery(f"could not reach the provider ({type(exc).__name__})", failover=True) from exc
    except httpx.PoolTimeout as exc:
        raise TransientDelivery(f"could not reach the provider ({type(exc).__name__})") from exc
    except (httpx.WriteError, httpx.WriteTimeout) as exc:
        raise TransientDelivery(f"the request could not be written ({type(exc).__name__})", failover=True) from exc
    except httpx.TimeoutException as exc:
        raise AmbiguousDelivery("no reply from the provider in time; the SMS may have been sent") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise AmbiguousDelivery("the connection broke before the reply; the SMS may have been sent") from exc
    except httpx.HTTPError as exc:
        raise AmbiguousDelivery(f"HTTP failure after the request was sent ({type(exc).__name__})") from exc


def raise_for_server_status(response: httpx.Response, body: str) -> None:
    """Error statuses whose body holds no provider answer."""
    status = response.status_code
    if status in NOT_PROCESSED:
        retry_after = response.headers.get("Retry-After", "")
        delay = float(retry_after) if retry_after.isdigit() else None
        raise TransientDelivery(
            f"the provider is unavailable (HTTP {status})",
            raw=body[:500],
            retry_after=delay,
            failover=status in FAILOVER_STATUSES,
        )
    if status >= 500:
        raise AmbiguousDelivery(f"the provider failed (HTTP {status}); the SMS may have been sent", raw=body[:500])
    if status >= 400:
        raise PermanentDelivery(
            f"the provider refused the request (HTTP {status}); check the account's url", raw=body[:500]
        )
