"""The local web chat: its page and its JSON API (/api/ask, /api/ask/stream, /api/feedback).

``/api/ask/stream`` answers as Server-Sent Events: ``delta`` events with the model's text
as it comes, then one ``final`` event with the answer as ``/api/ask`` returns it (validated
on the complete text), ``replaced`` and the ``note`` to show when it replaced what was
streamed.

The adapter only turns HTTP into calls on the services; ``bot.server`` mounts it beside
the other surfaces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from hashlib import sha256
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from bot.answer.feedback import FeedbackError, UnknownQuery
from bot.answer.limits import RateLimited
from bot.answer.request_ids import current_request_id
from bot.answer.streaming import Delta
from bot.answer.types import Answer, QuestionError, Requester
from bot.chat.streams import stream_queue
from bot.runtime import Runtime

log = logging.getLogger(__name__)
# The chat page is a template like the review pages, so whatever it is ever given is escaped.
PAGES = Environment(
    loader=PackageLoader("bot.chat", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


WEB_RUNTIME = web.AppKey("web_chat_runtime", Runtime)


def mount_web_chat(app: web.Application, runtime: Runtime) -> None:
    """Serve the web chat page and its JSON API on ``app``."""
    app[WEB_RUNTIME] = runtime
    app.middlewares.append(_json_errors)
    app.add_routes(
        [
            web.get("/", index),
            web.post("/api/ask", api_ask),
            web.post("/api/ask/stream", api_ask_stream),
            web.post("/api/feedback", api_feedback),
        ]
    )


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The page reads every /api reply as JSON, so an unexpected failure must be JSON too."""
    try:
        return await handler(request)
    except _Rejected as e:
        return _error(e.status, str(e))
    except web.HTTPException:
        raise
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        log.exception("%s %s failed", request.method, request.path)
        # The exception text can name internal URLs or paths; it goes to the log only.
        return _error(500, "kbot hit an internal error; the details are in the server log.")


async def index(request: web.Request) -> web.Response:
    """The chat page. ``no-cache`` makes a browser ask again each time; the ETag lets it
    keep its copy (304) until the page changes."""
    body = PAGES.get_template("chat.html").render()
    etag = sha256(body.encode()).hexdigest()[:16]
    headers = {"Cache-Control": "no-cache"}
    if any(tag.value == etag for tag in request.if_none_match or ()):
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(
            text=body, content_type="text/html", charset="utf-8", headers=headers
        )
    response.etag = etag
    return response


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Rejected(Exception):
    """A request the API refuses, with the status and the message the page shows."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise _Rejected(
            413, f"the request body is larger than {MAX_BODY // 1024} KiB; ask a shorter question"
        ) from None
    except ValueError:
        raise _Rejected(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise _Rejected(400, "the request body must be a JSON object")
    return body


# A conversation id names the web chat's thread: what the page makes (a UUID) and more.
_CONVERSATION = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


async def api_ask(request: web.Request) -> web.Response:
    """``{"question": str, "user"?: str, "conversation"?: str}`` -> the answer, its
    citations and its query id. Questions of one ``conversation`` are a thread: each is a
    follow-up of the ones before."""
    rt = request.app[WEB_RUNTIME]
    question, requester = await _question(request)
    try:
        # Embedding, the store and the database are blocking: keep them off the event loop.
        answer = await asyncio.to_thread(lambda: rt.answering.ask(question, requester))
    except QuestionError as e:
        return _refused(e)
    return web.json_response(_answer_json(answer))


async def api_ask_stream(request: web.Request) -> web.StreamResponse:
    """``/api/ask``, streamed as Server-Sent Events: ``delta`` ``{"text"}`` events, then
    one ``final`` event with the answer, ``replaced`` and ``note``. An unusable question
    is refused as ``/api/ask`` refuses it, before the stream starts."""
    rt = request.app[WEB_RUNTIME]
    question, requester = await _question(request)
    items = stream_queue(rt.answering.stream, question, requester)
    first = await items.get()
    if isinstance(first, QuestionError):
        return _refused(first)
    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # a proxy must pass each event on as it comes
    }
    rid = current_request_id()
    if rid is not None:
        # Sent before the request ends, so the request-id middleware cannot add it.
        headers["X-Request-Id"] = rid
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    item = first
    try:
        while True:
            if isinstance(item, BaseException):
                log.error("a streamed answer failed", exc_info=item)
                error = "kbot hit an internal error; the details are in the server log."
                await response.write(_event("error", {"error": error}))
                break
            if isinstance(item, Delta):
                await response.write(_event("delta", {"text": item.text}))
            else:
                data = {**_answer_json(item.answer), "replaced": item.replaced, "note": item.note}
                await response.write(_event("final", data))
                break
            item = await items.get()
        await response.write_eof()
    except ConnectionResetError:  # the page went away; the answer is logged all the same
        log.info("the web chat closed a streamed answer before its end")
    return response


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _question(request: web.Request) -> tuple[str, Requester]:
    """The question and who asked it, from an ask request's JSON body."""
    body = await _json_body(request)
    question = body.get("question")
    if not isinstance(question, str):
        raise _Rejected(400, "'question' must be a string")
    conversation = body.get("conversation")
    if conversation is not None and (
        not isinstance(conversation, str) or not _CONVERSATION.fullmatch(conversation)
    ):
        raise _Rejected(400, "'conversation' must be an id of 1 to 100 letters, digits and . _ : -")
    return question, Requester(platform="web", channel="web", user=_user(body), thread=conversation)


def _refused(e: QuestionError) -> web.Response:
    if isinstance(e, RateLimited):
        return web.json_response(
            {"error": str(e)}, status=429, headers={"Retry-After": str(e.retry_after_s)}
        )
    return _error(400, str(e))


def _answer_json(answer: Answer) -> dict[str, Any]:
    data = answer.as_json()
    for cj, c in zip(data["citations"], answer.citations, strict=True):
        cj["heading"] = c.heading
    return data


async def api_feedback(request: web.Request) -> web.Response:
    """``{"query_id": str, "vote": "up"|"down", "reason"?: str, "user"?: str}``."""
    rt = request.app[WEB_RUNTIME]
    body = await _json_body(request)
    query_id, vote, reason = body.get("query_id"), body.get("vote"), body.get("reason")
    if not isinstance(query_id, str) or not query_id:
        return _error(400, "'query_id' must be the query_id of an answer")
    if not isinstance(vote, str):
        return _error(400, "'vote' must be 'up' or 'down'")
    try:
        recorded = await asyncio.to_thread(
            rt.feedback.record,
            query_id,
            vote,
            user=_user(body),
            reason=reason if isinstance(reason, str) else None,
        )
    except FeedbackError as e:
        return _error(404 if isinstance(e, UnknownQuery) else 400, str(e))
    return web.json_response({"recorded": recorded.vote, "changed": recorded.changed})


def _user(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    return user[:255] if isinstance(user, str) and user.strip() else None
