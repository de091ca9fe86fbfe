"""What every HTTP client of kbot shares: how it names itself, how it reads a server's
``Retry-After``, and the one retry policy. Connectors (web, Confluence, MediaWiki), the chat
adapters and the model client use these."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)
T = TypeVar("T")

Retries = Annotated[
    int,
    Field(ge=0, le=20, description="retries after a 5xx, a 429, a timeout or a lost connection"),
]
Backoff = Annotated[
    float, Field(ge=0, le=300, description="the first wait before a retry, doubled each time")
]
MaxWait = Annotated[
    float, Field(ge=0, le=3600, description="the longest wait before one retry (caps Retry-After)")
]

try:
    _VERSION = metadata.version("kbot")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    _VERSION = "0"


def user_agent(detail: str | None = None) -> str:
    """The User-Agent sent to a knowledge source, so its operators can tell who is calling;
    ``detail`` names the part of kbot (some APIs ask clients to say which tool they are)."""
    extra = f"; {detail}" if detail else ""
    return f"kbot/{_VERSION} (+https://github.com/kbot{extra})"


USER_AGENT = user_agent()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (never
    negative), or None when there is no usable value."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# ---------------------------------------------------------------- retries

# Worth retrying: the server is busy, overloaded or briefly away.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sleep(seconds: float) -> None:
    """Wait before a retry (a module function, so tests record the waits instead)."""
    time.sleep(seconds)


def _sleep_seam(seconds: float) -> None:
    sleep(seconds)  # looked up at call time, so a test's replacement of ``sleep`` applies


class Retry(Exception):
    """One attempt failed in a way a later attempt may not (a 5xx, a 429, a timeout, a lost
    connection, MediaWiki's ``maxlag``). ``asked`` is the wait the server asked for
    (``Retry-After``), if it did."""

    def __init__(self, reason: str, asked: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.asked = asked


class RetriesExhausted(Exception):
    """Every attempt failed; ``reason`` is the last failure's."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(f"{reason} ({attempts} {'attempt' if attempts == 1 else 'attempts'})")
        self.reason = reason
        self.attempts = attempts


class WaitTooLong(Exception):
    """The server asked for a longer wait than ``retry_max_wait_s`` allows, under a policy
    that fails rather than retrying early (MediaWiki's etiquette: never ask again sooner
    than told)."""

    def __init__(self, reason: str, asked: float, max_wait_s: float):
        super().__init__(
            f"{reason}; the server asked to wait {asked:g}s, more than "
            f"retry_max_wait_s ({max_wait_s:g}s)"
        )
        self.reason = reason


class RetryFields(BaseModel):
    """The retry settings of every HTTP connector, under the same keys everywhere.

    A connector with other defaults (MediaWiki's are longer) redeclares the field with the
    same type: ``max_retries: Retries = 4``.
    """

    max_retries: Retries = 3
    backoff_s: Backoff = 1.0
    retry_max_wait_s: MaxWait = 60

    def retry_policy(self, *, over_max_wait: Literal["cap", "fail"] = "cap") -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_s, self.retry_max_wait_s, over_max_wait)


@dataclass(frozen=True)
class RetryPolicy:
    """How kbot retries a request: ``max_retries`` more attempts after the first, waiting
    ``backoff_s`` doubled each time, or what ``Retry-After`` asks, never longer than
    ``max_wait_s``. A longer ``Retry-After`` is capped, or (``over_max_wait="fail"``) ends
    the retries with WaitTooLong."""

    max_retries: int
    backoff_s: float
    max_wait_s: float
    over_max_wait: Literal["cap", "fail"] = "cap"

    def wait_before(self, retry: int, asked: float | None) -> float:
        """The wait before retry number ``retry`` (0 for the first)."""
        if asked is None:
            return min(self.backoff_s * 2**retry, self.max_wait_s)
        if asked > self.max_wait_s and self.over_max_wait == "fail":
            raise WaitTooLong("", asked, self.max_wait_s)
        return min(asked, self.max_wait_s)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        what: str,
        sleep: Callable[[float], None] | None = None,
    ) -> T:
        """``attempt()``'s result; it raises Retry for a failure worth another try. Raises
        RetriesExhausted when none is left, WaitTooLong as described above; other errors
        pass through at once. ``sleep`` replaces the module's (a caller's own seam)."""
        wait_for = sleep or _sleep_seam
        last = Retry("no attempt was made")
        for n in range(self.max_retries + 1):
            try:
                return attempt()
            except Retry as e:
                last = e
            if n == self.max_retries:
                break
            try:
                wait = self.wait_before(n, last.asked)
            except WaitTooLong as e:
                raise WaitTooLong(last.reason, last.asked or 0.0, self.max_wait_s) from e
            log.info(
                "%s: %s; retrying in %.1fs (retry %d of %d)",
                what,
                last.reason,
                wait,
                n + 1,
                self.max_retries,
            )
            wait_for(wait)
        raise RetriesExhausted(last.reason, self.max_retries + 1)
