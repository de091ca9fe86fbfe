"""The mediawiki connector against a local wiki speaking the Action API's real JSON
(tests/connectors/fake_mediawiki.py), synced through the real indexer into a real Chroma."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from config import ConfigError
from connectors import Connector, build_connector
from connectors.mediawiki import USER_AGENT, MediaWikiConfig, wikitext_to_markdown
from db.models import SyncRun
from indexer.chunking import Chunker
from tests.conftest import make_config
from tests.connectors.fake_mediawiki import FakeWiki, Fault, serve_wiki

LONG_AGO = "2024-01-02T03:04:05Z"

FAILOVER = """\
The primary database fails over to the replica in the other zone.

== Before you start ==
* Check replication lag with <code>pg_stat_replication</code>.
* Tell the '''#ops''' channel.

== Steps ==
# Promote the replica:
<syntaxhighlight lang="bash">
patronictl failover --candidate db-2
</syntaxhighlight>
# Point [[Service discovery|Consul]] at the new primary.

{| class="wikitable"
! Host !! Role
|-
| db-1 || old primary
|-
| db-2 || new primary
|}
{{Runbook footer}}
[[Category:Runbooks]]
"""

ARTICLES = {
    "Database failover": FAILOVER,
    "Certificate renewal": "Certificates renew with cert-manager.\n\n== Manual renewal ==\n"
    "Run <code>cmctl renew web-tls</code> when the automatic renewal fails.",
    "Kafka consumer lag": "== Meaning ==\nConsumers fall behind producers.\n\n"
    "== Mitigation ==\nScale the consumer group to 12 replicas.",
    "Disk full": "== Meaning ==\nA node's root disk is over 90%.\n\n== Mitigation ==\n"
    "Prune images with <code>crictl rmi --prune</code>.",
    "On-call handbook": "The on-call engineer answers pages within 15 minutes.",
}


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits are recorded instead of slept, so backoff costs the tests no time."""
    recorded: list[float] = []
    monkeypatch.setattr("connectors.http.sleep", recorded.append)
    return recorded


@pytest.fixture
def wiki() -> Iterator[tuple[FakeWiki, str]]:
    w = FakeWiki()
    for title, text in ARTICLES.items():
        w.create(title, text, at=LONG_AGO)
    # Not documents: a redirect, a template and a page outside namespace 0.
    w.create("DB failover", "#REDIRECT [[Database failover]]", at=LONG_AGO)
    w.create("Template:Runbook footer", "Owned by SRE.", ns=10, at=LONG_AGO)
    w.create("Ops Wiki:About", "About this wiki.", ns=4, at=LONG_AGO)
    with serve_wiki(w) as api:
        yield w, api


def cfg(api: str, **extra) -> dict:
    return {
        "name": "wiki",
        "type": "mediawiki",
        "api_url": api,
        "schedule": "1h",
        "backoff_s": 0,
        "max_retries": 2,
        "timeout_s": 5,
        **extra,
    }


def stored(rt) -> dict:
    got = rt.indexer.store.collection.get(include=["documents", "metadatas"])
    return {
        i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    }


def expected_ids(rt) -> set[str]:
    """The chunk ids a from-scratch read of the wiki would produce."""
    conn = build_connector(rt.config.connector("wiki"), rt.config.storage.data_dir)
    chunker = Chunker(rt.config.indexer.chunk_size, rt.config.indexer.chunk_overlap)
    return {c.id for d in conn.load_all() for c in chunker.split(d)}


def content_requests(w: FakeWiki, since: int = 0) -> list[dict[str, str]]:
    return [r for r in w.requests[since:] if "revisions" in r.get("prop", "")]


def test_wikitext_becomes_markdown_that_keeps_its_structure():
    md = wikitext_to_markdown(FAILOVER)
    assert "## Before you start" in md and "## Steps" in md
    assert "- Check replication lag with `pg_stat_replication`." in md
    assert "**#ops**" in md
    assert "1. Promote the replica:" in md
    assert "```bash\npatronictl failover --candidate db-2\n```" in md
    assert "Point Consul at the new primary." in md  # the link's text, not its target
    assert "| db-2 | new primary |" in md
    assert "Runbook footer" not in md and "Category" not in md  # template and category dropped
    nested = wikitext_to_markdown("= Top =\n* a\n** b\n<!-- hidden -->\n<pre>x &lt; y</pre>")
    assert nested.splitlines()[:3] == ["# Top", "", "- a"]
    assert "  - b" in nested and "hidden" not in nested and "```\nx < y\n```" in nested


