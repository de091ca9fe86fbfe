"""Request ids: every incoming request or chat event runs in a request context that holds
a fresh id in a contextvar.

The first question answered in that context takes the request id as its query id
(``new_query_id()``), so a log line, its ``queries`` row and ``kbot trace QUERY_ID`` all
carry one id. ``asyncio.to_thread`` and new tasks copy the context, so the answering thread
works under the id of the request that asked. The core owns this because it names the
query; adapters open the contexts and ``bot.ops.logs`` stamps log lines from them.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class _Request:
    id: str
    query_id: str | None = None
    claimed: bool = False  # the request id was given to a query already


_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "kbot_request", default=None
)
_claim_lock = threading.Lock()


def new_request_id() -> str:
    """A request id: 32 hex digits, the form of a query id."""
    return uuid.uuid4().hex


@contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Run the block as one request with a fresh id (or ``request_id``); yields the id."""
    token = _current.set(_Request(request_id or new_request_id()))
    try:
        yield _current.get().id  # type: ignore[union-attr]
    finally:
        _current.reset(token)


def fresh_context() -> contextvars.Context:
    """A copy of the current context with a new request of its own, for a background task
    that handles one chat event (``loop.create_task(..., context=fresh_context())``)."""
    ctx = contextvars.copy_context()
    ctx.run(_current.set, _Request(new_request_id()))
    return ctx


def current_request_id() -> str | None:
    req = _current.get()
    return req.id if req is not None else None


def current_query_id() -> str | None:
    req = _current.get()
    return req.query_id if req is not None else None


def new_query_id() -> str:
    """The id for a new query log row: the request's id for its first question (so logs and
    the query log share one id), a fresh one otherwise (no request, or a second question)."""
    req = _current.get()
    if req is None:
        return uuid.uuid4().hex
    with _claim_lock:
        qid = uuid.uuid4().hex if req.claimed else req.id
        req.claimed, req.query_id = True, qid
    return qid
