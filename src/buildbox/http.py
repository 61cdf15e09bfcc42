"""The one home for HTTP sessions that retry, the retry policy downloads and registry requests
share, and short reasons of HTTP failures."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

#: Statuses worth another try: the server may answer properly in a moment.
TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try an operation that may fail for a moment: attempts, the total time for
    one operation, and the first backoff (doubled each attempt, with jitter so that clients
    spread out)."""

    attempts: int = 6
    time_limit: float = 300.0
    backoff: float = 0.5

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1): what the server
        asked for (Retry-After), else exponential backoff."""
        if asked is not None:
            return asked
        return self.backoff * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.5)  # noqa: S311


#: What a client retries with when no settings say otherwise.
DEFAULT_RETRIES = RetryPolicy()


def retrying_session(
    *,
    retries: int,
    backoff: float,
    methods: Collection[str] = ("GET", "HEAD"),
    statuses: Collection[int] = TRANSIENT_STATUSES,
    pool_size: int = 10,
) -> requests.Session:
    """A session whose requests retry connection errors, resets and ``statuses``.

    Only ``methods`` are retried (idempotent ones), with exponential backoff from ``backoff``
    seconds, honouring ``Retry-After``; after the last retry the final response is returned
    (never an exception for a status), so the caller can name it.
    """
    import requests.adapters  # here: only commands that download or publish pay for the import
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries if statuses else 0,
        other=0,
        allowed_methods=frozenset(methods),
        status_forcelist=tuple(statuses),
        backoff_factor=backoff,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = requests.adapters.HTTPAdapter(max_retries=retry, pool_maxsize=pool_size)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


#: The userinfo of a URL (``scheme://user:password@``): up to the last ``@`` before the path.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*(?:@[^/?#\s@]*)*@")


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``: the one place that
    keeps credentials written into URLs out of what is printed, logged or recorded."""
    return _USERINFO.sub(r"\1***@", text)


def reason(error: Exception) -> str:
    """A short human reason for a requests/urllib3 failure, without the nested reprs (and
    without any URL's userinfo)."""
    text = redact(str(error))
    if untrusted := re.search(r"certificate verify failed: ([^()]+?)\s*(?:\(|$)", text):
        return f"its TLS certificate does not verify ({untrusted.group(1).strip()})"
    if "CERTIFICATE_VERIFY_FAILED" in text or "hostname mismatch" in text.lower():
        return "its TLS certificate does not verify"
    for marker, short in (
        ("IncompleteRead", "truncated body"),
        ("Connection reset", "connection reset"),
        ("ConnectionResetError", "connection reset"),
        ("Connection refused", "connection refused"),
        ("Connection aborted", "connection closed without an answer"),
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found (no DNS)"),
        ("timed out", "timed out"),
    ):
        if marker in text:
            return short
    return text


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 in brackets or not) is this machine's loopback."""
    hostname = host.strip("[]")
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