def test_config_is_validated_with_clear_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("WIKI_PASSWORD", "s3cret-bot-pass")
    ok = make_config(tmp_path, [cfg("https://wiki.example.com/w/api.php")])
    wc = ok.connector("wiki")
    assert isinstance(wc, MediaWikiConfig) and wc.namespaces == [0]
    creds = cfg(
        "https://wiki.example.com/w/api.php",
        username="Kbot@kbot",
        password="${WIKI_PASSWORD}",
        namespaces=[12, 0, 0],
    )
    wc = make_config(tmp_path, [creds]).connector("wiki")
    assert wc.namespaces == [0, 12]
    assert wc.password.get_secret_value() == "s3cret-bot-pass"
    assert "s3cret" not in repr(wc)

    bad = [
        ({"api_url": "wiki.example.com"}, "api_url"),
        ({"namespaces": [-1]}, "virtual namespaces"),
        ({"namespaces": []}, "namespaces"),
        ({"username": "Kbot@kbot"}, "set both username and password"),
        ({"api_token": "x"}, "unknown key"),
    ]
    for extra, message in bad:
        block = {**cfg("https://wiki.example.com/w/api.php"), **extra}
        with pytest.raises(ConfigError, match=message) as e:
            make_config(tmp_path, [block])
        assert "connector 'wiki'" in str(e.value)


def test_first_sync_indexes_every_article(runtime_factory, tmp_path, wiki):
    w, api = wiki
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    assert isinstance(build_connector(rt.config.connector("wiki"), tmp_path), Connector)
    [res] = rt.indexer.sync()
    assert res.ok, res.error
    assert (res.added, res.updated, res.deleted, res.failed) == (len(ARTICLES), 0, 0, 0)
    chunks = stored(rt)
    assert set(chunks) == expected_ids(rt)
    titles = {m["title"] for _, m in chunks.values()}
    assert titles == set(ARTICLES)  # no redirect, template or project page
    port = api.split(":")[2].split("/")[0]
    urls = {m["url"] for _, m in chunks.values()}
    assert f"http://127.0.0.1:{port}/wiki/Database_failover" in urls
    assert f"http://127.0.0.1:{port}/wiki/On-call_handbook" in urls
    failover = [d for d, m in chunks.values() if m["title"] == "Database failover"]
    assert any("patronictl failover --candidate db-2" in d for d in failover)
    assert w.user_agents == {USER_AGENT} and USER_AGENT.startswith("kbot/")


def test_edit_delete_and_move_between_syncs_are_reflected_exactly(runtime_factory, tmp_path, wiki):
    w, api = wiki
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == len(ARTICLES)

    edited = w.edit("Disk full", ARTICLES["Disk full"] + "\n\n== Escalation ==\nPage #zz-storage.")
    w.delete("On-call handbook")
    moved = w.move("Kafka consumer lag", "Kafka/Consumer lag")  # leaves a redirect behind
    seen = len(w.requests)
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    # Incremental: only the edited and the moved page were read again.
    asked = {
        v
        for r in content_requests(w, seen)
        for v in (r.get("pageids") or r.get("titles", "")).split("|")
    }
    assert asked == {str(edited.pageid), str(moved.pageid), "Kafka/Consumer lag"}
    assert any(r.get("list") == "recentchanges" for r in w.requests[seen:])
    n = len(ARTICLES)
    assert (second.added, second.updated, second.deleted, second.unchanged) == (0, 2, 1, n - 3)
    chunks = stored(rt)
    assert set(chunks) == expected_ids(rt)
    titles = {m["title"] for _, m in chunks.values()}
    assert titles == set(ARTICLES) - {"On-call handbook", "Kafka consumer lag"} | {
        "Kafka/Consumer lag"
    }
    moved_urls = {m["url"] for _, m in chunks.values() if m["doc_id"] == str(moved.pageid)}
    assert moved_urls and all(u.endswith("/wiki/Kafka/Consumer_lag") for u in moved_urls)
    assert any("#zz-storage" in d for d, m in chunks.values() if m["title"] == "Disk full")

    w.create("Runbook index", "== Runbooks ==\n* [[Database failover]]")
    [third] = rt.indexer.sync()
    assert third.ok and third.added == 1 and third.deleted == 0
    assert set(stored(rt)) == expected_ids(rt)


