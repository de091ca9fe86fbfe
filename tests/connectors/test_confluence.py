"""The confluence connector against a local server speaking Confluence's REST API, and real
syncs of it into a real Chroma store."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from config import ConfigError, parse_config
from connectors import Connector, build_connector, confluence
from connectors.base import ConnectorError
from connectors.confluence import ConfluenceConfig, ConfluenceConnector, storage_to_markdown
from db.models import SyncRun
from indexer.chunking import Chunker
from tests.conftest import make_config
from tests.connectors.fake_confluence import (
    CLOUD_API_TOKEN,
    CLOUD_EMAIL,
    DC_TOKEN,
    FakeConfluence,
)

RESTART_BODY = """\
<p>Restart the <strong>payments API</strong> when its p99 latency alarms.</p>
<h2>Steps</h2>
<ol><li><p>Drain the node.</p></li><li><p>Restart the service.</p></li></ol>
<ac:structured-macro ac:name="code" ac:schema-version="1" ac:macro-id="a1b2">
<ac:parameter ac:name="language">bash</ac:parameter>
<ac:plain-text-body><![CDATA[if [ "$(curl -s localhost:8080/health)" != "ok" ]; then
    systemctl restart payments-api   # <- zz-restart-marker
fi]]></ac:plain-text-body></ac:structured-macro>
<h2>Owners</h2>
<table><tbody><tr><th><p>Team</p></th><th><p>Channel</p></th></tr>
<tr><td><p>Payments</p></td><td><p>#payments-oncall</p></td></tr></tbody></table>
"""
ROTATE_BODY = """\
<p>Certificates expire every 90 days.</p>
<ac:structured-macro ac:name="warning" ac:schema-version="1">
<ac:parameter ac:name="title">Do not skip</ac:parameter>
<ac:rich-text-body><p>Rotate the intermediate first.</p></ac:rich-text-body>
</ac:structured-macro>
<p>See <ac:link><ri:page ri:content-title="Restart the payments API" /></ac:link> afterwards.</p>
"""


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits are recorded, never slept."""
    recorded: list[float] = []
    monkeypatch.setattr("connectors.http.sleep", recorded.append)
    return recorded


@pytest.fixture
def cloud() -> Iterator[FakeConfluence]:
    fake = FakeConfluence("cloud", max_limit=2).start()
    populate(fake)
    yield fake
    fake.stop()


@pytest.fixture
def dc() -> Iterator[FakeConfluence]:
    fake = FakeConfluence("dc", max_limit=2).start()
    populate(fake)
    yield fake
    fake.stop()


class Tree:
    """The ids of the pages ``populate`` made."""

    home = runbooks = restart = rotate = oncall = legacy = incident = ""


def populate(fake: FakeConfluence) -> Tree:
    fake.add_space("OPS", "Operations")
    fake.add_space("SEC", "Security")
    t = Tree()
    t.home = fake.add_page("OPS", "Operations Home", "<p>Welcome to operations.</p>").id
    t.runbooks = fake.add_page("OPS", "Runbooks", "<p>All runbooks.</p>", parent=t.home).id
    t.restart = fake.add_page(
        "OPS", "Restart the payments API", RESTART_BODY, parent=t.runbooks, labels=("runbook",)
    ).id
    t.rotate = fake.add_page(
        "OPS", "Rotate TLS certificates", ROTATE_BODY, parent=t.runbooks, labels=("runbook",)
    ).id
    t.oncall = fake.add_page(
        "OPS",
        "On-call handbook",
        "<h1>Paging</h1><ul><li>Acknowledge within 5 minutes.</li><li>Escalate after 15.</li></ul>",
        parent=t.home,
    ).id
    t.legacy = fake.add_page("OPS", "Legacy notes", "<p>The old VPN is gone.</p>").id
    t.incident = fake.add_page(
        "SEC", "Incident response", "<h2>First hour</h2><p>Open a zz-sec-bridge call.</p>"
    ).id
    fake.tree = t  # type: ignore[attr-defined]
    return t


def tree(fake: FakeConfluence) -> Tree:
    return fake.tree  # type: ignore[attr-defined]


