"""The web connector against a real HTTP docs site on 127.0.0.1 (tests/connectors/fake_site.py),
alone and through real syncs into a real Chroma index.

Waits (throttle, retry backoff, Retry-After) go through the connector's clock seam: they are
recorded and advance a fake clock instead of sleeping, so the tests can assert how long the
connector chose to wait without waiting. Timeouts are real (a fraction of a second).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from config import ConfigError
from connectors import build_connector
from connectors.base import ConnectorError
from connectors.http import USER_AGENT, retry_after_seconds
from connectors.web import (
    WebConfig,
    WebConnector,
    extract_page,
    normalize_url,
    parse_sitemap,
)
from db.models import SyncRun
from tests.conftest import make_config
from tests.connectors.fake_site import FakeSite, serve

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """The connector's clock: ``sleep`` records the wait and moves time on at once."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            self.t += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr("connectors.web.fetching._clock", c.now)
    monkeypatch.setattr("connectors.web.fetching._sleep", c.sleep)
    monkeypatch.setattr("connectors.http.sleep", c.sleep)
    return c


@pytest.fixture
def site() -> Iterator[FakeSite]:
    s = FakeSite()
    with serve(s):
        yield s


def runbook(topic: str, extra: str = "") -> str:
    """A page body with a heading structure, a list and a code block."""
    return f"""<h1>{topic}</h1>
<p>This runbook explains how to handle {topic.lower()} in production.</p>
<h2>Diagnosis</h2>
<ul><li>Check the {topic.lower()} dashboard.</li><li>Read the service logs.</li></ul>
<h2>Mitigation</h2>
<pre><code>kubectl rollout restart deploy/{topic.lower().replace(" ", "-")}</code></pre>
{extra}"""


TOPICS = ["Disk full", "Certificate expiry", "Queue backlog", "DNS failure", "Memory leak"]


def add_runbooks(site: FakeSite, n: int = 5, prefix: str = "/docs/") -> list[str]:
    paths = []
    for i, topic in enumerate(TOPICS[:n]):
        path = f"{prefix}{topic.lower().replace(' ', '-')}.html"
        site.page(path, topic, runbook(topic), last_modified=T0 + timedelta(days=i))
        paths.append(path)
    return paths


def web(site: FakeSite, name: str = "docs", **extra) -> dict:
    block = {"name": name, "type": "web", "schedule": "1h", "delay_s": 0}
    if "start_urls" not in extra:
        block["sitemap_url"] = site.url("/sitemap.xml")
    return {**block, **extra}


def connector(site: FakeSite, workdir: Path, **extra) -> WebConnector:
    cfg = WebConfig.model_validate(web(site, **extra))
    return WebConnector(cfg, workdir)


def indexed(rt, name: str = "docs") -> dict[str, str]:
    """doc id -> all of its chunks' text, from the Chroma collection itself."""
    got = rt.indexer.store.collection.get(
        where={"connector": name}, include=["metadatas", "documents"]
    )
    out: dict[str, str] = {}
    for meta, text in zip(got["metadatas"], got["documents"], strict=True):
        out[meta["doc_id"]] = out.get(meta["doc_id"], "") + "\n" + text
    return out


# ---------------------------------------------------------------- config


def test_config_needs_a_sitemap_or_start_urls(tmp_path):
    with pytest.raises(ConfigError, match="connector 'docs'.*either sitemap_url or start_urls"):
        make_config(tmp_path, [{"name": "docs", "type": "web"}])
    both = {
        "name": "docs",
        "type": "web",
        "sitemap_url": "https://d.example/sitemap.xml",
        "start_urls": ["https://d.example/"],
    }
    with pytest.raises(ConfigError, match="one of them, not both"):
        make_config(tmp_path, [both])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sitemap_url": "ftp://d.example/s.xml"}, "sitemap_url.*absolute http"),
        ({"sitemap_url": "https://d.example/s.xml", "max_depth": 2}, "start_urls crawls only"),
        (
            {
                "start_urls": ["https://d.example/blog/"],
                "allowed_prefix": "https://d.example/docs/",
            },
            "outside allowed_prefix",
        ),
        ({"start_urls": ["/docs/"]}, r"start_urls.*item 0.*absolute"),
        (
            {"sitemap_url": "https://d.example/s.xml", "headers": {"Bad Name": "x"}},
            "not a valid HTTP header name",
        ),
        ({"sitemap_url": "https://d.example/s.xml", "concurency": 2}, "did you mean 'concurrency'"),
    ],
)
def test_config_errors_name_the_field(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, [{"name": "docs", "type": "web", **extra}])


