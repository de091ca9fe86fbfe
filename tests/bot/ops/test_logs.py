"""Structured JSON logs and request ids: over real HTTP to the real app (SQLite and the real
PostgreSQL server), a fake OpenAI server for a configured secret, and the real `kbot` CLI."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.answer import request_ids
from bot.chat.slack import mount as mount_slack
from bot.ops import logs
from bot.server import create_app
from config import parse_config
from db.models import QueryRecord
from tests.bot.fake_openai import completion, fake_openai
from tests.bot.fake_slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Loop,
    event_callback,
    mention,
    serving,
    signed_headers,
)
from tests.bot.servers import runbook_connector, send, serve, write_runbooks
from tests.conftest import make_config, migrated

ROTATE_Q = "How do I rotate the password of the message queue?"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
SLACK_ENV = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": BOT_TOKEN}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    return None if request.param == "sqlite" else migrated(request.getfixturevalue("pg_url"))


@pytest.fixture
def json_lines(caplog) -> Iterator[io.StringIO]:
    """Everything logged at DEBUG and up during the test, as kbot's JSON lines."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    caplog.set_level(logging.DEBUG)  # restored afterwards
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def request(url: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
    """(status, headers, parsed JSON body or None) of one real HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, None


@pytest.fixture
def served(tmp_path, database_url, runtime_factory) -> Iterator[tuple[str, Any]]:
    kb = write_runbooks(tmp_path / "kb")
    storage = {"data_dir": str(tmp_path / "data"), "database_url": database_url}
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)], storage=storage))
    [result] = rt.indexer.sync()
    assert result.ok, result.error
    with serve(create_app(rt)) as url:
        yield url, rt


def test_json_logs_carry_the_request_id_that_is_the_query_id(served, json_lines) -> None:
    url, rt = served
    status, headers, answer = request(url, "api/ask", {"question": ROTATE_Q, "user": "dana"})
    assert status == 200
    rid = headers["X-Request-Id"]
    assert HEX32.match(rid)
    # The answer's query id is the request id, and so is the query log row's id.
    assert answer["query_id"] == rid
    with rt.db.session() as s:
        row = s.get(QueryRecord, rid)
        assert row is not None and row.question == ROTATE_Q

    lines = parsed(json_lines)
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
    mine = [line for line in lines if line.get("request_id") == rid]
    [summary] = [line for line in mine if line["logger"] == "bot.ops.observer"]
    assert summary["query_id"] == rid
    assert summary["level"] == "INFO"
    assert summary["platform"] == "web" and summary["outcome"] == "answered"
    assert rid in summary["message"]
    assert "dana" not in summary["message"] and ROTATE_Q not in summary["message"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", summary["ts"])

    # The next request has an id of its own, tied to its own answer.
    _, headers2, answer2 = request(url, "api/ask", {"question": ROTATE_Q})
    assert headers2["X-Request-Id"] == answer2["query_id"] != rid


def test_every_response_has_a_request_id_and_a_client_cannot_choose_it(served) -> None:
    url, _ = served
    seen = set()
    for path, body in [("healthz", None), ("no-such-page", None), ("api/ask", {"q": 1})]:
        status, headers, _ = request(url, path, body, headers={"X-Request-Id": "a" * 32})
        assert status in (200, 404, 400)
        rid = headers["X-Request-Id"]
        assert HEX32.match(rid) and rid != "a" * 32
        seen.add(rid)
    assert len(seen) == 3


def test_a_vote_gets_a_request_id_of_its_own(served) -> None:
    url, _ = served
    _, _, answer = request(url, "api/ask", {"question": ROTATE_Q})
    status, headers, _ = request(url, "api/feedback", {"query_id": "0" * 32, "vote": "up"})
    assert status == 404
    assert headers["X-Request-Id"] not in (answer["query_id"], None)


def test_query_ids_within_and_outside_a_request() -> None:
    with request_ids.request_context() as rid:
        assert request_ids.current_request_id() == rid
        first, second = request_ids.new_query_id(), request_ids.new_query_id()
        assert first == rid
        assert HEX32.match(second) and second != rid  # a query id is never reused
        assert request_ids.current_query_id() == second
    assert request_ids.current_request_id() is None
    assert request_ids.new_query_id() != request_ids.new_query_id()
    ctx = request_ids.fresh_context()
    assert ctx.run(request_ids.current_request_id) not in (None, request_ids.current_request_id())


def test_a_json_line_is_one_line_with_the_exception_and_extras() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("kbot.test.jsonlines")
    log.addHandler(handler)
    log.propagate = False
    try:
        with request_ids.request_context() as rid:
            try:
                raise RuntimeError("the store\nis broken")
            except RuntimeError:
                log.exception("sync of %s failed", "runbooks", extra={"connector": "runbooks"})
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = out.getvalue().splitlines()
    entry = json.loads(first)
    assert entry["message"] == "sync of runbooks failed"
    assert entry["level"] == "ERROR" and entry["logger"] == "kbot.test.jsonlines"
    assert entry["request_id"] == rid and "query_id" not in entry
    assert entry["connector"] == "runbooks"
    assert "RuntimeError: the store\nis broken" in entry["exc"]
    assert "request_id" not in json.loads(second)


def test_a_configured_secret_never_appears_in_the_logs(
    tmp_path, runtime_factory, json_lines, monkeypatch
) -> None:
    key = "sk-live-3f9a1c7e5b2d4f60"
    slack_token = "xoxb-111-222-aaaabbbbcccc"
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack_token)
    kb = write_runbooks(tmp_path / "kb")
    with fake_openai() as fake:
        fake.script = [completion("Generate a new password with `mq-admin passwd` [1].")]
        config = parse_config(
            {
                "storage": {"data_dir": str(tmp_path / "data")},
                "llm": fake.llm_section(api_key="${KBOT_TEST_LLM_KEY}"),
                "connectors": [runbook_connector(kb)],
            },
            source="test.yaml",
            base_dir=tmp_path,
            env={"KBOT_TEST_LLM_KEY": key},
        )
        logs.use_config(config)
        rt = runtime_factory(config)
        [result] = rt.indexer.sync()
        assert result.ok
        with serve(create_app(rt)) as url:
            status, _, answer = request(url, "api/ask", {"question": ROTATE_Q})
        assert status == 200 and answer["generated"] is True
        # The key was really sent to the model server (so it was there to leak).
        assert fake.requests
    # A careless library that logs a credential, and an error message that quotes one.
    careless = logging.getLogger("some.http.client")
    careless.debug("headers: {'Authorization': 'Bearer %s'}", key)
    careless.info("posting with token %s", slack_token)
    try:
        raise PermissionError(f"key {key} was refused")
    except PermissionError:
        careless.exception("call failed")

    out = json_lines.getvalue()
    assert out.count(logs.REDACTED) >= 3
    assert key not in out and slack_token not in out
    plain = logs.PlainFormatter().format(
        logging.LogRecord("x", logging.INFO, "", 0, "token=%s", (key,), None)
    )
    assert key not in plain and logs.REDACTED in plain


def test_secret_values_come_from_secret_fields_urls_and_the_environment(tmp_path) -> None:
    config = make_config(
        tmp_path,
        [],
        storage={
            "data_dir": str(tmp_path / "data"),
            "database_url": "postgresql+psycopg://kbot:pg-pass-1234@db:5432/kbot",
        },
        llm={"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-abcdef123"},
    )
    found = logs.secret_values(config, env={"SLACK_SIGNING_SECRET": "sign-secret-99"})
    assert {"pg-pass-1234", "sk-abcdef123", "sign-secret-99"} <= found
    assert "gpt-4o-mini" not in found and "postgresql+psycopg" not in " ".join(found)


def test_the_cli_writes_json_lines_when_the_config_or_the_flag_asks(tmp_path: Path) -> None:
    """The real `kbot` in a subprocess. An OTLP endpoint makes it log one line at start."""

    def run(*args: str, json_logs: bool) -> list[str]:
        config = tmp_path / "kbot.yaml"
        config.write_text(
            json.dumps(
                {
                    "storage": {"data_dir": str(tmp_path / "data")},
                    "observability": {
                        "json_logs": json_logs,
                        "otlp_endpoint": "http://127.0.0.1:9/",
                    },
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "bot.cli", "--config", str(config), *args, "connectors", "list"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=Path(__file__).resolve().parents[3],
        )
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stderr.splitlines() if "OpenTelemetry" in line]

    for lines in (run(json_logs=True), run("--log-json", json_logs=False)):
        [line] = lines
        entry = json.loads(line)
        assert entry["level"] == "INFO" and entry["logger"] == "bot.ops.otel"
        assert entry["message"] == "OpenTelemetry: sending spans to http://127.0.0.1:9/v1/traces"
        assert "request_id" not in entry
    [line] = run(json_logs=False)
    assert line.endswith(
        "INFO bot.ops.otel: OpenTelemetry: sending spans to http://127.0.0.1:9/v1/traces"
    )


def test_each_slack_event_is_a_request_whose_id_is_its_answers_query_id(
    tmp_path, runtime_factory, json_lines
) -> None:
    loop, fake = Loop(), FakeSlack()
    try:
        with serving(loop, fake.app()) as fake_url:
            fake.url = fake_url
            kb = write_runbooks(tmp_path / "kb")
            slack = {"api_base_url": fake_url + "api/"}
            rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)], slack=slack))
            rt.indexer.sync()
            app = create_app(rt)
            adapter = mount_slack(app, rt, env=SLACK_ENV)
            with serving(loop, app) as url:
                for channel in ("C0ONE", "C0TWO"):
                    body = json.dumps(event_callback(mention(ROTATE_Q, channel)))
                    req = urllib.request.Request(
                        url + "slack/events", data=body.encode(), headers=signed_headers(body)
                    )
                    assert send(req).status == 200
                loop.run(adapter.drain())

            # Outside any HTTP request (as in Socket Mode) an event still gets its own id.
            seen: list[str | None] = []

            async def probe() -> None:
                seen.append(request_ids.current_request_id())

            async def spawn() -> None:
                adapter.spawn(probe())
                await adapter.drain()

            loop.run(spawn())
            assert len(seen) == 1 and HEX32.match(seen[0] or "")
    finally:
        loop.close()
    with rt.db.session() as s:
        rows = {r.channel: r.id for r in s.scalars(select(QueryRecord))}
    assert set(rows) == {"C0ONE", "C0TWO"}
    summaries = [
        line
        for line in parsed(json_lines)
        if line["logger"] == "bot.ops.observer" and line.get("platform") == "slack"
    ]
    assert len(summaries) == 2
    for line in summaries:
        assert line["request_id"] == line["query_id"]
    assert {line["query_id"] for line in summaries} == set(rows.values())
