"""``/metrics`` on the real aiohttp app, scraped over real HTTP and read with prometheus_client's
own parser, on SQLite and on the real PostgreSQL server. Syncs run in a separate "worker"
runtime, as with ``kbot worker`` beside ``kbot serve``."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy import text as sql

from bot.runtime import Runtime
from bot.server import create_app
from config import KbotConfig
from db.models import SyncRun
from tests.bot.fake_openai import completion, fake_openai
from tests.bot.servers import RUNBOOKS, runbook_connector, send, serve, write_runbooks
from tests.conftest import make_config, migrated

ROTATE_Q = "How do I rotate the password of the message queue?"
OFF_TOPIC_Q = "What flour to water ratio makes a good sourdough starter?"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    with urllib.request.urlopen(urllib.request.Request(url + "metrics", headers=headers)) as r:
        assert r.status == 200
        return r.read().decode(), r.headers["Content-Type"]


def samples(url: str) -> Samples:
    text, _ = scrape(url)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    reply = send(req)
    assert reply.status == 200, reply.body
    return reply.json()


@dataclass
class Served:
    url: str
    rt: Runtime  # the server's runtime: it never syncs
    config: KbotConfig
    kb: Path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    return None if request.param == "sqlite" else migrated(request.getfixturevalue("pg_url"))


def configure(tmp_path: Path, database_url: str | None, **sections: Any) -> tuple[KbotConfig, Path]:
    kb = write_runbooks(tmp_path / "kb")
    storage = {"data_dir": str(tmp_path / "data"), "database_url": database_url}
    return make_config(tmp_path, [runbook_connector(kb)], storage=storage, **sections), kb


def worker_sync(config: KbotConfig) -> None:
    """A sync in a runtime of its own, as ``kbot worker`` runs it beside the server."""
    worker = Runtime(config)
    try:
        worker.indexer.sync()
    finally:
        worker.close()


@pytest.fixture
def served(tmp_path, database_url, runtime_factory) -> Iterator[Served]:
    config, kb = configure(tmp_path, database_url)
    worker_sync(config)
    rt = runtime_factory(config)
    with serve(create_app(rt)) as url:
        yield Served(url, rt, config, kb)


def test_metrics_parse_and_count_questions_stages_and_votes(served: Served) -> None:
    before = samples(served.url)
    answered = post(served.url, "api/ask", {"question": ROTATE_Q, "user": "alice@example.com"})
    abstained = post(served.url, "api/ask", {"question": OFF_TOPIC_Q, "user": "bob"})
    post(served.url, "api/feedback", {"query_id": answered["query_id"], "vote": "up"})
    post(served.url, "api/feedback", {"query_id": abstained["query_id"], "vote": "down"})
    after = samples(served.url)

    assert not answered["abstained"] and abstained["abstained"]
    moved = {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].startswith(("kbot_requests", "kbot_feedback", "kbot_answer_stage"))
        and after[key] != before.get(key, 0.0)
    }
    requests = "kbot_requests_total"
    assert moved[(requests, frozenset({("platform", "web"), ("outcome", "answered")}))] == 1
    assert moved[(requests, frozenset({("platform", "web"), ("outcome", "abstained")}))] == 1
    assert value(after, requests, platform="web", outcome="error") == 0
    for stage in ("retrieve", "answer", "total"):
        count = "kbot_answer_stage_duration_seconds_count"
        assert value(after, count, stage=stage) - value(before, count, stage=stage) == 2
        # Every observation falls in the +Inf bucket.
        bucket = "kbot_answer_stage_duration_seconds_bucket"
        assert value(after, bucket, stage=stage, le="+Inf") == value(after, count, stage=stage)
    assert (
        value(after, "kbot_feedback_votes", vote="up")
        - value(before, "kbot_feedback_votes", vote="up")
        == 1
    )
    assert (
        value(after, "kbot_feedback_votes", vote="down")
        - value(before, "kbot_feedback_votes", vote="down")
        == 1
    )
    assert value(after, "kbot_database_up") == 1
    # No model is configured: no model call was counted.
    assert not any(name.startswith("kbot_gen_ai") for name, _ in after)


def test_connector_metrics_come_from_the_database_that_the_worker_writes(
    served: Served,
) -> None:
    m = samples(served.url)
    with served.rt.db.session() as s:
        [run] = s.scalars(select(SyncRun)).all()
    chunks = served.rt.store.count()
    assert value(m, "kbot_connector_documents", connector="runbooks") == len(RUNBOOKS)
    assert value(m, "kbot_connector_chunks", connector="runbooks") == chunks
    assert value(m, "kbot_connector_sync_runs_total", connector="runbooks", status="ok") == 1
    assert value(m, "kbot_connector_sync_runs_total", connector="runbooks", status="failed") == 0
    fresh = value(m, "kbot_connector_last_success_timestamp_seconds", connector="runbooks")
    assert fresh == pytest.approx(run.finished_at.timestamp())
    took = (run.finished_at - run.started_at).total_seconds()
    duration = "kbot_connector_last_sync_duration_seconds"
    assert value(m, duration, connector="runbooks", status="ok") == pytest.approx(took)

    # The source suddenly lists no documents: the worker refuses the sync as a failure and
    # keeps the index; the server's next scrape shows it without being told.
    for rel in RUNBOOKS:
        (served.kb / rel).unlink()
    worker_sync(served.config)
    m = samples(served.url)
    assert value(m, "kbot_connector_sync_runs_total", connector="runbooks", status="failed") == 1
    assert value(m, "kbot_connector_sync_runs_total", connector="runbooks", status="ok") == 1
    assert value(m, "kbot_connector_documents", connector="runbooks") == len(RUNBOOKS)
    # Freshness is the last successful sync's, not the failed one's.
    assert value(
        m, "kbot_connector_last_success_timestamp_seconds", connector="runbooks"
    ) == pytest.approx(fresh)
    assert (
        "kbot_connector_last_sync_duration_seconds",
        frozenset({("connector", "runbooks"), ("status", "failed")}),
    ) in m


def test_no_user_id_or_question_text_reaches_the_metrics(served: Served) -> None:
    post(served.url, "api/ask", {"question": ROTATE_Q, "user": "carol.secret-user@example.com"})
    text, _ = scrape(served.url)
    assert "carol" not in text
    assert "message queue" not in text and "rotate" not in text
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("kbot_"), family.name
        for s in family.samples:
            assert set(s.labels) <= {
                "platform", "outcome", "stage", "le", "vote", "connector", "status", "reason",
                "version", "gen_ai_operation_name", "gen_ai_provider_name",
                "gen_ai_request_model", "gen_ai_token_type",
            }, s  # fmt: skip


def test_openmetrics_is_served_when_asked_for(served: Served) -> None:
    text, content_type = scrape(served.url, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    plain, content_type = scrape(served.url)
    assert content_type.startswith("text/plain")
    assert "# TYPE kbot_requests_total counter" in plain


def test_each_app_counts_only_its_own_runtime(served: Served, runtime_factory) -> None:
    other = runtime_factory(served.config)
    with serve(create_app(other)) as other_url:
        before = samples(other_url)
        post(served.url, "api/ask", {"question": ROTATE_Q})
        # Asked of the other runtime's service directly (as the CLI would): its app counts it.
        other.answering.ask(ROTATE_Q)
        after_other = samples(other_url)
    key = "kbot_requests_total"
    assert value(after_other, key, platform="cli", outcome="answered") == 1
    assert value(after_other, key, platform="web", outcome="answered") == value(
        before, key, platform="web", outcome="answered"
    )


def test_model_calls_tokens_and_cost(tmp_path, database_url, runtime_factory) -> None:
    with fake_openai() as fake:
        fake.script = [
            completion(
                "Generate a new password with `mq-admin passwd --user orders` [1].",
                prompt_tokens=900,
                completion_tokens=60,
            )
        ]
        llm = fake.llm_section(cache=False)
        config, _ = configure(tmp_path, database_url, llm=llm)
        worker_sync(config)
        rt = runtime_factory(config)
        with serve(create_app(rt)) as url:
            answer = post(url, "api/ask", {"question": ROTATE_Q})
            m = samples(url)
    assert answer["generated"] is True
    gen_ai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o-mini",
    }
    usage = "kbot_gen_ai_client_token_usage_sum"
    assert value(m, usage, gen_ai_token_type="input", **gen_ai) == 900
    assert value(m, usage, gen_ai_token_type="output", **gen_ai) == 60
    assert (
        value(m, "kbot_gen_ai_client_token_usage_count", gen_ai_token_type="input", **gen_ai) == 1
    )
    # gpt-4o-mini's list price: $0.15 per million input tokens, $0.60 per million output.
    cost = value(m, "kbot_gen_ai_client_cost_usd_total", **gen_ai)
    assert cost == pytest.approx(900 * 0.15e-6 + 60 * 0.60e-6)
    assert cost == pytest.approx(answer["usage"]["cost_usd"])
    assert value(m, "kbot_gen_ai_client_operation_duration_seconds_count", **gen_ai) == 1
    assert value(m, "kbot_answer_stage_duration_seconds_count", stage="generate") == 1
    assert value(m, "kbot_requests_total", platform="web", outcome="answered") == 1


def test_a_broken_index_counts_as_an_error(tmp_path, runtime_factory) -> None:
    config, _ = configure(tmp_path, None)
    config.storage.data_dir.mkdir(parents=True)
    (config.storage.data_dir / "chroma").write_text("not a Chroma store")
    rt = runtime_factory(config)
    with serve(create_app(rt)) as url:
        answer = post(url, "api/ask", {"question": ROTATE_Q})
        m = samples(url)
    assert answer["error"]
    assert value(m, "kbot_requests_total", platform="web", outcome="error") == 1
    assert value(m, "kbot_requests_total", platform="web", outcome="answered") == 0


def test_a_failing_database_still_serves_metrics(
    tmp_path, database_url, runtime_factory, caplog
) -> None:
    if database_url is not None:  # trust auth takes any password; it must not leak
        database_url = database_url.replace("postgres@", "postgres:hunter2-db-password@")
    config, _ = configure(tmp_path, database_url)
    rt = runtime_factory(config)
    with serve(create_app(rt)) as base:
        assert value(samples(base), "kbot_database_up") == 1
        with rt.db.session() as s:  # the database loses a table under the running server
            s.execute(sql("DROP TABLE documents"))
        body, _ = scrape(base)
    m = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    assert value(m, "kbot_database_up") == 0
    assert not any(name.startswith("kbot_connector") for name, _ in m)
    assert "# TYPE kbot_requests_total counter" in body  # the in-process half is still there
    assert "cannot read the database" in caplog.text
    assert "hunter2" not in body and "hunter2" not in caplog.text


def test_chroma_and_redis_up_follow_an_outage_and_its_recovery(
    tmp_path, chroma_server, redis_url, runtime_factory
) -> None:
    config, _ = configure(tmp_path, None)
    config = make_config(
        tmp_path,
        [c.model_dump() for c in config.connectors],
        storage={
            "data_dir": str(tmp_path / "data"),
            "chroma_url": chroma_server.url,
            "redis_url": redis_url,
        },
    )
    worker_sync(config)
    rt = runtime_factory(config)
    with serve(create_app(rt)) as url:
        assert not post(url, "api/ask", {"question": ROTATE_Q})["error"]
        m = samples(url)
        assert value(m, "kbot_chroma_up") == 1 and value(m, "kbot_redis_up") == 1

        chroma_server.process.terminate()
        chroma_server.process.wait(timeout=10)
        answer = post(url, "api/ask", {"question": ROTATE_Q})
        m = samples(url)
        assert "unavailable" in answer["error"], answer
        assert value(m, "kbot_chroma_up") == 0
        assert value(m, "kbot_requests_total", platform="web", outcome="error") == 1

        # The same server back on its port and folder: up again, with no restart of kbot.
        again = subprocess.Popen(
            chroma_server.process.args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while value(samples(url), "kbot_chroma_up") != 1:
                assert time.monotonic() < deadline, "Chroma did not come back"
                time.sleep(0.2)
            assert not post(url, "api/ask", {"question": ROTATE_Q})["error"]
        finally:
            again.terminate()
            again.wait(timeout=10)

        import redis

        rt.__dict__["redis"] = redis.Redis(port=9, socket_connect_timeout=0.5)
        assert value(samples(url), "kbot_redis_up") == 0