def test_config_defaults_and_secret_headers(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCS_TOKEN", "s3cret-token-value")
    cfg = make_config(
        tmp_path,
        [
            {
                "name": "docs",
                "type": "web",
                "start_urls": ["https://Docs.Example.com:443/handbook/intro.html#top"],
                "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"},
            }
        ],
    )
    [c] = cfg.connectors
    assert isinstance(c, WebConfig)
    assert c.start_urls == ["https://docs.example.com/handbook/intro.html"]
    assert c.scope == "https://docs.example.com/handbook/"
    assert "s3cret" not in repr(c) and "s3cret" not in str(c.model_dump())
    assert c.headers["Authorization"].get_secret_value() == "Bearer s3cret-token-value"


def test_normalize_url():
    assert normalize_url("HTTP://A.example:80/x?q=1#f") == "http://a.example/x?q=1"
    assert normalize_url("https://user:pw@a.example") == "https://a.example/"
    assert normalize_url("../b.html", "https://a.example/docs/x/a.html") == (
        "https://a.example/docs/b.html"
    )
    assert normalize_url("mailto:x@a.example") is None
    assert normalize_url("https://a.example:99999/") is None


def test_retry_after_accepts_seconds_and_dates():
    assert retry_after_seconds("7") == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= (retry_after_seconds(later) or 0) <= 91
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    # The forms the other HTTP clients met: fractions, nonsense below zero, past dates.
    assert retry_after_seconds(" 1.5 ") == 1.5 and retry_after_seconds("-3") == 0.0
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(past) == 0.0 and retry_after_seconds("  ") is None


# ---------------------------------------------------------------- extraction


def test_extract_keeps_the_main_content_and_its_structure():
    page = """<html><head><title>Rotate keys | Acme Docs</title>
    <meta name="robots" content="index, follow"><script>var tracking = 1;</script></head>
    <body><header>Acme banner</header>
    <nav><a href="/docs/other.html">Other page</a> <a href="mailto:x@y">mail</a></nav>
    <div class="layout"><div role="navigation">Breadcrumbs here</div>
      <div role="main">
        <h1>Rotating API keys</h1>
        <p>Keys expire every <b>90 days</b>.</p>
        <h2>Steps</h2>
        <ol><li>Create a key.</li><li>Deploy it.</li></ol>
        <h3>Commands</h3>
        <pre><code class="language-sh">vault write secret/api key=@new.key
vault read secret/api</code></pre>
        <table><tr><th>Env</th><th>Owner</th></tr><tr><td>prod</td><td>SRE</td></tr></table>
        <div hidden>Hidden text</div><span aria-hidden="true">Icon text</span>
        <p>See <a href="../ops/dns.html#records">DNS</a>.</p>
      </div>
      <aside>Related: sidebar text</aside>
    </div>
    <footer>Footer text</footer><style>.x{}</style></body></html>"""
    got = extract_page(page, "https://d.example/docs/keys/rotate.html")
    assert got.title == "Rotating API keys"
    assert got.text.startswith("# Rotating API keys")
    assert "## Steps" in got.text and "### Commands" in got.text
    assert "1. Create a key.\n2. Deploy it." in got.text
    assert "```\nvault write secret/api key=@new.key\nvault read secret/api\n```" in got.text
    assert "| Env | Owner |" in got.text and "| prod | SRE |" in got.text
    for chrome in ("banner", "Other page", "Breadcrumbs", "sidebar", "Footer", "tracking"):
        assert chrome not in got.text
    assert "Hidden text" not in got.text and "Icon text" not in got.text
    # Links come from the whole page, navigation included, without fragments.
    assert got.links == ["https://d.example/docs/other.html", "https://d.example/docs/ops/dns.html"]
    assert not got.noindex and not got.nofollow


def test_extract_falls_back_to_body_and_title_and_reads_meta_robots():
    page = """<html><head><title>Plain page</title><meta name="robots" content="noindex,nofollow">
    </head><body><header>Site header</header><p>Only a paragraph.</p><a href="x.html">x</a>
    <footer>foot</footer></body></html>"""
    got = extract_page(page, "https://d.example/p.html")
    assert got.title == "Plain page"
    assert got.text == "Only a paragraph.\n\nx"
    assert got.noindex and got.nofollow and got.links == []
    # Inside <article>, a <header> holds the title: content, not chrome.
    art = extract_page("<article><header><h1>T</h1></header><p>b</p></article>", "https://d.e/")
    assert art.title == "T" and art.text.startswith("# T")


