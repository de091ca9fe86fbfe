"""What every HTTP client of kbot shares: how it names itself, and how it reads a server's
``Retry-After``. Connectors (web, Confluence, MediaWiki) and the chat adapters use these."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from importlib import metadata

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