def test_a_new_page_recentchanges_missed_is_fetched_alone_by_id(runtime_factory, tmp_path, wiki):
    w, api = wiki
    broken = w.create("Hidden revision", "secret", texthidden=True, at=LONG_AGO)
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [first] = rt.indexer.sync()
    assert first.ok and (first.added, first.failed) == (len(ARTICLES), 1)

    # Imported with its history (Special:Import): recentchanges shows no new page.
    imported = w.create("Imported runbook", "== Steps ==\nRestart zz-imported.", at=LONG_AGO)
    seen = len(w.requests)
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert (second.added, second.unchanged, second.failed) == (1, len(ARTICLES), 1)
    # Only the pages the index lacks (the new one, and the one still failing), in one request.
    [fetch] = content_requests(w, seen)
    assert sorted(fetch["pageids"].split("|")) == sorted([str(imported.pageid), str(broken.pageid)])
    assert any(
        "zz-imported" in d for d, m in stored(rt).values() if m["title"] == "Imported runbook"
    )
    assert set(stored(rt)) == expected_ids(rt)


def test_load_reads_pages_by_id_in_batches(tmp_path, wiki):
    w, api = wiki
    extra = [w.create(f"Service {i}", f"Team {i} owns it.", at=LONG_AGO) for i in range(60)]
    gone = w.create("Gone soon", "Deleted before it is read.", at=LONG_AGO)
    redirect = w.by_title("DB failover")
    w.delete("Gone soon")
    conn = build_connector(make_config(tmp_path, [cfg(api)]).connector("wiki"), tmp_path)
    wanted = {str(p.pageid) for p in extra} | {str(gone.pageid), str(redirect.pageid), "x1"}
    seen = len(w.requests)
    docs = list(conn.load(wanted))
    assert {d.id for d in docs} == {str(p.pageid) for p in extra}
    assert conn.problems == []
    assert [len(r["pageids"].split("|")) for r in content_requests(w, seen)] == [50, 12]


def test_moving_a_page_out_of_the_namespaces_removes_it(tmp_path, wiki):
    w, api = wiki
    config = make_config(tmp_path, [cfg(api)]).connector("wiki")
    page = w.move("Disk full", "User:Ann/Disk full", new_ns=2, leave_redirect=False)
    conn = build_connector(config, tmp_path)
    assert str(page.pageid) not in conn.list_ids()
    assert list(conn.changed_since(datetime.now(UTC) - timedelta(minutes=1))) == []
    assert any(r.get("letype") == "move" for r in w.requests)


@pytest.mark.parametrize("outage", ["5xx", "timeout"])
def test_source_down_keeps_the_index_and_records_the_failure(
    runtime_factory, tmp_path, wiki, outage, waits
):
    w, api = wiki
    rt = runtime_factory(make_config(tmp_path, [cfg(api, timeout_s=0.3, max_retries=1)]))
    rt.indexer.sync()
    before = stored(rt)
    if outage == "5xx":
        w.faults.append(Fault("status", times=100, status=503))
    else:
        w.faults.append(Fault("hang", times=100))
    [res] = rt.indexer.sync()
    assert not res.ok
    assert "mediawiki connector 'wiki'" in res.error
    reason = "HTTP 503" if outage == "5xx" else "no answer within 0.3s"
    assert f"{reason} (2 attempts)" in res.error and "the wiki is down or unreachable" in res.error
    assert stored(rt) == before
    with rt.db.session() as s:
        last = s.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
        assert last.status == "failed" and reason in last.error
    assert waits == [0.0]  # one backoff between the two attempts (backoff_s: 0)