def test_parse_sitemap_plain_gzip_and_index():
    xml = (
        b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<url><loc>https://d.example/a.html</loc><lastmod>2024-01-02</lastmod></url>"
        b"<url><loc> https://d.example/b.html#x </loc></url></urlset>"
    )
    expected = (
        "urlset",
        [("https://d.example/a.html", "2024-01-02"), ("https://d.example/b.html", None)],
    )
    assert parse_sitemap(xml, "https://d.example/sitemap.xml") == expected
    assert parse_sitemap(gzip.compress(xml), "https://d.example/sitemap.xml") == expected
    index = b'<sitemapindex xmlns="x"><sitemap><loc>/s1.xml</loc></sitemap></sitemapindex>'
    assert parse_sitemap(index, "https://d.example/") == (
        "sitemapindex",
        [("https://d.example/s1.xml", None)],
    )
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><urlset>&a;</urlset>'
    with pytest.raises(ValueError, match="DTD"):
        parse_sitemap(bomb, "https://d.example/")
    with pytest.raises(ValueError, match="not a sitemap"):
        parse_sitemap(b"<html><body>oops</body></html>", "https://d.example/")


# ---------------------------------------------------------------- the connector on its own


def test_robots_txt_and_user_agent(site, tmp_path):
    add_runbooks(site, 3)
    site.page("/docs/private/secret.html", "Secret", "<h1>Secret</h1><p>Do not index.</p>")
    site.robots = "User-agent: *\nDisallow: /docs/private/\n"
    c = connector(site, tmp_path)
    ids = c.list_ids()
    assert site.url("/docs/private/secret.html") not in ids and len(ids) == 3
    assert site.requests_for("/docs/private/secret.html") == []
    assert site.hits and all(h.headers["user-agent"] == USER_AGENT for h in site.hits)
    assert USER_AGENT.startswith("kbot/")


def test_robots_txt_can_single_out_kbot(site, tmp_path):
    add_runbooks(site, 2)
    site.robots = "User-agent: kbot\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    assert connector(site, tmp_path).list_ids() == set()
    site.robots = "User-agent: kbot\nDisallow: /\n"
    assert len(connector(site, tmp_path, respect_robots_txt=False).list_ids()) == 2


def test_crawl_follows_links_within_prefix_depth_and_page_limit(site, tmp_path):
    site.page(
        "/docs/index.html",
        "Index",
        "<h1>Index</h1><p>Start here.</p>"
        '<a href="a.html">A</a> <a href="/blog/post.html">Blog</a> '
        '<a href="https://elsewhere.example/x.html">Elsewhere</a> <a href="logo.png">logo</a>',
    )
    site.page("/docs/a.html", "A", '<h1>A</h1><p>Depth one.</p><a href="b.html">B</a>')
    site.page("/docs/b.html", "B", '<h1>B</h1><p>Depth two.</p><a href="c.html">C</a>')
    site.page("/docs/c.html", "C", "<h1>C</h1><p>Depth three.</p>")
    site.page("/blog/post.html", "Post", "<h1>Post</h1><p>Out of scope.</p>")
    start = {"start_urls": [site.url("/docs/index.html")], "allowed_prefix": site.url("/docs/")}

    deep = connector(site, tmp_path / "1", **start, max_depth=2)
    assert deep.list_ids() == {site.url(f"/docs/{p}.html") for p in ("index", "a", "b")}
    assert site.requests_for("/blog/post.html") == [] and site.requests_for("/docs/logo.png") == []
    assert site.requests_for("/docs/c.html") == []

    # Requests count, a 404 too: the index, then /docs/ (the layout's "Home" link) and a.html.
    site.hits.clear()
    capped = connector(site, tmp_path / "2", **start, max_pages=3)
    assert capped.list_ids() == {site.url("/docs/index.html"), site.url("/docs/a.html")}
    assert site.requests_for("/docs/b.html") == []

    docs = {d.id: d for d in connector(site, tmp_path / "3", **start).load_all()}
    assert set(docs) == {site.url(f"/docs/{p}.html") for p in ("index", "a", "b", "c")}
    assert docs[site.url("/docs/c.html")].title == "C"
    assert docs[site.url("/docs/c.html")].url == site.url("/docs/c.html")


