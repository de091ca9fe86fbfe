"""The aiohttp server: one application that mounts every HTTP surface over one runtime.

The web chat and its JSON API (``bot.chat.web``), Teams (``/api/messages``), Slack
(``/slack/events``, when its credentials are set), the leads' report pages (``/reports``),
``/metrics`` and ``/healthz``. Each surface lives in its own package; this module only
composes them, so no adapter imports another.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.chat.teams import mount_teams
from bot.chat.web import MAX_BODY, mount_web_chat
from bot.ops import observer
from bot.ops.logs import aiohttp_middleware as request_ids
from bot.ops.metrics import mount as mount_metrics
from bot.review.pages import mount_reports
from bot.review.queue import QueueCollector
from bot.review.queue_pages import mount_review
from bot.runtime import Runtime

log = logging.getLogger(__name__)
RUNTIME = web.AppKey("runtime", Runtime)


def create_app(runtime: Runtime) -> web.Application:
    """The application over ``runtime``'s services (Slack is mounted by ``run_server``)."""
    observer.install()  # metrics, spans and the request log watch the answering service
    app = web.Application(client_max_size=MAX_BODY, middlewares=[request_ids()])
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    mount_web_chat(app, runtime)  # /, /api/ask, /api/feedback
    mount_teams(app, runtime)
    mount_reports(app, runtime)  # /reports and /reports/trace/{id}, behind reports: auth
    mount_review(app, runtime)  # /reports/review and /reports/curations, the same auth
    metrics = mount_metrics(app, runtime)  # GET /metrics, unauthenticated: no user data in it
    metrics.registry.register(QueueCollector(runtime))  # kbot_review_queue
    return app


async def healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        # Opening the store on first use is blocking too, so both run off the event loop.
        chunks = await asyncio.to_thread(lambda: rt.store.count())
    except Exception as e:  # the store being broken is exactly what /healthz reports
        return web.json_response({"status": "degraded", "error": str(e)}, status=503)
    return web.json_response({"status": "ok", "chunks": chunks})


def run_server(
    runtime: Runtime,
    host: str,
    port: int,
    *,
    scheduler: bool = True,
    slack_socket_mode: bool = False,
) -> None:
    """Serve until interrupted. In the embedded default the scheduler runs in this process,
    so it is the one writer of the Chroma store on disk. Slack is served too when its
    credentials are in the environment (``bot.chat.slack.mount``)."""
    sched = None
    if scheduler:
        from bot.review.digest import digest_jobs
        from indexer.scheduler import build_scheduler

        jobs = digest_jobs(runtime.config, runtime.db)
        sched = build_scheduler(runtime.config, runtime.indexer, blocking=False, jobs=jobs)
        sched.start()
    runtime.embedder  # noqa: B018 - load the model before the first question, not during it
    app = create_app(runtime)
    from bot.chat.slack import mount as mount_slack

    mount_slack(app, runtime, socket_mode=slack_socket_mode)
    if sched is not None:

        async def stop_scheduler(_app: web.Application) -> None:
            sched.shutdown(wait=False)

        app.on_cleanup.append(stop_scheduler)
    log.info("kbot web chat on http://%s:%s/", host, port)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