def cloud_block(fake: FakeConfluence, **extra: Any) -> dict[str, Any]:
    return {
        "name": "wiki",
        "type": "confluence",
        "base_url": fake.site,
        "space_keys": ["OPS"],
        "email": CLOUD_EMAIL,
        "api_token": CLOUD_API_TOKEN,
        "schedule": "1h",
        **extra,
    }


def dc_block(fake: FakeConfluence, **extra: Any) -> dict[str, Any]:
    return {
        "name": "dcwiki",
        "type": "confluence",
        "base_url": fake.site,
        "space_keys": ["OPS"],
        "token": DC_TOKEN,
        "schedule": "1h",
        **extra,
    }


def connector(block: dict[str, Any], workdir: Path) -> ConfluenceConnector:
    return ConfluenceConnector(ConfluenceConfig.model_validate(block), workdir)


def docs_by_id(c: ConfluenceConnector) -> dict[str, Any]:
    return {d.id: d for d in c.load_all()}


# -- configuration ---------------------------------------------------------------------------


def test_cloud_and_data_center_configs_validate_and_hide_secrets():
    cfg = ConfluenceConfig.model_validate(
        {
            "name": "wiki",
            "type": "confluence",
            "base_url": "https://acme.atlassian.net/",
            "space_keys": ["OPS", "~jdoe"],
            "email": "bot@acme.example",
            "api_token": "s3cret-cloud",
            "space_audiences": {"OPS": "sre"},
        }
    )
    assert cfg.base_url == "https://acme.atlassian.net/wiki"  # Cloud lives below /wiki
    assert "s3cret-cloud" not in repr(cfg) and "s3cret-cloud" not in str(cfg.model_dump())
    assert cfg.credentials == "email and api_token"
    dc = ConfluenceConfig.model_validate(
        {
            "name": "dc",
            "type": "confluence",
            "base_url": "https://confluence.acme.example/confluence/",
            "space_keys": ["OPS"],
            "token": "s3cret-pat",
        }
    )
    assert dc.base_url == "https://confluence.acme.example/confluence"
    assert "s3cret-pat" not in repr(dc) and dc.credentials == "token"


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({}, "set email + api_token (Confluence Cloud) or token"),
        ({"email": "a@b.c", "api_token": "x", "token": "y"}, "not both"),
        ({"email": "a@b.c"}, "needs both email and api_token"),
        ({"api_token": "x"}, "needs both email and api_token"),
        ({"token": "  "}, "is empty (is its environment variable set?)"),
    ],
)
def test_exactly_one_auth_style(auth: dict[str, str], message: str):
    block = {
        "name": "wiki",
        "type": "confluence",
        "base_url": "https://confluence.acme.example",
        "space_keys": ["OPS"],
        **auth,
    }
    with pytest.raises(ValidationError, match=re.escape(message)):
        ConfluenceConfig.model_validate(block)


def test_config_errors_name_connector_and_field_and_never_the_secret(tmp_path):
    block = {
        "name": "wiki",
        "type": "confluence",
        "base_url": "https://acme.atlassian.net/wiki",
        "space_keys": ["OPS"],
        "token": "${CONF_PAT}",
        "space_audiences": {"HR": "people"},
    }
    with pytest.raises(ConfigError) as e:
        parse_config(
            {"connectors": [block]}, base_dir=tmp_path, env={"CONF_PAT": "pat-zz-leak-check"}
        )
    msg = str(e.value)
    assert "connector 'wiki'" in msg
    assert "field 'token': Confluence Cloud (atlassian.net) takes email + api_token" in msg
    assert "field 'space_audiences': space(s) ['HR'] are not in space_keys" in msg
    assert "pat-zz-leak-check" not in msg

    with pytest.raises(ConfigError, match=r"field 'space_keys': List should have at least 1"):
        parse_config(
            {"connectors": [{**block, "space_keys": [], "space_audiences": {}}]},
            base_dir=tmp_path,
            env={"CONF_PAT": "x"},
        )


def test_secret_from_the_environment(tmp_path):
    block = {
        "name": "wiki",
        "type": "confluence",
        "base_url": "https://confluence.acme.example",
        "space_keys": ["OPS"],
        "token": "${CONF_PAT}",
    }
    cfg = parse_config({"connectors": [block]}, base_dir=tmp_path, env={"CONF_PAT": "pat-123"})
    [c] = cfg.connectors
    assert isinstance(c, ConfluenceConfig) and c.token is not None
    assert c.token.get_secret_value() == "pat-123"