def test_a_noindex_start_page_is_followed_but_not_indexed(site, tmp_path):
    add_runbooks(site, 2)
    links = '<a href="disk-full.html">Disk</a> <a href="certificate-expiry.html">Cert</a>'
    robots = '<meta name="robots" content="noindex, follow">'
    site.page("/docs/index.html", "Index", f"<h1>All runbooks</h1>{links}", head=robots)
    c = connector(site, tmp_path, start_urls=[site.url("/docs/index.html")])
    assert c.list_ids() == {
        site.url("/docs/disk-full.html"),
        site.url("/docs/certificate-expiry.html"),
    }
    assert c.problems == []

    site.robots_status = 501  # RFC 9309: a server error on robots.txt means "do not crawl"
    with pytest.raises(ConnectorError, match="robots.txt answered 501.*left as it was"):
        connector(site, tmp_path, start_urls=[site.url("/docs/index.html")]).list_ids()


def test_resync_uses_conditional_requests(site, tmp_path):
    paths = add_runbooks(site, 3)
    site.pages[paths[2]].etag = False  # only Last-Modified for this one
    first = connector(site, tmp_path)
    docs1 = {d.id: d for d in first.load_all()}
    assert len(docs1) == 3
    assert json.loads((tmp_path / "web" / "docs.json").read_text())["pages"]
    started = datetime.now(UTC)
    site.hits.clear()

    second = connector(site, tmp_path)
    assert len(second.list_ids()) == 3
    hits = {h.path: h for h in site.hits}
    assert all(hits[p].status == 304 for p in paths)
    assert hits[paths[0]].headers["if-none-match"] == site.pages[paths[0]].tag
    assert "if-none-match" not in hits[paths[2]].headers
    assert hits[paths[2]].headers["if-modified-since"]
    # Nothing changed since the first run, yet a full read still has every page's text.
    assert list(second.changed_since(started)) == []
    assert {d.id: d.text for d in second.load_all()} == {k: d.text for k, d in docs1.items()}

    site.page(paths[1], "Certificate expiry", runbook("Certificate expiry", "<p>Renew early.</p>"))
    third = connector(site, tmp_path)
    changed = list(third.changed_since(started))
    assert [d.id for d in changed] == [site.url(paths[1])]
    assert "Renew early." in changed[0].text


def test_unchanged_sitemap_lastmod_is_not_requested_again(site, tmp_path):
    paths = add_runbooks(site, 3)
    for p in paths:
        site.pages[p].lastmod = "2024-03-01"
    assert len(list(connector(site, tmp_path).load_all())) == 3
    site.hits.clear()
    edited = runbook("Disk full", "<p>New step.</p>")
    site.page(paths[0], "Disk full", edited, lastmod="2024-03-05T10:00:00+00:00")
    c = connector(site, tmp_path)
    docs = {d.id: d for d in c.load_all()}
    assert [h.path for h in site.hits if h.path.startswith("/docs/")] == [paths[0]]
    assert "New step." in docs[site.url(paths[0])].text
    assert docs[site.url(paths[0])].last_modified == datetime(2024, 3, 5, 10, tzinfo=UTC)
    assert docs[site.url(paths[1])].last_modified == datetime(2024, 3, 1, tzinfo=UTC)

    site.hits.clear()
    connector(site, tmp_path, trust_lastmod=False).list_ids()
    assert sorted(h.path for h in site.hits if h.path.startswith("/docs/")) == sorted(paths)


def test_load_reads_the_asked_pages_from_the_walk(site, tmp_path):
    paths = add_runbooks(site, 4)
    site.statuses[paths[2]] = 500
    site.statuses[paths[3]] = 404
    c = connector(site, tmp_path, max_retries=0)
    assert c.list_ids() == {site.url(p) for p in paths[:3]}  # the failing page is kept
    requests = len(site.hits)
    wanted = {site.url(p) for p in paths} | {site.url("/docs/never-listed.html")}
    docs = {d.id: d for d in c.load(wanted)}
    # The walk already read every page: no request, and only pages that can be read.
    assert set(docs) == {site.url(paths[0]), site.url(paths[1])}
    assert "kubectl rollout restart deploy/disk-full" in docs[site.url(paths[0])].text
    assert len(site.hits) == requests
    assert [p.doc_id for p in c.problems] == [site.url(paths[2])]
    assert list(c.load({site.url(paths[1])})) == [docs[site.url(paths[1])]]


