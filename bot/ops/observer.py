"""The operations side's one observer of the answering service (``bot.answer.events``).

For each question it counts the answer in the metrics of every server over that service's
runtime, traces it when OpenTelemetry is on, and logs one access line when a server
answered it (in a request context). With none of these it only calls through.
``install()`` is called by whoever starts a server or the CLI; the service never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.answer import events
from bot.answer.request_ids import current_request_id
from bot.answer.types import Answer, QuestionError
from bot.ops import otel
from bot.ops.metrics import live

log = logging.getLogger(__name__)


def install() -> None:
    """Watch every answering service in this process (installing twice is installing once)."""
    events.subscribe(watch)


def watch(event: events.Asked, ask: Callable[[], Answer]) -> Answer:
    """Answer through ``ask`` and report the answer to metrics, spans and the request log.
    A refused question (``QuestionError``: empty, too long) is not a request; any other
    exception counts as an error and is raised on."""
    watchers = [m for m in list(live) if m.watches(event.service)]
    served = current_request_id() is not None
    if not watchers and not served and otel.tracer() is None:
        return ask()
    requester = event.requester
    platform = requester.platform if requester is not None else "cli"
    generator = event.service.generator
    provider = generator.config.provider if generator is not None else None
    try:
        if otel.tracer() is not None:
            answer = otel.traced(ask, platform, provider, QuestionError)
        else:
            answer = ask()
    except QuestionError:
        raise
    except Exception:
        for m in watchers:
            m.failed(platform)
        raise
    for m in watchers:
        m.answered(answer, platform, provider)
    if served:
        # One line per question a server answered: its access log, without the question.
        log.info(
            "query %s from %s: %s (%s) in %.0f ms",
            answer.query_id,
            platform,
            otel.outcome(answer),
            answer.mode,
            answer.latency_ms.get("total", 0.0),
            extra={"platform": platform, "outcome": otel.outcome(answer)},
        )
    return answer