# -- storage format ----------------------------------------------------------------------------


def test_storage_format_keeps_headings_code_tables_lists_and_link_text():
    md = storage_to_markdown(RESTART_BODY + ROTATE_BODY)
    assert "## Steps" in md and "## Owners" in md
    # The code block verbatim: CDATA content, indentation, and characters like < and ".
    assert (
        '```\nif [ "$(curl -s localhost:8080/health)" != "ok" ]; then\n'
        "    systemctl restart payments-api   # <- zz-restart-marker\nfi\n```"
    ) in md
    assert "bash" not in md  # macro parameters are settings, not content
    assert "| Team | Channel |" in md and "| Payments | #payments-oncall |" in md
    assert "1. Drain the node." in md and "2. Restart the service." in md
    assert "Warning Do not skip:" in md and "Rotate the intermediate first." in md
    assert "See Restart the payments API afterwards." in md


def test_storage_format_macros_and_tasks():
    xhtml = """
<ac:structured-macro ac:name="toc"><ac:parameter ac:name="maxLevel">2</ac:parameter>
</ac:structured-macro>
<ac:structured-macro ac:name="expand"><ac:parameter ac:name="title">Details</ac:parameter>
<ac:rich-text-body><ac:structured-macro ac:name="code"><ac:plain-text-body><![CDATA[x = 1]]>
</ac:plain-text-body></ac:structured-macro></ac:rich-text-body></ac:structured-macro>
<ac:task-list><ac:task><ac:task-id>1</ac:task-id><ac:task-status>complete</ac:task-status>
<ac:task-body>Back up the database</ac:task-body></ac:task>
<ac:task><ac:task-id>2</ac:task-id><ac:task-status>incomplete</ac:task-status>
<ac:task-body>Tell the team</ac:task-body></ac:task></ac:task-list>
<p>State: <ac:structured-macro ac:name="status"><ac:parameter ac:name="title">DONE</ac:parameter>
</ac:structured-macro> <ac:image><ri:attachment ri:filename="diagram.png" /></ac:image></p>
<p><ac:link><ri:page ri:content-title="Other" /><ac:plain-text-link-body><![CDATA[the other page]]>
</ac:plain-text-link-body></ac:link></p>
"""
    md = storage_to_markdown(xhtml)
    assert "maxLevel" not in md and "2" not in md.split("Details")[0]
    assert "Details:" in md and "```\nx = 1\n```" in md
    assert "- [x] Back up the database" in md and "- [ ] Tell the team" in md
    assert "State: DONE" in md and "diagram.png" not in md
    assert "the other page" in md


# -- reading -----------------------------------------------------------------------------------


def test_cloud_pages_with_title_path_link_audience_and_pagination(cloud, tmp_path):
    t = tree(cloud)
    c = connector(
        cloud_block(cloud, space_keys=["OPS", "SEC"], space_audiences={"SEC": "security"}),
        tmp_path,
    )
    assert isinstance(c, Connector)
    assert c.list_ids() == {t.home, t.runbooks, t.restart, t.rotate, t.oncall, t.legacy, t.incident}
    docs = docs_by_id(c)
    assert set(docs) == c.list_ids() and c.problems == []
    d = docs[t.restart]
    assert d.title == "Operations Home › Runbooks › Restart the payments API"
    assert d.url == f"{cloud.site}/spaces/OPS/pages/{t.restart}/Restart+the+payments+API"
    assert d.format == "markdown" and "zz-restart-marker" in d.text
    assert d.last_modified == datetime(2024, 1, 10, 9, 30, tzinfo=UTC)
    assert d.audience == "public" and docs[t.incident].audience == "security"
    assert d.metadata["space"] == "OPS" and d.metadata["page_title"] == "Restart the payments API"
    assert docs[t.legacy].title == "Legacy notes"
    # The server gives at most 2 results per request: the client followed _links.next,
    # which on Cloud carries a cursor.
    search = cloud.api_requests("/rest/api/content/search")
    assert search[0].query["cql"] == 'type = page AND space in ("OPS", "SEC")'
    assert len(search) == 2 * 4 and sum("cursor" in r.query for r in search) == 2 * 3
    [spaces] = cloud.api_requests("/api/v2/spaces")
    assert spaces.query["keys"] == "OPS,SEC"
    for r in cloud.requests:
        assert r.headers["User-Agent"].startswith("kbot/")
        assert r.headers["Authorization"].startswith("Basic ")