def test_denied_pages_and_redirects_out_of_scope_are_removed_with_a_reason(site, tmp_path):
    paths = add_runbooks(site, 4)
    site.statuses[paths[0]] = 403
    site.redirects[paths[1]] = (302, "/login?next=/docs/")  # a sign-in wall
    site.redirects[paths[2]] = (301, paths[2])  # a loop
    c = connector(site, tmp_path, allowed_prefix=site.url("/docs/"))
    assert c.list_ids() == {site.url(paths[3])}
    reasons = {p.doc_id: p.reason for p in c.problems}
    assert reasons == {
        site.url(paths[0]): "403 Forbidden; removed from the index",
        site.url(paths[1]): f"redirects to {site.url('/login?next=/docs/')}, outside "
        "allowed_prefix; removed from the index",
        site.url(paths[2]): f"redirect loop through {site.url(paths[2])}; removed from the index",
    }
    assert site.requests_for("/login") == []


def test_5xx_is_retried_with_exponential_backoff(site, tmp_path, clock):
    paths = add_runbooks(site, 2)
    site.failures[paths[0]] = [500, 502, 503]
    c = connector(site, tmp_path, backoff_s=0.5)
    docs = {d.id for d in c.load_all()}
    assert docs == {site.url(p) for p in paths} and c.problems == []
    assert [h.status for h in site.requests_for(paths[0])] == [500, 502, 503, 200]
    assert clock.waits == [0.5, 1.0, 2.0]


def test_timeouts_are_retried_then_the_page_is_kept(site, tmp_path):
    paths = add_runbooks(site, 2)
    c = connector(site, tmp_path)
    assert len(list(c.load_all())) == 2
    site.hanging.add(paths[1])
    c = connector(site, tmp_path, timeout_s=0.2, max_retries=1)
    assert c.list_ids() == {site.url(p) for p in paths}
    assert [d.id for d in c.load_all()] == [site.url(paths[0])]
    [problem] = c.problems
    assert problem.doc_id == site.url(paths[1])
    assert "timed out after 0.2s (2 tries)" in problem.reason and "kept" in problem.reason


def test_a_site_failing_page_after_page_is_down(site, tmp_path):
    paths = add_runbooks(site, 5)
    connector(site, tmp_path).list_ids()
    for p in paths:
        site.statuses[p] = 503
    c = connector(site, tmp_path, max_retries=0, max_consecutive_failures=3)
    with pytest.raises(ConnectorError, match="3 pages in a row could not be read.*looks down"):
        c.list_ids()
    # It stopped there: the last pages were never requested.
    assert len([h for h in site.hits if h.status == 503]) <= 3 + c.config.concurrency


def test_concurrency_requests_run_in_parallel(site, tmp_path):
    add_runbooks(site, 3)
    site.barrier = threading.Barrier(3)  # each page waits until three are in flight
    c = connector(site, tmp_path / "a", concurrency=3)
    assert len(list(c.load_all())) == 3 and c.problems == []
    assert site.max_in_flight == 3

    site.barrier = None
    site.max_in_flight = 0
    assert len(list(connector(site, tmp_path / "b", concurrency=1).load_all())) == 3
    assert site.max_in_flight == 1


def test_delay_spaces_out_requests(site, tmp_path, clock):
    add_runbooks(site, 3)
    list(connector(site, tmp_path, delay_s=2.0, concurrency=1).load_all())
    # sitemap, robots.txt, three pages: every request after the first waited its turn.
    assert clock.waits == [2.0] * 4


def test_robots_crawl_delay_slows_the_crawl(site, tmp_path, clock):
    add_runbooks(site, 2)
    site.robots = "User-agent: *\nCrawl-delay: 5\n"
    list(connector(site, tmp_path, concurrency=1).load_all())
    assert clock.waits == [5.0, 5.0]  # the two pages after robots.txt


def test_load_all_yields_before_the_walk_ends_and_writes_no_state(site, tmp_path):
    """What `kbot connectors test` relies on: one page costs about one page."""
    add_runbooks(site, 5)
    c = connector(site, tmp_path, concurrency=1)
    docs = c.load_all()
    first = next(docs)
    docs.close()
    assert first.id == site.url("/docs/certificate-expiry.html")
    assert first.title == "Certificate expiry" and first.format == "markdown"
    assert len([h for h in site.hits if h.path.startswith("/docs/")]) <= 2
    assert not (tmp_path / "web").exists()


