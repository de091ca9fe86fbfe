"""Optional OpenTelemetry spans of the answer pipeline, with GenAI semantic-convention names.

Off unless ``observability.otlp_endpoint`` is set: then ``setup()`` imports the SDK and the
OTLP/HTTP exporter (the ``kbot[otel]`` extra) and every answer becomes a ``kbot answer`` span
with children for its stages: ``retrieval``, ``compose`` (the extractive answer), ``chat
<model>`` (the model call) and ``validate``. Without an endpoint nothing is imported and the
answering path pays one ``is None`` check.

The stage spans are recorded when the answer is done, from the stage latencies the answering
service measures anyway (its start and each stage's duration), so the answering code carries
no tracing calls of its own. The root span is live while the answer is made, so spans that
other instrumentation starts inside it (an HTTP client's) are its children.

Spans carry no question, answer or user id: only ids, sizes, model, tokens and timings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bot.answer.types import Answer
    from config.models import ObservabilityConfig

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
# gen_ai.provider.name for each llm.provider (the semantic conventions' well-known values).
PROVIDER_NAMES = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "openai_compatible": "openai",
}
# Fallback reasons that mean the model call itself failed (an error.type on its span); the
# others are answers that arrived but did not pass validation.
CALL_FAILURES = {"timeout", "rate_limited", "provider_error", "unparseable"}

_tracer: Any = None
_provider: Any = None


def tracer() -> Any:
    """The tracer spans go to, or None when tracing is off."""
    return _tracer


def use(provider: Any) -> None:
    """Send spans to ``provider`` (an SDK ``TracerProvider``), or stop with None."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("kbot", kbot_version())


def shutdown() -> None:
    """Send the spans still queued and stop tracing."""
    provider = _provider
    use(None)
    if provider is not None:
        provider.shutdown()


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector's base address (``OTEL_EXPORTER_OTLP_ENDPOINT``
    semantics); a URL that already names the traces path is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def setup(config: ObservabilityConfig) -> bool:
    """Start exporting spans when an OTLP endpoint is configured (once per process).

    A missing SDK is a warning, not an error: kbot answers the same without traces.
    """
    if not config.otlp_endpoint:
        return False
    if _tracer is not None:
        return True
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        log.warning(
            "OpenTelemetry is off: observability.otlp_endpoint is set but %s is not installed "
            "(pip install 'kbot[otel]')",
            e.name,
        )
        return False
    url = traces_url(config.otlp_endpoint)
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or "kbot",
            "service.version": kbot_version(),
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
        # Global too, so spans other instrumentation makes join the same traces.
        trace.set_tracer_provider(provider)
    use(provider)
    where = urlsplit(url)  # without the credentials a URL may carry
    host = f"{where.hostname}:{where.port}" if where.port else where.hostname
    log.info("OpenTelemetry: sending spans to %s://%s%s", where.scheme, host, where.path)
    return True


def traced(
    ask: Callable[[], Answer], platform: str, provider: str | None, refused: type[Exception]
) -> Answer:
    """Run ``ask`` inside a ``kbot answer`` span, then record its stages as child spans."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from bot.answer.request_ids import current_request_id

    start = time.time_ns()
    with _tracer.start_as_current_span(
        "kbot answer",
        kind=SpanKind.INTERNAL,
        start_time=start,
        record_exception=False,
        set_status_on_exception=False,
    ) as root:
        root.set_attribute("kbot.platform", platform)
        if rid := current_request_id():
            root.set_attribute("kbot.request_id", rid)
        try:
            answer = ask()
        except refused:
            root.set_attribute("kbot.outcome", "refused")
            raise
        except Exception as e:
            root.set_attribute("kbot.outcome", "error")
            root.set_attribute("error.type", type(e).__qualname__)
            root.record_exception(e)
            root.set_status(Status(StatusCode.ERROR, type(e).__name__))
            raise
        root.set_attributes(_answer_attributes(answer))
        if answer.error:
            root.set_status(Status(StatusCode.ERROR, "dependency failed"))
        _stage_spans(trace.set_span_in_context(root), answer, start, provider)
        return answer


def outcome(answer: Answer) -> str:
    """answered, abstained or error: the outcome label of a finished answer."""
    if answer.error:
        return "error"
    return "abstained" if answer.abstained else "answered"


def _answer_attributes(answer: Answer) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "kbot.query_id": answer.query_id,
        "kbot.outcome": outcome(answer),
        "kbot.mode": answer.mode,
        "kbot.citations": len(answer.citations),
        "kbot.cache_hit": answer.cache_hit,
    }
    if answer.fallback_reason:
        attrs["kbot.fallback_reason"] = answer.fallback_reason
    if answer.model:
        attrs["gen_ai.request.model"] = answer.model
    return attrs


def _stage_spans(parent: Any, answer: Answer, start: int, provider: str | None) -> None:
    """Children of the answer's span, laid end to end from its start by stage latency."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    now = time.time_ns()
    at = start

    def span(name: str, stage: str, kind: Any, attrs: dict[str, Any]) -> Any:
        nonlocal at
        end = min(at + int(answer.latency_ms[stage] * 1_000_000), now)
        s = _tracer.start_span(name, context=parent, kind=kind, start_time=at, attributes=attrs)
        at = end
        return s, end

    stages: list[tuple[Any, int]] = []
    if "retrieve" in answer.latency_ms:
        best = max((r.get("dense", r.get("score", 0.0)) for r in answer.retrieved), default=0.0)
        stages.append(
            span(
                "retrieval",
                "retrieve",
                SpanKind.INTERNAL,
                {
                    "gen_ai.operation.name": "retrieval",
                    "kbot.retrieved": len(answer.retrieved),
                    "kbot.best_similarity": float(best),
                },
            )
        )
    if "answer" in answer.latency_ms:
        stages.append(
            span("compose", "answer", SpanKind.INTERNAL, {"kbot.abstained": answer.abstained})
        )
    if "generate" in answer.latency_ms and answer.model:
        name = PROVIDER_NAMES.get(provider or "", provider or "")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": answer.model,
        }
        if name:
            # gen_ai.system is the older name of gen_ai.provider.name; backends read either.
            attrs["gen_ai.provider.name"] = attrs["gen_ai.system"] = name
        if answer.usage is not None:
            attrs["gen_ai.usage.input_tokens"] = answer.usage.input_tokens
            attrs["gen_ai.usage.output_tokens"] = answer.usage.output_tokens
            if answer.usage.cached_tokens:
                attrs["gen_ai.usage.cache_read.input_tokens"] = answer.usage.cached_tokens
            if answer.usage.cost_usd is not None:
                attrs["kbot.cost_usd"] = answer.usage.cost_usd
        s, end = span(f"chat {answer.model}", "generate", SpanKind.CLIENT, attrs)
        if answer.fallback_reason in CALL_FAILURES:
            s.set_attribute("error.type", answer.fallback_reason)
            s.set_status(Status(StatusCode.ERROR, answer.fallback_reason))
        stages.append((s, end))
    if "validate" in answer.latency_ms:
        attrs = {"kbot.fallback_reason": answer.fallback_reason} if answer.fallback_reason else {}
        stages.append(span("validate", "validate", SpanKind.INTERNAL, attrs))
    for s, end in stages:
        s.end(end_time=end)


def kbot_version() -> str:
    """The installed kbot's version, for spans and ``kbot_build_info``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kbot")
    except PackageNotFoundError:
        return "unknown"
