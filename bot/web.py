"""The aiohttp server: the local web chat, its JSON API and /healthz.

Later issues mount the Slack (/slack/events) and Teams (/api/messages) endpoints on the
same application. The adapter here only turns HTTP into calls on the services.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from bot.answering import QuestionError, Requester
from bot.feedback import FeedbackError

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
RUNTIME = web.AppKey("runtime", object)
MAX_BODY = 64 * 1024


def create_app(runtime) -> web.Application:  # noqa: ANN001 - bot.runtime.Runtime
    app = web.Application(client_max_size=MAX_BODY)
    app[RUNTIME] = runtime
    app.add_routes(
        [
            web.get("/", index),
            web.get("/healthz", healthz),
            web.post("/api/ask", api_ask),
            web.post("/api/feedback", api_feedback),
        ]
    )
    return app


async def index(request: web.Request) -> web.Response:
    return web.FileResponse(STATIC / "chat.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        chunks = await asyncio.to_thread(rt.store.count)
    except Exception as e:  # the store being broken is exactly what /healthz reports
        return web.json_response({"status": "degraded", "error": str(e)}, status=503)
    return web.json_response({"status": "ok", "chunks": chunks})


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "the request body must be JSON"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "the request body must be a JSON object"}', content_type="application/json"
        )
    return body


async def api_ask(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await _json_body(request)
    question = body.get("question")
    if not isinstance(question, str):
        return web.json_response({"error": "'question' must be a string"}, status=400)
    requester = Requester(platform="web", channel="web", user=_user(body))
    try:
        # Embedding and the database are blocking: keep them off the event loop.
        answer = await asyncio.to_thread(rt.answering.ask, question, requester)
    except QuestionError as e:
        return web.json_response({"error": str(e)}, status=400)
    data = answer.as_json()
    for cj, c in zip(data["citations"], answer.citations, strict=True):
        cj["heading"] = c.heading
    return web.json_response(data)


async def api_feedback(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    body = await _json_body(request)
    try:
        vote = await asyncio.to_thread(
            rt.feedback.record,
            str(body.get("query_id", "")),
            str(body.get("vote", "")),
            user=_user(body),
            reason=body.get("reason") if isinstance(body.get("reason"), str) else None,
        )
    except FeedbackError as e:
        status = 404 if "no answer" in str(e) else 400
        return web.json_response({"error": str(e)}, status=status)
    return web.json_response({"recorded": vote.vote, "changed": vote.changed})


def _user(body: dict) -> str | None:
    user = body.get("user")
    return user[:255] if isinstance(user, str) and user.strip() else None


def run_server(runtime, host: str, port: int, *, scheduler: bool = True) -> None:  # noqa: ANN001
    """Serve until interrupted. In the embedded default the scheduler runs in this process,
    so it is the one writer of the Chroma store on disk."""
    sched = None
    if scheduler:
        from indexer.scheduler import build_scheduler

        sched = build_scheduler(runtime.config, runtime.indexer, blocking=False)
        sched.start()
    runtime.embedder  # noqa: B018 - load the model before the first question, not during it
    app = create_app(runtime)
    if sched is not None:

        async def stop_scheduler(_app: web.Application) -> None:
            sched.shutdown(wait=False)

        app.on_cleanup.append(stop_scheduler)
    log.info("kbot web chat on http://%s:%s/", host, port)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