def test_headers_go_to_the_site_only(site, tmp_path, monkeypatch, caplog):
    """A redirect to another origin must not carry the configured token along."""
    add_runbooks(site, 1)
    other = FakeSite()
    with serve(other):
        other.sitemap_body = site.sitemap_xml()
        site.auth = "Bearer t0ken-value"
        site.redirects["/sitemap.xml"] = (302, other.url("/sitemap.xml"))
        caplog.set_level(logging.DEBUG)
        c = connector(site, tmp_path, headers={"Authorization": "Bearer t0ken-value"})
        assert [d.title for d in c.load_all()] == ["Disk full"]
        assert other.hits and all("authorization" not in h.headers for h in other.hits)
        assert all(h.headers.get("authorization") == "Bearer t0ken-value" for h in site.hits)
    assert "t0ken" not in caplog.text


# ---------------------------------------------------------------- real syncs into Chroma


def test_first_sync_indexes_pages_with_their_headings(runtime_factory, tmp_path, site):
    paths = add_runbooks(site, 5)
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [res] = rt.indexer.sync()
    assert res.ok, res.error
    assert (res.added, res.updated, res.deleted, res.failed) == (5, 0, 0, 0)
    got = rt.indexer.store.collection.get(include=["metadatas", "documents"])
    assert {m["doc_id"] for m in got["metadatas"]} == {site.url(p) for p in paths}
    assert all(m["url"] == m["doc_id"] for m in got["metadatas"])
    titles = {m["title"] for m in got["metadatas"]}
    assert titles == set(TOPICS)
    text = "\n".join(got["documents"])
    assert "kubectl rollout restart deploy/disk-full" in text and "## Diagnosis" in text
    for chrome in ("Site banner", "table of contents", "Footer text", "tracking"):
        assert chrome not in text
    # Heading-aware chunking saw the page's sections.
    assert any(m["heading"].startswith("Disk full") for m in got["metadatas"])
    hits = rt.indexer.store.collection.get(where={"doc_id": site.url(paths[0])})
    assert hits["ids"]


def test_edit_delete_and_move_between_syncs_are_reflected_exactly(runtime_factory, tmp_path, site):
    paths = add_runbooks(site, 5)
    disk, cert, queue, dns, memory = (site.url(p) for p in paths)
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == 5

    site.page(
        paths[0], "Disk full", runbook("Disk full", "<h2>Escalation</h2><p>Page #zz-storage.</p>")
    )
    site.statuses[paths[1]] = 404  # deleted, though the sitemap still lists it
    site.statuses[paths[2]] = 410  # gone for good
    # Moved: the old URL redirects, and the sitemap lists the new one.
    site.pages["/docs/network/dns-failure.html"] = site.pages.pop(paths[3])
    site.redirects[paths[3]] = (301, "/docs/network/dns-failure.html")
    site.listed = [paths[0], paths[1], paths[2], "/docs/network/dns-failure.html", paths[4]]
    site.page("/docs/new-page.html", "Load balancer", runbook("Load balancer"))
    site.listed.append("/docs/new-page.html")

    [second] = rt.indexer.sync()
    assert second.ok, second.error
    moved = site.url("/docs/network/dns-failure.html")
    new = site.url("/docs/new-page.html")
    assert (second.added, second.updated, second.deleted, second.unchanged) == (2, 1, 3, 1)
    docs = indexed(rt)
    assert set(docs) == {disk, moved, memory, new}
    assert "#zz-storage" in docs[disk]
    assert "kubectl rollout restart deploy/dns-failure" in docs[moved]

    # A move found through the old URL (a sitemap, or links, not updated yet) is the same.
    site.pages["/docs/mem/memory-leak.html"] = site.pages.pop(paths[4])
    site.redirects[paths[4]] = (308, "/docs/mem/memory-leak.html")
    [third] = rt.indexer.sync()
    assert third.ok and (third.added, third.deleted) == (1, 1)
    assert set(indexed(rt)) == {disk, moved, site.url("/docs/mem/memory-leak.html"), new}
    state = json.loads((tmp_path / "data" / "web" / "docs.json").read_text())
    assert state["aliases"][memory] == site.url("/docs/mem/memory-leak.html")
    assert state["pages"][site.url("/docs/mem/memory-leak.html")]["redirected_from"] == [memory]


def test_a_new_page_is_the_only_page_fetched(runtime_factory, tmp_path, site):
    paths = add_runbooks(site, 5)
    for p in paths:
        site.pages[p].lastmod = "2024-03-01"
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == 5

    site.page(
        "/docs/new-page.html", "Load balancer", runbook("Load balancer"), lastmod="2024-03-09"
    )
    site.hits.clear()
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert (second.added, second.unchanged) == (1, 5)
    assert [h.path for h in site.hits if h.path.startswith("/docs/")] == ["/docs/new-page.html"]
    assert "deploy/load-balancer" in indexed(rt)[site.url("/docs/new-page.html")]


