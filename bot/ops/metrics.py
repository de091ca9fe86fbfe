"""``/metrics``: kbot's Prometheus metrics, in one CollectorRegistry per server.

Two kinds, by where the truth is:

- Events of this process (questions, their stage latencies, model calls, tokens, cost) are
  counted as they happen: ``bot.ops.observer`` watches every ``AnsweringService.ask`` and
  reports each answer to the ``Metrics`` of every server built over that service's runtime.
- State kept in the database (connector syncs, indexed documents, votes) is read at scrape
  time, so it is right in ``kbot serve`` although a separate ``kbot worker`` may run the syncs,
  and survives restarts.

Names follow Prometheus conventions (``kbot_`` prefix, ``_total`` counters, units in names)
and OpenTelemetry's GenAI metric names where one fits (``kbot_gen_ai_client_token_usage``
with ``gen_ai_token_type``). Labels hold only code-defined values and configured names
(platform, outcome, stage, model, connector, vote): never a user id or question text. That is
why ``/metrics`` is served without authentication, like ``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from bot.answer.feedback import VOTES
from bot.ops import otel
from db.models import Feedback, IndexedDocument, SyncRun

if TYPE_CHECKING:
    from bot.answer.types import Answer
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

PATH = "/metrics"
# Seconds: an embedding lookup takes milliseconds, a model call tens of seconds.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
# The GenAI semantic conventions' advised buckets for gen_ai.client.operation.duration and
# gen_ai.client.token.usage.
GEN_AI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
GEN_AI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
SYNC_STATUSES = ("ok", "failed")


class Metrics:
    """The metrics of one server over ``runtime``, in a registry of their own (not the
    global one, so two apps in a process, as in tests, never share or collide)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.registry = CollectorRegistry()
        r = self.registry
        Info("kbot_build", "The running kbot's version.", registry=r).info(
            {"version": otel.kbot_version()}
        )
        ProcessCollector(namespace="kbot", registry=r)
        self.requests = Counter(
            "kbot_requests",
            "Questions answered, by platform (web, slack, teams, cli) and outcome (answered, "
            "abstained, error: a dependency failed or answering raised).",
            ["platform", "outcome"],
            registry=r,
        )
        self.stages = Histogram(
            "kbot_answer_stage_duration_seconds",
            "Time per answering stage: retrieve, answer (extractive), generate (model call), "
            "validate (model output), total.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.operation = Histogram(
            "kbot_gen_ai_client_operation_duration_seconds",
            "Duration of model calls (gen_ai.client.operation.duration).",
            GEN_AI_LABELS,
            buckets=GEN_AI_DURATION_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "kbot_gen_ai_client_token_usage",
            "Tokens per model call by gen_ai_token_type input/output "
            "(gen_ai.client.token.usage); _sum is the total.",
            ("gen_ai_token_type", *GEN_AI_LABELS),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "kbot_gen_ai_client_cost_usd",
            "What model calls cost in USD, from the price table (models without a price add 0).",
            GEN_AI_LABELS,
            registry=r,
        )
        self.fallbacks = Counter(
            "kbot_answer_fallbacks",
            "Model answers not shown (the extractive answer was), by reason.",
            ["reason"],
            registry=r,
        )
        r.register(DatabaseCollector(runtime))
        r.register(DependencyCollector(runtime))
        live.add(self)

    def watches(self, service: object) -> bool:
        """Whether ``service`` is this runtime's answering service. Only an already built
        one is looked at: building it here would load the embedding model."""
        return service is self.runtime.__dict__.get("answering")

    def answered(self, answer: Answer, platform: str, provider: str | None) -> None:
        self.requests.labels(platform, otel.outcome(answer)).inc()
        for stage, ms in answer.latency_ms.items():
            self.stages.labels(stage).observe(ms / 1000)
        if answer.fallback_reason:
            self.fallbacks.labels(answer.fallback_reason).inc()
        if answer.model is None or "generate" not in answer.latency_ms:
            return  # no model call (extractive, a cache hit, the circuit open)
        gen_ai = ("chat", otel.PROVIDER_NAMES.get(provider or "", provider or ""), answer.model)
        self.operation.labels(*gen_ai).observe(answer.latency_ms["generate"] / 1000)
        if answer.usage is not None:
            self.tokens.labels("input", *gen_ai).observe(answer.usage.input_tokens)
            self.tokens.labels("output", *gen_ai).observe(answer.usage.output_tokens)
            self.cost.labels(*gen_ai).inc(answer.usage.cost_usd or 0.0)

    def failed(self, platform: str) -> None:
        self.requests.labels(platform, "error").inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` prefers (Prometheus text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


# Every live server's metrics; a server's go when its app does.
live: weakref.WeakSet[Metrics] = weakref.WeakSet()


class DependencyCollector(Collector):
    """``kbot_chroma_up`` and ``kbot_redis_up``: whether the vector store and Redis answer
    at scrape time (a heartbeat, a PING). Each is left out until this process has used
    it: opening the store here would load the embedding model, and without
    ``storage.redis_url`` there is no Redis."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        built = self.runtime.__dict__
        out = []
        if "store" in built:
            out.append(self._up("kbot_chroma_up", "Chroma", built["store"].client.heartbeat))
        if built.get("redis") is not None:
            out.append(self._up("kbot_redis_up", "Redis", built["redis"].ping))
        return out

    @staticmethod
    def _up(name: str, what: str, check) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily(name, f"1 when {what} answered at scrape time, else 0.")
        try:
            check()
            gauge.add_metric([], 1)
        except Exception as e:
            log.warning("/metrics: %s does not answer: %s", what, _first_line(e))
            gauge.add_metric([], 0)
        return gauge


class DatabaseCollector(Collector):
    """Connector and feedback metrics, read from the database at scrape time: a handful of
    grouped queries over small tables (sync runs, documents, votes). When the database
    cannot be read, ``kbot_database_up`` is 0 and these metrics are left out."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return []  # otherwise registering would run a scrape's queries

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "kbot_database_up", "1 when /metrics could read the database, else 0."
        )
        try:
            families = self._read()
        except Exception as e:
            log.warning("/metrics: cannot read the database: %s", _first_line(e))
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _read(self) -> list[Metric]:
        names = [c.name for c in self.runtime.config.connectors]
        with self.runtime.db.session() as s:
            docs = {
                c: (n, int(chunks or 0))
                for c, n, chunks in s.execute(
                    select(
                        IndexedDocument.connector,
                        func.count(),
                        func.sum(IndexedDocument.chunk_count),
                    ).group_by(IndexedDocument.connector)
                )
            }
            runs = {
                (c, status): n
                for c, status, n in s.execute(
                    select(SyncRun.connector, SyncRun.status, func.count())
                    .where(SyncRun.status.in_(SYNC_STATUSES))
                    .group_by(SyncRun.connector, SyncRun.status)
                )
            }
            last_ok = dict(
                s.execute(
                    select(SyncRun.connector, func.max(SyncRun.finished_at))
                    .where(SyncRun.status == "ok")
                    .group_by(SyncRun.connector)
                ).all()
            )
            latest = (
                select(func.max(SyncRun.id))
                .where(SyncRun.finished_at.is_not(None))
                .group_by(SyncRun.connector)
            )
            last_run = {
                r.connector: r for r in s.scalars(select(SyncRun).where(SyncRun.id.in_(latest)))
            }
            votes = dict(
                s.execute(select(Feedback.vote, func.count()).group_by(Feedback.vote)).all()
            )

        runs_total = CounterMetricFamily(
            "kbot_connector_sync_runs",
            "Finished syncs per connector, by status (ok, failed).",
            labels=["connector", "status"],
        )
        duration = GaugeMetricFamily(
            "kbot_connector_last_sync_duration_seconds",
            "How long the connector's latest finished sync took.",
            labels=["connector", "status"],
        )
        documents = GaugeMetricFamily(
            "kbot_connector_documents", "Documents indexed per connector.", labels=["connector"]
        )
        chunks = GaugeMetricFamily(
            "kbot_connector_chunks", "Chunks indexed per connector.", labels=["connector"]
        )
        fresh = GaugeMetricFamily(
            "kbot_connector_last_success_timestamp_seconds",
            "Unix time the connector's latest successful sync finished; 0: never. Its age "
            "(time() - this) is the index's freshness for that source.",
            labels=["connector"],
        )
        for name in names:
            for status in SYNC_STATUSES:
                runs_total.add_metric([name, status], runs.get((name, status), 0))
            n_docs, n_chunks = docs.get(name, (0, 0))
            documents.add_metric([name], n_docs)
            chunks.add_metric([name], n_chunks)
            ok_at = last_ok.get(name)
            fresh.add_metric([name], ok_at.timestamp() if ok_at else 0)
            run = last_run.get(name)
            if run is not None and run.finished_at is not None:
                took = (run.finished_at - run.started_at).total_seconds()
                duration.add_metric([name, run.status], max(took, 0.0))
        feedback = GaugeMetricFamily(
            "kbot_feedback_votes",
            "Votes on answers in the database, by vote (one per user and answer: a changed "
            "vote moves from one to the other).",
            labels=["vote"],
        )
        for vote in VOTES:
            feedback.add_metric([vote], votes.get(vote, 0))
        return [runs_total, duration, documents, chunks, fresh, feedback]


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


METRICS = web.AppKey("metrics", Metrics)


def mount(app: web.Application, runtime: Runtime) -> Metrics:
    """Serve ``GET /metrics`` on ``app``, counting the answers of ``runtime``'s service."""
    metrics = Metrics(runtime)
    app[METRICS] = metrics
    app.router.add_get(PATH, _endpoint)
    return metrics


async def _endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    # The database half of a scrape is blocking: off the event loop.
    body, content_type = await asyncio.to_thread(metrics.exposition, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})
