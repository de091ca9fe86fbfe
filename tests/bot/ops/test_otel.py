"""OpenTelemetry spans of the answer pipeline: recorded with the SDK's in-memory exporter for
answers asked over real HTTP (SQLite and the real PostgreSQL server), exported over real
OTLP/HTTP (protobuf) to a local collector stand-in, and absent, not even imported, when no
endpoint is configured."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.answer.types import QuestionError
from bot.ops import observer, otel
from bot.runtime import Runtime
from bot.server import create_app
from config.models import ObservabilityConfig
from tests.bot.fake_openai import FakeOpenAI, completion, error, fake_openai
from tests.bot.servers import runbook_connector, send, serve, write_runbooks
from tests.conftest import make_config, migrated

ROTATE_Q = "How do I rotate the password of the message queue?"
GOOD = "Generate a new password with `mq-admin passwd --user orders` [1]."


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    return None if request.param == "sqlite" else migrated(request.getfixturevalue("pg_url"))


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otel.use(provider)
    observer.install()  # as the CLI and the server do
    try:
        yield memory
    finally:
        otel.use(None)
        provider.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai() as f:
        f.script = [completion(GOOD, prompt_tokens=900, completion_tokens=60)]
        yield f


def llm_runtime(tmp_path: Path, database_url: str | None, fake: FakeOpenAI, factory) -> Runtime:
    kb = write_runbooks(tmp_path / "kb")
    storage = {"data_dir": str(tmp_path / "data"), "database_url": database_url}
    llm = fake.llm_section(cache=False)
    rt = factory(make_config(tmp_path, [runbook_connector(kb)], storage=storage, llm=llm))
    [result] = rt.indexer.sync()
    assert result.ok, result.error
    return rt


def ask_over_http(rt: Runtime, question: str = ROTATE_Q) -> tuple[dict[str, Any], str]:
    with serve(create_app(rt)) as url:
        req = urllib.request.Request(
            url + "api/ask",
            data=json.dumps({"question": question, "user": "erin"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read()), r.headers["X-Request-Id"]


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    out = {s.name: s for s in spans}
    assert len(out) == len(spans), [s.name for s in spans]
    return out


def test_a_generated_answer_is_a_trace_of_its_stages_with_gen_ai_attributes(
    tmp_path, database_url, fake, runtime_factory, exporter
) -> None:
    rt = llm_runtime(tmp_path, database_url, fake, runtime_factory)
    exporter.clear()
    answer, request_id = ask_over_http(rt)
    assert answer["generated"] is True

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"kbot answer", "retrieval", "compose", "chat gpt-4o-mini", "validate"}
    root = spans["kbot answer"]
    assert root.parent is None
    assert root.attributes["kbot.query_id"] == answer["query_id"] == request_id
    assert root.attributes["kbot.request_id"] == request_id
    assert root.attributes["kbot.platform"] == "web"
    assert root.attributes["kbot.outcome"] == "answered"
    assert root.attributes["kbot.mode"] == "generated"
    assert root.attributes["gen_ai.request.model"] == "gpt-4o-mini"

    chat = spans["chat gpt-4o-mini"]
    assert chat.kind == SpanKind.CLIENT
    assert dict(chat.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.output_tokens": 60,
        "kbot.cost_usd": pytest.approx(900 * 0.15e-6 + 60 * 0.60e-6),
    }
    assert chat.status.status_code == StatusCode.UNSET
    assert spans["retrieval"].attributes["gen_ai.operation.name"] == "retrieval"
    assert spans["retrieval"].attributes["kbot.retrieved"] > 0

    # The stages are children of the answer, end to end in pipeline order, inside it.
    order = [spans[n] for n in ("retrieval", "compose", "chat gpt-4o-mini", "validate")]
    for s in order:
        assert s.parent.span_id == root.context.span_id
        assert s.context.trace_id == root.context.trace_id
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time
    for earlier, later in zip(order, order[1:], strict=False):
        assert earlier.end_time == later.start_time
    # Neither the question nor the user is in any span.
    for s in spans.values():
        for v in s.attributes.values():
            assert v != "erin" and "message queue" not in str(v)


def test_a_failed_model_call_is_an_error_span_and_the_answer_falls_back(
    tmp_path, fake, runtime_factory, exporter
) -> None:
    rt = llm_runtime(tmp_path, None, fake, runtime_factory)
    fake.script = [error(500, "the model is overloaded")]
    exporter.clear()
    answer, _ = ask_over_http(rt)
    assert answer["generated"] is False and answer["fallback_reason"] == "provider_error"
    spans = by_name(exporter.get_finished_spans())
    chat = spans["chat gpt-4o-mini"]
    assert chat.status.status_code == StatusCode.ERROR
    assert chat.attributes["error.type"] == "provider_error"
    assert "gen_ai.usage.input_tokens" not in chat.attributes
    assert "validate" not in spans  # nothing came back to validate
    root = spans["kbot answer"]
    assert root.attributes["kbot.fallback_reason"] == "provider_error"
    assert root.attributes["kbot.outcome"] == "answered"  # the extractive answer was shown
    assert root.status.status_code == StatusCode.UNSET


def test_an_extractive_answer_has_no_model_span_and_a_refusal_is_no_error(
    tmp_path, runtime_factory, exporter
) -> None:
    kb = write_runbooks(tmp_path / "kb")
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)]))
    rt.indexer.sync()
    exporter.clear()
    answer, _ = ask_over_http(rt, "What flour to water ratio makes a good sourdough starter?")
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"kbot answer", "retrieval", "compose"}
    assert spans["kbot answer"].attributes["kbot.outcome"] == "abstained"
    assert spans["compose"].attributes["kbot.abstained"] is True
    assert answer["abstained"] is True

    exporter.clear()
    with pytest.raises(QuestionError):
        rt.answering.ask("   ")
    [refused] = exporter.get_finished_spans()
    assert refused.attributes["kbot.outcome"] == "refused"
    assert refused.status.status_code == StatusCode.UNSET
    assert not refused.events  # no exception recorded for bad input


class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        return app

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.content_types.append(request.content_type)
        self.requests.append(ExportTraceServiceRequest.FromString(body))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def spans(self) -> dict[str, Any]:
        return {
            span.name: span
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }


def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint(
    tmp_path, fake, runtime_factory, monkeypatch
) -> None:
    from opentelemetry import trace

    made_global: list[Any] = []
    # The test process keeps its global provider; kbot would set it in a real one.
    monkeypatch.setattr(trace, "set_tracer_provider", made_global.append)
    monkeypatch.setattr(otel, "_tracer", None)
    rt = llm_runtime(tmp_path, None, fake, runtime_factory)
    collector = Collector()
    with serve(collector.app()) as url:
        assert otel.setup(ObservabilityConfig(otlp_endpoint=url)) is True
        observer.install()  # as the CLI does after setup
        try:
            answer = rt.answering.ask(ROTATE_Q)
        finally:
            otel.shutdown()  # flushes the batch to the collector
    assert otel.tracer() is None
    assert len(made_global) == 1
    assert collector.content_types and set(collector.content_types) == {"application/x-protobuf"}
    spans = collector.spans()
    assert {"kbot answer", "retrieval", "compose", "chat gpt-4o-mini"} <= set(spans)
    resource = {
        a.key: a.value.string_value
        for a in collector.requests[0].resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "kbot"

    def attrs(name: str) -> dict[str, Any]:
        out = {}
        for a in spans[name].attributes:
            v = a.value
            out[a.key] = v.int_value if v.HasField("int_value") else v.string_value
        return out

    assert attrs("kbot answer")["kbot.query_id"] == answer.query_id
    chat = attrs("chat gpt-4o-mini")
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.usage.input_tokens"] == 900
    assert chat["gen_ai.usage.output_tokens"] == 60


def test_an_endpoint_without_the_packages_is_a_warning_not_an_error(monkeypatch, caplog) -> None:
    import builtins

    real_import = builtins.__import__

    def no_exporter(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.exporter.otlp.proto.http"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(otel, "_tracer", None)
    monkeypatch.setattr(builtins, "__import__", no_exporter)
    assert otel.setup(ObservabilityConfig(otlp_endpoint="http://127.0.0.1:9")) is False
    assert otel.tracer() is None
    assert "pip install 'kbot[otel]'" in caplog.text


def test_without_an_endpoint_nothing_of_opentelemetry_is_imported(tmp_path) -> None:
    """A process that serves and answers with no endpoint configured (chromadb, which would
    import OpenTelemetry itself, is left out by answering over an empty index)."""
    script = f"""