def test_the_chunker_uses_the_title_path_as_heading_path(cloud, tmp_path):
    t = tree(cloud)
    [doc] = [d for d in connector(cloud_block(cloud), tmp_path).load_all() if d.id == t.restart]
    chunks = Chunker(200, 0).split(doc)
    assert len(chunks) > 1
    assert all(c.heading_path[0] == doc.title for c in chunks)
    assert any(c.heading == f"{doc.title} › Owners" for c in chunks)


def test_labels_narrow_the_pages_with_cql_and_cloud_cursors(cloud, tmp_path):
    t = tree(cloud)
    cloud.add_page("OPS", "Tagged three", "<p>three</p>", labels=("runbook",))
    c = connector(cloud_block(cloud, labels=["runbook"]), tmp_path)
    assert len(c.list_ids()) == 3 and {t.restart, t.rotate} <= c.list_ids()
    assert len(list(c.load_all())) == 3
    search = cloud.api_requests("/rest/api/content/search")
    first = search[0].query["cql"]
    assert first == 'type = page AND space in ("OPS") AND label in ("runbook")'
    assert any("cursor" in r.query for r in search)  # Cloud pages a CQL search with a cursor


def test_data_center_bearer_token_dates_and_links(dc, tmp_path):
    t = tree(dc)
    docs = docs_by_id(connector(dc_block(dc), tmp_path))
    d = docs[t.rotate]
    # Data Center answers in its server's timezone (+02:00 here).
    assert d.last_modified == datetime(2024, 1, 10, 9, 30, tzinfo=UTC)
    assert d.url == f"{dc.site}/display/OPS/Rotate+TLS+certificates"
    assert dc.requests[0].path == "/rest/api/space/OPS"
    assert all(r.headers["Authorization"] == f"Bearer {DC_TOKEN}" for r in dc.requests)


def test_429_retry_after_is_honoured_and_capped(cloud, tmp_path, waits):
    cloud.fail(429, retry_after="7", path="/rest/api/content")
    c = connector(cloud_block(cloud, retry_max_wait_s=30), tmp_path)
    assert len(c.list_ids()) == 6
    assert waits == [7.0]
    cloud.fail(429, retry_after="120", path="/rest/api/content")
    assert len(connector(cloud_block(cloud, retry_max_wait_s=5), tmp_path).list_ids()) == 6
    assert waits == [7.0, 5.0]


def test_5xx_is_retried_with_backoff_then_fails_clearly(cloud, tmp_path, waits):
    cloud.fail(503, times=2)
    c = connector(cloud_block(cloud, backoff_s=0.5), tmp_path)
    assert len(c.list_ids()) == 6
    assert waits == [0.5, 1.0]
    cloud.down = 502
    with pytest.raises(ConnectorError) as e:
        connector(cloud_block(cloud, max_retries=2, backoff_s=0.5), tmp_path).list_ids()
    assert str(e.value) == (
        f"Confluence connector 'wiki': GET /wiki/api/v2/spaces at {cloud.site} failed "
        "after 3 attempt(s): HTTP 502"
    )


def test_a_request_that_times_out_is_retried_then_fails(cloud, tmp_path):
    cloud.fail(hang=True, times=10)
    c = connector(cloud_block(cloud, timeout_s=0.2, max_retries=1), tmp_path)
    with pytest.raises(ConnectorError, match=r"failed after 2 attempt\(s\): no answer within 0.2s"):
        c.list_ids()