def test_crawl_sync_reflects_moves_and_deletions(runtime_factory, tmp_path, site):
    add_runbooks(site, 3)
    links = "".join(
        f'<li><a href="{p}">{t}</a></li>'
        for p, t in [
            ("disk-full.html", "Disk"),
            ("certificate-expiry.html", "Cert"),
            ("queue-backlog.html", "Queue"),
        ]
    )
    site.page(
        "/docs/index.html", "Runbooks", f"<h1>Runbooks</h1><p>All runbooks.</p><ul>{links}</ul>"
    )
    crawl = {"start_urls": [site.url("/docs/index.html")], "allowed_prefix": site.url("/docs/")}
    rt = runtime_factory(make_config(tmp_path, [web(site, **crawl)]))
    [first] = rt.indexer.sync()
    assert first.ok and first.added == 4

    site.pages["/docs/pki/certificates.html"] = site.pages.pop("/docs/certificate-expiry.html")
    site.redirects["/docs/certificate-expiry.html"] = (301, "/docs/pki/certificates.html")
    del site.pages["/docs/queue-backlog.html"]  # the index still links to it: a 404
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert set(indexed(rt)) == {
        site.url("/docs/index.html"),
        site.url("/docs/disk-full.html"),
        site.url("/docs/pki/certificates.html"),
    }
    assert (second.added, second.deleted) == (1, 2)


def test_source_down_keeps_the_index_and_records_the_failure(runtime_factory, tmp_path, site):
    add_runbooks(site, 5)
    rt = runtime_factory(make_config(tmp_path, [web(site, timeout_s=0.2, max_retries=1)]))
    [ok] = rt.indexer.sync()
    assert ok.ok
    before = indexed(rt)

    site.sitemap_status = 503
    [res] = rt.indexer.sync()
    assert not res.ok
    assert "web connector 'docs'" in res.error and "503" in res.error
    assert "left as it was" in res.error
    assert indexed(rt) == before

    site.sitemap_status = 200
    site.down = True  # robots.txt and every page too
    [res] = rt.indexer.sync()
    assert not res.ok and "unreachable" in res.error and indexed(rt) == before

    site.down = False
    site.hanging.add("/sitemap.xml")
    [res] = rt.indexer.sync()
    assert not res.ok and "timed out" in res.error and indexed(rt) == before
    with rt.db.session() as s:
        runs = s.scalars(select(SyncRun).order_by(SyncRun.id)).all()
    assert [r.status for r in runs] == ["ok", "failed", "failed", "failed"]
    assert "timed out" in runs[-1].error


def test_a_failing_page_keeps_its_old_version(runtime_factory, tmp_path, site):
    paths = add_runbooks(site, 3)
    rt = runtime_factory(make_config(tmp_path, [web(site, max_retries=2)]))
    rt.indexer.sync()
    old = indexed(rt)[site.url(paths[1])]

    site.page(paths[0], "Disk full", runbook("Disk full", "<p>Edited while the other failed.</p>"))
    site.page(paths[1], "Certificate expiry", runbook("Certificate expiry", "<p>Unseen edit.</p>"))
    site.statuses[paths[1]] = 500
    [res] = rt.indexer.sync()
    assert res.ok, res.error
    assert (res.updated, res.failed, res.deleted, res.unchanged) == (1, 1, 0, 1)
    [problem] = res.problems
    assert site.url(paths[1]) in problem and "500" in problem and "kept" in problem
    docs = indexed(rt)
    assert docs[site.url(paths[1])] == old and "Edited while" in docs[site.url(paths[0])]

    del site.statuses[paths[1]]  # back: the edit arrives
    [res] = rt.indexer.sync()
    assert res.ok and res.updated == 1 and "Unseen edit." in indexed(rt)[site.url(paths[1])]


