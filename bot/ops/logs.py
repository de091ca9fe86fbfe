"""Structured logs: one JSON object per line, each carrying the id of the request it served.

Every incoming request or chat event runs in a request context
(``bot.answer.request_ids``) that holds a fresh request id in a contextvar. The first
question answered in that context takes the request id as its query id, so a log line, its
``queries`` row and ``kbot trace QUERY_ID`` all carry the same id. ``asyncio.to_thread``
and new tasks copy the context, so the answering thread logs under the id of the request
that asked.

Whatever the format, known secrets (tokens and passwords from the config and the
environment) are replaced by ``[redacted]`` before a line is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from bot.answer.request_ids import current_query_id, current_request_id, request_context

if TYPE_CHECKING:
    from aiohttp import web

    from config.models import KbotConfig

REQUEST_ID_HEADER = "X-Request-Id"
REDACTED = "[redacted]"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Secrets read from the environment by the adapters, not through the config file.
SECRET_ENV = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "MICROSOFT_APP_PASSWORD",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
)
# Config fields whose value is a secret, by name (llm.api_key, an admin token, a password).
_SECRET_FIELD = re.compile(r"(token|password|secret|api_?key|credential)s?$", re.IGNORECASE)
# Shorter values are not redacted: replacing every "abc" in every line helps nobody.
MIN_SECRET_CHARS = 6
# LogRecord attributes that are not extras passed by the caller.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "query_id",
    "taskName",
}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``query_id`` (None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        record.query_id = current_query_id()
        return True


class Redactor:
    """Replaces known secret values in text."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(found | set(self.secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text


# The secrets this process knows of (``use_config``, ``add_secrets``); formatters default to it.
_redactor = Redactor()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, query_id (when
    known), exc (a traceback), and any ``extra=`` fields the caller passed."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__()
        self.redact = redact or _redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None)
        query_id = getattr(record, "query_id", None)
        if request_id is None and query_id is None:  # a handler without the filter
            request_id, query_id = current_request_id(), current_query_id()
        if request_id:
            entry["request_id"] = request_id
        if query_id:
            entry["query_id"] = query_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exc"] = self.redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            entry["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.redact(record.stack_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        # An extra field, or a secret with characters JSON escapes, can still hold one.
        return self.redact(line)


class PlainFormatter(logging.Formatter):
    """The human-readable format, with known secrets redacted."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__(PLAIN_FORMAT)
        self.redact = redact or _redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class _KbotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler kbot installs, told apart from handlers others installed."""


def setup(*, json_logs: bool = False, verbose: bool = False, stream: IO[str] | None = None) -> None:
    """Log to stderr (or ``stream``), as JSON lines or plain text, at INFO (DEBUG when
    ``verbose``). Like ``logging.basicConfig``, it leaves a root logger that someone else
    (a test runner) has already given handlers alone; kbot's own handler is replaced."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _KbotHandler)]
    if root.handlers and not ours:
        return
    for h in ours:
        root.removeHandler(h)
    handler = _KbotHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter(_redactor) if json_logs else PlainFormatter(_redactor))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def use_config(config: KbotConfig, *, json_logs: bool = False) -> None:
    """Apply a loaded config: redact its secrets from now on, and switch kbot's handler to
    JSON lines when ``observability.json_logs`` (or ``json_logs``) asks for them."""
    _redactor.update(secret_values(config))
    if not (json_logs or config.observability.json_logs):
        return
    for h in logging.getLogger().handlers:
        if isinstance(h, _KbotHandler) and not isinstance(h.formatter, JsonFormatter):
            h.setFormatter(JsonFormatter(_redactor))


def add_secrets(secrets: Iterable[str]) -> None:
    """Redact these values from every line kbot's handler writes."""
    _redactor.update(secrets)


def secret_values(config: KbotConfig, env: dict[str, str] | None = None) -> set[str]:
    """The secrets in ``config`` (fields named like tokens, passwords and keys, and the
    credentials in any URL) and in the adapters' environment variables."""
    env = dict(os.environ) if env is None else env
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v, key)
        elif isinstance(node, SecretStr):
            found.add(node.get_secret_value())
        elif isinstance(node, str):
            if _SECRET_FIELD.search(key):
                found.add(node)
            found.update(_url_credentials(node))

    walk(config.model_dump(exclude={"connectors"}))
    for c in config.connectors:  # dumped one by one: each has its own type's fields
        walk(c.model_dump())
    for name in SECRET_ENV:
        value = env.get(name) or ""
        found.add(value)
        if name.endswith("_HEADERS"):  # key=value,key=value
            found.update(unquote(p.partition("=")[2]).strip() for p in value.split(","))
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def _url_credentials(value: str) -> set[str]:
    if "@" not in value or "://" not in value:
        return set()
    try:
        parts = urlsplit(value)
    except ValueError:
        return set()
    out = set()
    for s in (parts.username, parts.password):
        if s:
            out |= {s, unquote(s)}
    return out


def aiohttp_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that runs each request in its own request context and returns
    the id as ``X-Request-Id``. An id the client sends is not reused: it becomes a query id,
    a primary key that a client must not be able to choose or repeat."""
    from aiohttp import web

    @web.middleware
    async def request_ids(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with request_context() as rid:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                e.headers[REQUEST_ID_HEADER] = rid
                raise
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = rid
            return response

    return request_ids
