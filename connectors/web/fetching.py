"""How the web connector asks a site for a page: throttled, retried by kbot's one retry
policy, redirects followed by hand and checked against the connector's scope, the site's
own headers (tokens) sent to its own origin only, and bodies read up to a size cap."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from connectors.http import (
    TRANSIENT_STATUSES,
    USER_AGENT,
    RetriesExhausted,
    Retry,
    retry_after_seconds,
)
from connectors.parsing import MAX_FILE_BYTES
from connectors.web.config import WebConfig
from connectors.web.urls import normalize_url, origin

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Seams for the tests: the throttle reads this clock and sleeps through this (retry waits
# sleep through connectors.http.sleep).
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


@dataclass
class Response:
    url: str  # after redirects
    status: int
    reason: str
    headers: httpx.Headers
    body: bytes = b""
    redirects: list[str] = field(default_factory=list)  # the URLs that redirected, in order
    too_large: bool = False


class Unreachable(Exception):
    """The request still failed after every retry (5xx, 429, timeout, connection)."""


class LeavesScope(Exception):
    """A redirect leads out of ``allowed_prefix``."""

    def __init__(self, target: str):
        super().__init__(target)
        self.target = target


class BadRedirect(Exception):
    """A redirect loop, too many redirects, or one without a usable Location."""


class Throttle:
    """At most one request start per ``delay`` seconds, across all worker threads.

    The last start is kept even while ``delay`` is 0, so a ``Crawl-delay`` learnt from
    robots.txt counts from the request that fetched it.
    """

    def __init__(self, delay: float):
        self.delay = delay
        self._lock = threading.Lock()
        self._last: float | None = None

    def wait(self) -> None:
        with self._lock:
            now = _clock()
            start = now if self._last is None else max(now, self._last + self.delay)
            self._last = start
        if start > now:
            _sleep(start - now)


class Http:
    """Throttled GETs with retries, manual redirects and the site's headers on its own origin.

    Redirects are followed by hand so that every hop is checked against ``allowed_prefix``
    and configured headers (tokens) are never sent to another origin.
    """

    def __init__(self, config: WebConfig):
        self.config = config
        self.throttle = Throttle(config.delay_s)
        self.retry = config.retry_policy()
        self.client = httpx.Client(
            timeout=config.timeout_s,
            limits=httpx.Limits(max_connections=config.concurrency + 1),
            headers={"User-Agent": USER_AGENT},
        )
        own = {origin(config.scope)}
        if config.sitemap_url:
            own.add(origin(config.sitemap_url))
        self._own_origins = own
        self._secret_headers = {k: v.get_secret_value() for k, v in config.headers.items()}

    def close(self) -> None:
        self.client.close()

    def get(
        self,
        url: str,
        *,
        conditional: dict[str, str] | None = None,
        in_scope: Callable[[str], bool] | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> Response:
        """GET with retries; raises Unreachable, LeavesScope or BadRedirect."""
        timeout = self.config.timeout_s

        def attempt() -> Response:
            try:
                resp = self._follow(url, conditional or {}, in_scope, max_bytes)
            except httpx.TimeoutException:
                raise Retry(f"timed out after {timeout:g}s") from None
            except httpx.TransportError as e:
                raise Retry(f"connection failed ({type(e).__name__})") from None
            if resp.status in TRANSIENT_STATUSES:
                asked = retry_after_seconds(resp.headers.get("retry-after"))
                raise Retry(f"{resp.status} {resp.reason}".strip(), asked)
            return resp

        try:
            return self.retry.call(attempt, what=url)
        except RetriesExhausted as e:
            tries = e.attempts
            raise Unreachable(f"{e.reason} ({tries} {'try' if tries == 1 else 'tries'})") from None

    def _follow(
        self,
        url: str,
        conditional: dict[str, str],
        in_scope: Callable[[str], bool] | None,
        max_bytes: int,
    ) -> Response:
        hops: list[str] = []
        current = url
        while True:
            headers = dict(conditional)
            if origin(current) in self._own_origins:
                headers.update(self._secret_headers)
            self.throttle.wait()
            request = self.client.build_request("GET", current, headers=headers)
            resp = self.client.send(request, stream=True, follow_redirects=False)
            try:
                if resp.status_code in REDIRECT_STATUSES:
                    target = normalize_url(resp.headers.get("location", ""), current)
                    hops.append(current)
                    if target is None:
                        raise BadRedirect(f"{resp.status_code} redirect without a usable Location")
                    if target in hops:
                        raise BadRedirect(f"redirect loop through {target}")
                    if len(hops) > MAX_REDIRECTS:
                        raise BadRedirect(f"more than {MAX_REDIRECTS} redirects")
                    if in_scope is not None and not in_scope(target):
                        raise LeavesScope(target)
                    current = target
                    continue
                out = Response(
                    url=current,
                    status=resp.status_code,
                    reason=resp.reason_phrase,
                    headers=resp.headers,
                    redirects=hops,
                )
                if resp.status_code == 200:
                    out.body, out.too_large = read_capped(resp, max_bytes)
                return out
            finally:
                resp.close()


def read_capped(resp: httpx.Response, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    for part in resp.iter_bytes():
        buf += part
        if len(buf) > limit:
            return b"", True
    return bytes(buf), False


# ---------------------------------------------------------------- the walk


def http_time(value: str | None) -> datetime | None:
    """An HTTP date (``Last-Modified``) as an aware datetime, or None."""
    if not value:
        return None
    try:
        t = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