def test_auth_failure_names_the_connector(runtime_factory, tmp_path, site, monkeypatch):
    add_runbooks(site, 2)
    site.auth = "Bearer right-token"
    monkeypatch.setenv("DOCS_TOKEN", "wrong-token")
    block = web(site, headers={"Authorization": "Bearer ${DOCS_TOKEN}"})
    rt = runtime_factory(make_config(tmp_path, [block]))
    [res] = rt.indexer.sync()
    assert not res.ok
    assert "web connector 'docs'" in res.error and "401" in res.error
    assert "credentials" in res.error and "wrong-token" not in res.error
    rt.close()

    monkeypatch.setenv("DOCS_TOKEN", "right-token")
    rt = runtime_factory(make_config(tmp_path, [block]))
    [res] = rt.indexer.sync()
    assert res.ok and res.added == 2

    # A crawl without any credentials: the start URL says so.
    crawl = connector(site, tmp_path / "crawl", start_urls=[site.url("/docs/disk-full.html")])
    with pytest.raises(ConnectorError) as e:
        crawl.list_ids()
    message = str(e.value)
    assert message.startswith("web connector 'docs': start URL http://127.0.0.1:")
    assert "401 Unauthorized: the site needs credentials. Set the connector's `headers`" in message


def test_malformed_pages_are_skipped_with_a_reason(runtime_factory, tmp_path, site):
    add_runbooks(site, 2)
    site.raw("/docs/binary.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    site.raw("/docs/latin1.html", "<h1>Caf\xe9</h1><p>Cr\xe8me</p>".encode("latin-1"))
    site.page("/docs/empty.html", "Empty", "")
    site.raw("/docs/manual.pdf", b"%PDF-1.4 ...", "application/pdf")
    site.raw("/docs/notes.txt", b"Plain text notes about the pager rota.", "text/plain")
    site.page(
        "/docs/draft.html", "Draft", "<p>Draft.</p>", head='<meta name="robots" content="noindex">'
    )
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [res] = rt.indexer.sync()
    assert res.ok, res.error
    reasons = {p.split(": ", 1)[0].rsplit("/", 1)[-1]: p for p in res.problems}
    assert set(reasons) == {"binary.html", "latin1.html", "empty.html"}
    assert "binary" in reasons["binary.html"]
    assert "not valid utf-8 text" in reasons["latin1.html"]
    assert "no text" in reasons["empty.html"]
    assert res.failed == 3
    docs = indexed(rt)
    assert site.url("/docs/notes.txt") in docs and "pager rota" in docs[site.url("/docs/notes.txt")]
    assert site.url("/docs/manual.pdf") not in docs and site.url("/docs/draft.html") not in docs
    assert res.added == 3


def test_sitemap_index_pages_through_every_child_sitemap(runtime_factory, tmp_path, site):
    for i in range(12):
        site.page(
            f"/docs/p{i:02}.html", f"Page {i}", f"<h1>Page {i}</h1><p>Service s{i} runbook.</p>"
        )
    site.sitemap_parts = 3
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [res] = rt.indexer.sync()
    assert res.ok and res.added == 12
    assert {h.path for h in site.hits if h.path.startswith("/sitemap")} == {
        "/sitemap.xml",
        "/sitemap-1.xml",
        "/sitemap-2.xml",
        "/sitemap-3.xml",
    }
    assert len(indexed(rt)) == 12


def test_429_is_honoured_with_retry_after(runtime_factory, tmp_path, site, clock):
    paths = add_runbooks(site, 3)
    site.rate_limits[paths[1]] = ["7"]
    site.rate_limits["/sitemap.xml"] = ["3"]
    rt = runtime_factory(make_config(tmp_path, [web(site)]))
    [res] = rt.indexer.sync()
    assert res.ok and res.added == 3 and res.failed == 0
    assert [h.status for h in site.requests_for(paths[1])] == [429, 200]
    assert [h.status for h in site.requests_for("/sitemap.xml")] == [429, 200]
    assert sorted(clock.waits) == [3.0, 7.0]

    # A Retry-After beyond retry_max_wait_s is capped; still limited after every retry,
    # the page keeps its indexed version.
    clock.waits.clear()
    site.rate_limits[paths[2]] = ["3600"] * 3
    rt.close()
    rt = runtime_factory(make_config(tmp_path, [web(site, max_retries=2, retry_max_wait_s=30)]))
    [res] = rt.indexer.sync()
    assert res.ok and res.failed == 1 and "429" in res.problems[0]
    assert clock.waits == [30.0, 30.0]
    assert site.url(paths[2]) in indexed(rt)


def test_build_connector_uses_the_data_dir_for_state(tmp_path, site):
    add_runbooks(site, 1)
    cfg = make_config(tmp_path, [web(site)])
    c = build_connector(cfg.connectors[0], cfg.storage.data_dir)
    assert isinstance(c, WebConnector)
    c.list_ids()
    assert (cfg.storage.data_dir / "web" / "docs.json").is_file()