def test_secrets_never_reach_logs_or_errors(cloud, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cloud.fail(503)
    assert len(connector(cloud_block(cloud), tmp_path).list_ids()) == 6
    with pytest.raises(ConnectorError) as e:
        connector(cloud_block(cloud, api_token="ATATT-wrong-zz"), tmp_path).list_ids()
    seen = caplog.text + str(e.value)
    assert "retrying" in caplog.text  # the logs were captured
    basic = base64.b64encode(f"{CLOUD_EMAIL}:{CLOUD_API_TOKEN}".encode()).decode()
    for secret in (CLOUD_API_TOKEN, "ATATT-wrong-zz", basic):
        assert secret not in seen


@pytest.mark.parametrize("flavor", ["cloud", "dc"])
def test_auth_failure_names_the_connector_and_what_to_check(flavor, tmp_path, request):
    fake = request.getfixturevalue(flavor)
    if flavor == "cloud":
        block = cloud_block(fake, api_token="ATATT-wrong-token-zz")
        check = "check email and api_token"
    else:
        block = dc_block(fake, token="wrong-pat-zz")
        check = "check token"
    with pytest.raises(ConnectorError) as e:
        connector(block, tmp_path).list_ids()
    msg = str(e.value)
    assert msg.startswith(f"Confluence connector {block['name']!r}: authentication failed")
    assert "HTTP 401" in msg and check in msg
    assert "wrong-token-zz" not in msg and "wrong-pat-zz" not in msg
    assert len(fake.requests) == 1  # a 401 is not retried


def test_forbidden_and_unknown_space_and_wrong_base_url(cloud, tmp_path):
    cloud.forbidden = True
    with pytest.raises(ConnectorError, match=r"access denied .* \(HTTP 403: Current user not"):
        connector(cloud_block(cloud), tmp_path).list_ids()
    cloud.forbidden = False
    with pytest.raises(ConnectorError, match="space 'NOPE' does not exist .* or the account"):
        connector(cloud_block(cloud, space_keys=["OPS", "NOPE"]), tmp_path).list_ids()
    # Cloud's API lives below /wiki; the site root answers HTML.
    with pytest.raises(ConnectorError, match=r"GET /api/v2/spaces .* answered HTTP 404; is base"):
        connector(cloud_block(cloud, base_url=cloud.origin), tmp_path).list_ids()


def test_next_links_are_followed_only_below_base_url():
    cfg = ConfluenceConfig.model_validate(
        {
            "name": "wiki",
            "type": "confluence",
            "base_url": "https://acme.atlassian.net",
            "space_keys": ["OPS"],
            "email": CLOUD_EMAIL,
            "api_token": CLOUD_API_TOKEN,
        }
    )
    api = confluence._Api(cfg)
    try:
        want = "https://acme.atlassian.net/wiki/rest/api/content/search?cursor=abc"
        assert api._next_url("/rest/api/content/search?cursor=abc") == want
        assert api._next_url("/wiki/rest/api/content/search?cursor=abc") == want
        assert api._next_url(want) == want
        with pytest.raises(ConnectorError, match="refusing to follow a next link outside"):
            api._next_url("https://collector.example/rest/api/content/search?cursor=abc")
    finally:
        api.close()


def test_malformed_pages_are_skipped_with_a_reason(cloud, tmp_path):
    t = tree(cloud)
    cloud.pages[t.rotate].override = {"body": {"_expandable": {"storage": ""}}}
    cloud.pages[t.legacy].override = {"version": {"number": 3, "when": "last Tuesday"}}
    c = connector(cloud_block(cloud), tmp_path)
    docs = docs_by_id(c)
    assert set(docs) == {t.home, t.runbooks, t.restart, t.oncall}
    reasons = {p.doc_id: p.reason for p in c.problems}
    assert reasons == {
        t.rotate: "no storage-format body (body.storage.value) in the API answer",
        t.legacy: "no readable version.when date in the API answer ('last Tuesday')",
    }


def test_changed_since_asks_cql_for_recent_edits(cloud, tmp_path):
    t = tree(cloud)
    c = connector(cloud_block(cloud), tmp_path)
    list(c.load_all())  # a complete read records where each page sits
    edited_at = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    cloud.edit(t.oncall, body="<p>Acknowledge within 2 minutes.</p>", when=edited_at)
    c = connector(cloud_block(cloud), tmp_path)
    got = list(c.changed_since(datetime(2025, 3, 1, 11, 0, tzinfo=UTC)))
    assert [d.id for d in got] == [t.oncall] and "2 minutes" in got[0].text
    [query] = [
        r.query["cql"]
        for r in cloud.api_requests("/rest/api/content/search")
        if "lastmodified" in r.query["cql"]
    ]
    # A day of margin: CQL reads dates in the account's timezone.
    assert query == 'type = page AND space in ("OPS") AND lastmodified >= "2025-02-28 11:00"'


# -- real syncs into Chroma -------------------------------------------------------------------


def stored(rt, doc_id: str | None = None) -> dict[str, Any]:
    where = {"doc_id": doc_id} if doc_id else None
    return rt.indexer.store.collection.get(where=where, include=["documents", "metadatas"])


def expected_ids(rt, name: str, tmp: Path) -> set[str]:
    """The chunk ids a from-scratch read of the source would produce now (own workdir, so
    the sync's state file is left alone)."""
    cfg = rt.config.connector(name)
    chunker = Chunker(rt.config.indexer.chunk_size, rt.config.indexer.chunk_overlap)
    return {c.id for d in build_connector(cfg, tmp).load_all() for c in chunker.split(d)}


def test_first_sync_then_edit_delete_and_moves_are_reflected_exactly(
    runtime_factory, tmp_path, cloud
):
    t = tree(cloud)
    block = cloud_block(cloud, space_keys=["OPS", "SEC"], space_audiences={"SEC": "security"})
    rt = runtime_factory(make_config(tmp_path, [block]))
    [first] = rt.indexer.sync()
    assert first.ok, first.error
    assert (first.added, first.updated, first.deleted, first.failed) == (7, 0, 0, 0)
    assert set(stored(rt)["ids"]) == expected_ids(rt, "wiki", tmp_path / "x1")
    got = stored(rt, t.restart)
    assert any("zz-restart-marker" in d for d in got["documents"])
    meta = got["metadatas"][0]
    assert meta["title"] == "Operations Home › Runbooks › Restart the payments API"
    assert meta["url"] == f"{cloud.site}/spaces/OPS/pages/{t.restart}/Restart+the+payments+API"
    assert meta["heading"].split("\x1f")[0] == meta["title"]
    assert {m["audience"] for m in stored(rt, t.incident)["metadatas"]} == {"security"}

    now = datetime.now(UTC)
    cloud.edit(t.oncall, body="<h1>Paging</h1><p>Acknowledge within zz-two minutes.</p>", when=now)
    del cloud.pages[t.legacy]
    cloud.move(t.rotate, parent=t.home)  # a move keeps the page's version and date
    cloud.edit(t.runbooks, title="Playbooks", when=now)  # renames the path of its child
    cloud.move(t.incident, parent=None, space="ARCHIVE")  # out of the configured spaces
    cloud.requests.clear()

    [second] = rt.indexer.sync()
    assert second.ok, second.error
    # Edited: oncall, runbooks; moved: rotate; new path: restart; deleted: legacy, incident.
    assert (second.added, second.updated, second.deleted, second.unchanged) == (0, 4, 2, 1)
    # An incremental sync: recent edits by CQL, moved pages by id, no full re-read.
    bodies = [
        r.query["cql"]
        for r in cloud.api_requests("/rest/api/content/search")
        if "body.storage" in r.query["expand"]
    ]
    assert "lastmodified >= " in bodies[0]
    assert any(q.endswith(f"id in ({t.restart}, {t.rotate})") for q in bodies)
    assert all("lastmodified" in q or "id in" in q for q in bodies)

    ids = set(stored(rt)["ids"])
    assert ids == expected_ids(rt, "wiki", tmp_path / "x2")
    assert not any(i.startswith((f"wiki:{t.legacy}:", f"wiki:{t.incident}:")) for i in ids)
    assert any("zz-two minutes" in d for d in stored(rt, t.oncall)["documents"])
    titles = {m["title"] for m in stored(rt, t.rotate)["metadatas"]}
    assert titles == {"Operations Home › Rotate TLS certificates"}
    titles = {m["title"] for m in stored(rt, t.restart)["metadatas"]}
    assert titles == {"Operations Home › Playbooks › Restart the payments API"}

    [third] = rt.indexer.sync()
    assert (third.added, third.updated, third.deleted, third.unchanged) == (0, 0, 0, 5)


def body_queries(fake: FakeConfluence) -> list[str]:
    """The CQL of every search that asked for page bodies."""
    return [
        r.query["cql"]
        for r in fake.api_requests("/rest/api/content/search")
        if "body.storage" in r.query.get("expand", "")
    ]


def test_a_new_page_is_fetched_alone_by_id(runtime_factory, tmp_path, cloud):
    rt = runtime_factory(make_config(tmp_path, [cloud_block(cloud)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == 6

    # Copied in from another space: an old last-modified date, so CQL's lastmodified misses it.
    new = cloud.add_page("OPS", "Imported page", "<p>Restart zz-imported.</p>").id
    cloud.requests.clear()
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert (second.added, second.unchanged) == (1, 6)
    # Recent edits (none), then the new page by id: no other page's body was asked for.
    queries = body_queries(cloud)
    assert len(queries) == 2 and "lastmodified >= " in queries[0]
    assert queries[1] == f'type = page AND space in ("OPS") AND id in ({new})'
    assert any("zz-imported" in d for d in stored(rt, new)["documents"])


def test_a_page_a_failed_sync_left_out_is_read_by_id(runtime_factory, tmp_path, cloud, monkeypatch):
    rt = runtime_factory(make_config(tmp_path, [cloud_block(cloud)]))
    assert rt.indexer.sync()[0].ok
    new = cloud.add_page("OPS", "Imported page", "<p>Restart zz-imported.</p>").id
    store = rt.indexer.store
    real_upsert = store.upsert

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    # The page is read (and its place in the tree recorded), then the write fails.
    monkeypatch.setattr(store, "upsert", full_disk)
    [failed] = rt.indexer.sync()
    assert not failed.ok and "No space left" in failed.error
    monkeypatch.setattr(store, "upsert", real_upsert)

    cloud.requests.clear()
    [res] = rt.indexer.sync()
    assert res.ok and (res.added, res.unchanged) == (1, 6)
    queries = body_queries(cloud)
    assert len(queries) == 2 and "lastmodified >= " in queries[0]
    assert queries[1] == f'type = page AND space in ("OPS") AND id in ({new})'
    assert any("zz-imported" in d for d in stored(rt, new)["documents"])


def test_load_reads_pages_by_id_within_the_configured_spaces(cloud, tmp_path):
    t = tree(cloud)
    extra = [cloud.add_page("OPS", f"Extra {i}", f"<p>Extra {i}.</p>").id for i in range(30)]
    cloud.pages[t.rotate].override = {"body": None}
    c = connector(cloud_block(cloud), tmp_path)
    # SEC is not configured; 999 does not exist; "x" is no page id at all.
    wanted = {*extra, t.restart, t.rotate, t.incident, "999", "x) OR (type = page"}
    docs = {d.id: d for d in c.load(wanted)}
    assert set(docs) == {*extra, t.restart}
    assert docs[t.restart].title == "Operations Home › Runbooks › Restart the payments API"
    assert [p.doc_id for p in c.problems] == [t.rotate]
    queries = list(dict.fromkeys(body_queries(cloud)))  # each one, without its next pages
    assert len(queries) == 2 and all(" AND id in (" in q for q in queries)  # 25 ids a query
    assert "(999, " in queries[0] and "x" not in "".join(queries)


def test_source_down_keeps_the_index_and_records_the_failure(runtime_factory, tmp_path, cloud):
    t = tree(cloud)
    rt = runtime_factory(make_config(tmp_path, [cloud_block(cloud, backoff_s=0)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == 6
    before = set(stored(rt)["ids"])

    cloud.down = 503
    [res] = rt.indexer.sync()
    assert not res.ok and "Confluence connector 'wiki'" in res.error and "HTTP 503" in res.error
    assert set(stored(rt)["ids"]) == before

    # Down half-way: the listing works, reading the edited page does not.
    cloud.down = None
    cloud.edit(t.restart, body="<p>zz-new-version</p>", when=datetime.now(UTC))
    cloud.fail(500, times=10, cql="lastmodified")
    [res] = rt.indexer.sync()
    assert not res.ok and "HTTP 500" in res.error
    assert set(stored(rt)["ids"]) == before
    assert any("zz-restart-marker" in d for d in stored(rt, t.restart)["documents"])

    cloud.fail(hang=True, times=50)
    rt.config.connectors[0].timeout_s = 0.2
    [res] = rt.indexer.sync()
    assert not res.ok and "no answer within 0.2s" in res.error
    assert set(stored(rt)["ids"]) == before
    with rt.db.session() as s:
        runs = list(s.scalars(select(SyncRun).order_by(SyncRun.id)))
    assert [r.status for r in runs] == ["ok", "failed", "failed", "failed"]
    assert "HTTP 503" in runs[1].error and "no answer within" in runs[3].error

    cloud.faults.clear()
    cloud.release.set()
    rt.config.connectors[0].timeout_s = 30
    [res] = rt.indexer.sync()
    assert res.ok and res.updated == 1
    assert any("zz-new-version" in d for d in stored(rt, t.restart)["documents"])


def test_auth_failure_in_a_sync_is_recorded_with_a_clear_message(runtime_factory, tmp_path, cloud):
    block = cloud_block(cloud, api_token="ATATT-revoked-zz")
    rt = runtime_factory(make_config(tmp_path, [block]))
    [res] = rt.indexer.sync()
    assert not res.ok
    assert res.error.startswith("Confluence connector 'wiki': authentication failed")
    assert "check email and api_token" in res.error and "revoked-zz" not in res.error
    with rt.db.session() as s:
        run = s.scalars(select(SyncRun)).one()
    assert run.status == "failed" and run.error == res.error


def test_malformed_pages_in_a_sync_are_recorded_and_retried(runtime_factory, tmp_path, cloud):
    t = tree(cloud)
    cloud.pages[t.rotate].override = {"body": None}
    rt = runtime_factory(make_config(tmp_path, [cloud_block(cloud)]))
    [res] = rt.indexer.sync()
    assert res.ok and (res.added, res.failed) == (5, 1)
    assert res.problems == [
        f"{t.rotate}: no storage-format body (body.storage.value) in the API answer"
    ]
    assert stored(rt, t.rotate)["ids"] == []
    # Still broken: reported again, not deleted, not counted unchanged.
    [res] = rt.indexer.sync()
    assert res.ok and res.failed == 1 and res.unchanged == 5
    # Fixed without a new version (a server-side repair): the page is retried and indexed.
    cloud.pages[t.rotate].override = None
    [res] = rt.indexer.sync()
    assert res.ok and (res.added, res.failed) == (1, 0)
    assert stored(rt, t.rotate)["ids"]


def test_pagination_and_429_in_a_sync(runtime_factory, tmp_path, dc, waits):
    for i in range(9):
        dc.add_page("OPS", f"Extra page {i}", f"<p>Extra content {i}.</p>")
    dc.fail(429, retry_after="3", path="/rest/api/content")
    rt = runtime_factory(make_config(tmp_path, [dc_block(dc)]))
    [res] = rt.indexer.sync()
    assert res.ok and res.added == 15
    assert waits == [3.0]
    starts = {r.query.get("start") for r in dc.api_requests("/rest/api/content")}
    assert {"2", "4", "14"} <= starts
    assert len({m["doc_id"] for m in stored(rt)["metadatas"]}) == 15


def test_a_space_mapped_to_an_audience_is_searched_only_for_that_audience(
    runtime_factory, tmp_path, cloud
):
    t = tree(cloud)
    block = cloud_block(cloud, space_keys=["OPS", "SEC"], space_audiences={"SEC": "security"})
    rt = runtime_factory(make_config(tmp_path, [block]))
    assert rt.indexer.sync()[0].ok
    question = "how do I open a zz-sec-bridge call in the first hour of an incident?"

    def found(*audiences: str) -> set[str]:
        hits = rt.answering.retriever.search(question, 5, frozenset(audiences))
        return {h.chunk.doc_id for h in hits}

    assert t.incident not in found("public")
    assert t.restart in found("public"), "the connector's other spaces stay public"
    assert t.incident in found("security")
    answer = rt.answering.ask(question)
    assert all(c.path != t.incident for c in answer.citations)
    assert "zz-sec-bridge" not in answer.text
