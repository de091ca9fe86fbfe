"""`kbot trace` and the trace page show a follow-up's thread: the questions it follows, what
was searched for it, and the follow-ups after it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import delete

from bot.answer.types import Requester
from bot.cli import cli
from bot.review.pages import trace_html
from bot.review.report import Redactor
from bot.review.trace import format_trace, trace
from config import load_config
from db.models import QueryRecord
from tests.bot.servers import runbook_connector, write_runbooks

FIRST = "How do I rotate the password of the message queue?"
SECOND = "where do I store it afterwards?"
THIRD = "and then what do I restart?"


@pytest.fixture
def thread(tmp_path, runtime_factory) -> tuple[Any, list[str]]:
    # A config file on disk, so the real CLI can read it too.
    path = tmp_path / "kbot.yaml"
    connector = runbook_connector(write_runbooks(tmp_path / "kb"))
    data = {"storage": {"data_dir": str(tmp_path / "data")}, "connectors": [connector]}
    path.write_text(yaml.safe_dump(data))
    rt = runtime_factory(load_config(path))
    assert rt.indexer.sync()[0].ok
    asker = Requester(platform="web", channel="web", thread="conv-trace")
    ids = [rt.answering.ask(q, asker).query_id for q in (FIRST, SECOND, THIRD)]
    return rt, ids


def test_a_follow_ups_trace_shows_its_chain(thread) -> None:
    rt, (first, second, third) = thread
    t = trace(rt.db, second)["thread"]
    assert [e["query_id"] for e in t["earlier"]] == [first]
    assert [x["query_id"] for x in t["later"]] == [third]
    assert t["standalone_question"] and SECOND in t["standalone_question"]
    text = format_trace(trace(rt.db, third))
    # Oldest first, then this one as searched.
    assert text.index(FIRST) < text.index(SECOND) < text.index("> this one, searched as:")
    assert trace(rt.db, first)["thread"]["earlier"] == []


def test_the_trace_page_links_the_thread_and_the_cli_prints_it(thread) -> None:
    rt, (first, second, third) = thread
    page = trace_html(trace(rt.db, second), Redactor())
    assert f'<a href="{first}">{FIRST}</a>' in page
    assert f'<a href="{third}">{THIRD}</a> (follow-up)' in page
    result = CliRunner().invoke(cli, ["--config", str(rt.config.source), "trace", second])
    assert result.exit_code == 0, result.output
    assert "thread: web:conv-trace" in result.output and FIRST in result.output
    out = CliRunner().invoke(cli, ["--config", str(rt.config.source), "trace", second, "--json"])
    assert json.loads(out.output)["thread"]["earlier"][0]["query_id"] == first


def test_a_chain_whose_earlier_query_is_gone_says_so(thread) -> None:
    rt, (first, second, third) = thread
    with rt.db.session() as s:
        s.execute(delete(QueryRecord).where(QueryRecord.id == first))
    t = trace(rt.db, third)["thread"]
    assert [e["query_id"] for e in t["earlier"]] == [second]
    assert t["missing"] == first
    assert f"(earlier query {first} is gone)" in format_trace(trace(rt.db, third))