def test_auth_failures_name_the_connector_and_never_show_the_password(
    runtime_factory, tmp_path, wiki, monkeypatch, caplog
):
    w, api = wiki
    w.private = True
    w.accounts["Kbot@kbot"] = "right-pass-123"
    caplog.set_level(logging.DEBUG)

    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [anon] = rt.indexer.sync()
    assert not anon.ok
    assert "mediawiki connector 'wiki'" in anon.error and "readapidenied" in anon.error
    assert "set username and password" in anon.error

    monkeypatch.setenv("KBOT_TEST_WIKI_PASSWORD", "wrong-pass-456")
    creds = cfg(api, username="Kbot@kbot", password="${KBOT_TEST_WIKI_PASSWORD}")
    rt = runtime_factory(make_config(tmp_path / "b", [creds]))
    [wrong] = rt.indexer.sync()
    assert not wrong.ok
    assert "mediawiki connector 'wiki': login as 'Kbot@kbot' failed" in wrong.error
    assert "Incorrect username or password" in wrong.error
    assert "wrong-pass-456" not in wrong.error and "wrong-pass-456" not in caplog.text

    monkeypatch.setenv("KBOT_TEST_WIKI_PASSWORD", "right-pass-123")
    rt = runtime_factory(make_config(tmp_path / "c", [creds]))
    [good] = rt.indexer.sync()
    assert good.ok and good.added == len(ARTICLES)
    assert "right-pass-123" not in caplog.text

    w.faults.append(Fault("status", times=1, status=403))
    rt = runtime_factory(make_config(tmp_path / "d", [cfg(api)]))
    [forbidden] = rt.indexer.sync()
    assert "mediawiki connector 'wiki'" in forbidden.error
    assert "refused access (HTTP 403)" in forbidden.error


def test_an_address_that_is_not_the_api_gives_a_clear_error(runtime_factory, tmp_path, wiki):
    w, api = wiki
    w.faults.append(Fault("garbage"))
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [res] = rt.indexer.sync()
    assert not res.ok and "did not answer with API JSON (text/html)" in res.error
    rt = runtime_factory(make_config(tmp_path / "b", [cfg(api.replace("/w/api.php", "/wiki"))]))
    [res] = rt.indexer.sync()
    assert not res.ok and "mediawiki connector 'wiki': HTTP 404" in res.error


def test_malformed_pages_are_skipped_with_a_reason(runtime_factory, tmp_path, wiki):
    w, api = wiki
    w.create("Hidden revision", "secret", texthidden=True, at=LONG_AGO)
    w.create("Dashboard config", '{"panels": []}', contentmodel="json", at=LONG_AGO)
    w.create("Only a template", "{{Stub}}", at=LONG_AGO)
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [res] = rt.indexer.sync()
    assert res.ok, res.error
    assert res.added == len(ARTICLES) and res.failed == 3
    problems = "\n".join(res.problems)
    assert "'Hidden revision': its text is hidden" in problems
    assert "'Dashboard config': content model 'json' is not wikitext" in problems
    assert "'Only a template': the page has no text" in problems
    assert {m["title"] for _, m in stored(rt).values()} == set(ARTICLES)


def test_pagination_of_listings_content_and_recent_changes(runtime_factory, tmp_path, wiki):
    w, api = wiki
    w.max_limit = 2
    w.content_per_response = 2
    for i in range(4):
        w.create(f"Service {i}", f"== Owner ==\nTeam {i} owns service {i}.", at=LONG_AGO)
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == len(ARTICLES) + 4
    assert set(stored(rt)) == expected_ids(rt)
    assert sum("apcontinue" in r for r in w.requests) >= 4
    assert any("rvcontinue" in r for r in w.requests)

    for i in range(4):
        w.edit(f"Service {i}", f"== Owner ==\nTeam {i + 10} owns service {i} now.")
    seen = len(w.requests)
    [second] = rt.indexer.sync()
    assert second.ok and second.updated == 4
    assert any("rccontinue" in r for r in w.requests[seen:])
    docs = [d for d, m in stored(rt).values() if m["title"].startswith("Service")]
    assert sum("now." in d for d in docs) == 4


def test_rate_limits_and_maxlag_are_honoured(runtime_factory, tmp_path, wiki, waits):
    w, api = wiki
    w.faults += [
        Fault("status", status=429, headers={"Retry-After": "7"}),
        Fault("maxlag", match=lambda p: "revisions" in p.get("prop", "")),
    ]
    rt = runtime_factory(make_config(tmp_path, [cfg(api)]))
    [res] = rt.indexer.sync()
    assert res.ok and res.added == len(ARTICLES)
    assert waits == [7.0, 5.0]  # what Retry-After said, not the (zero) backoff

    w.faults.append(Fault("status", status=429, headers={"Retry-After": "600"}))
    rt = runtime_factory(make_config(tmp_path / "b", [cfg(api, retry_max_wait_s=60)]))
    [res] = rt.indexer.sync()
    assert not res.ok and "rate limited (HTTP 429)" in res.error
    assert "asked to wait 600s, more than retry_max_wait_s (60s)" in res.error