import sys
from bot.ops import otel
from bot.answer.service import AnsweringService
from bot.answer.types import Requester
from bot.answer.retrieval import Retriever
from bot.server import create_app
from config.models import AnsweringConfig, ObservabilityConfig, RetrievalConfig
from db import Database

assert otel.setup(ObservabilityConfig()) is False
db = Database("sqlite:///{tmp_path / "kbot.db"}")
db.migrate()
retriever = Retriever(RetrievalConfig(), lambda: None, None, None)
svc = AnsweringService(AnsweringConfig(), retriever, db)
answer = svc.ask("how do I restart the payments service?", Requester(platform="web"))
assert answer.abstained
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_traces_url_follows_the_otlp_endpoint_convention() -> None:
    assert otel.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otel.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otel.traces_url("https://x.example/v1/traces") == "https://x.example/v1/traces"


def test_metrics_and_spans_agree_on_one_answer(tmp_path, fake, runtime_factory, exporter) -> None:
    rt = llm_runtime(tmp_path, None, fake, runtime_factory)
    with serve(create_app(rt)) as url:
        exporter.clear()
        req = urllib.request.Request(
            url + "api/ask",
            data=json.dumps({"question": ROTATE_Q}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = send(req).json()
        metrics = send(urllib.request.Request(url + "metrics")).body.decode()
    spans = by_name(exporter.get_finished_spans())
    assert spans["kbot answer"].attributes["kbot.query_id"] == answer["query_id"]
    assert 'kbot_requests_total{outcome="answered",platform="web"} 1.0' in metrics
