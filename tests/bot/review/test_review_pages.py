"""``/reports/review``, ``/reports/curate/{id}`` and ``/reports/curations`` on the real
aiohttp app over real HTTP, the query log seeded through ``/api/ask`` and ``/api/feedback``:
who gets in (401), forged posts (403), curating from the report's rows, search, undo,
broken curations, audience isolation of pins, the queue gauge; and in a real headless
Chromium, the review flow from the queue to a pin, a new answer and an eval case. On SQLite
and on the real PostgreSQL server."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.review.evaluation import load_questions
from bot.review.render import render
from bot.review.report import build_report
from bot.server import create_app
from tests.bot.review.test_pages import BEARER, PASSWORD, TOKEN, USER, Page, basic, fetch
from tests.bot.review.test_review_queue import (
    CONNECTIONS_Q,
    MAILBOX_Q,
    PHISHING_DOC,
    ROTATE_DOC,
    VAULT_DOC,
    VAULT_Q,
    Kbot,
    kbot_over,
)
from tests.bot.servers import send, serve

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@dataclass
class Served(Kbot):
    url: str = ""
    folder: Path | None = None

    def api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        reply = send(req)
        assert reply.status == 200, reply.body
        return reply.json()

    def web_ask(self, question: str, user: str = "web-user") -> dict[str, Any]:
        return self.api("api/ask", {"question": question, "user": user})

    def web_vote(self, qid: str, vote: str, user: str, reason: str | None = None) -> None:
        self.api("api/feedback", {"query_id": qid, "vote": vote, "user": user, "reason": reason})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory, embedder) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp(f"review-pages-{request.param}")
    reports = {"admin_token": TOKEN, "username": USER, "password": PASSWORD}
    with kbot_over(request.param, folder, reports=reports) as k, serve(create_app(k.rt)) as url:
        yield Served(k.rt, k.kb, url, folder)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Session:
    """A browser-like client: keeps its cookies, follows no redirects."""

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        self.base = base
        self.headers = headers or {}
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPCookieProcessor(self.jar)
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> Page:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=self.headers)
        try:
            with self.opener.open(req, timeout=60) as r:
                return Page(r.status, r.headers, r.read().decode())
        except urllib.error.HTTPError as e:
            with e:
                return Page(e.code, e.headers, e.read().decode())

    def token(self, path: str) -> str:
        page = self.request(path)
        assert page.status == 200, page.body
        return CSRF.search(page.body).group(1)


def admin(site: Served) -> Session:
    s = Session(site.url)
    assert s.request("reports?token=" + urllib.parse.quote(TOKEN)).status == 200
    return s


def in_queue(site: Served) -> set[str]:
    return {q for i in site.queue.items() for q in i.query_ids}


# -- who gets in, and forged posts -------------------------------------------------------------


def test_without_credentials_every_page_and_action_is_401(site: Served) -> None:
    qid = site.web_ask("What colour is the office sourdough jar?")["query_id"]
    token = admin(site).token("reports/review")
    for path in (
        "reports/review",
        f"reports/review/{qid}/pick",
        f"reports/curate/{qid}",
        "reports/curations",
    ):
        assert fetch(site.url + path).status == 401, path
    form = {"csrf": token, "outcome": "dismiss", "connector": "runbooks", "path": ROTATE_DOC}
    for path in (
        f"reports/review/{qid}",
        f"reports/review/{qid}/pick",
        f"reports/curate/{qid}",
        "reports/curations/1/remove",
    ):
        for headers in ({}, basic(USER, "wrong"), {"Authorization": "Bearer nope"}):
            page = fetch(site.url + path, headers, form)
            assert page.status == 401, (path, headers)
    assert qid in in_queue(site)


def test_a_forged_post_is_403_and_changes_nothing(site: Served) -> None:
    qid = site.web_ask("Where is the sourdough starter kept?")["query_id"]
    me, other = admin(site), admin(site)
    mine, theirs = me.token("reports/review"), other.token("reports/review")
    assert mine != theirs  # per browser
    for form in (
        {"outcome": "dismiss"},
        {"outcome": "dismiss", "csrf": ""},
        {"outcome": "dismiss", "csrf": "0" * 64},
        {"outcome": "dismiss", "csrf": theirs},  # another browser's token
    ):
        page = me.request(f"reports/review/{qid}", form)
        assert page.status == 403, form
        assert "CSRF token is missing or wrong" in page.body
    # Credentials in a header do not replace the token (a browser sends basic auth by itself).
    for headers in (BEARER, basic(USER, PASSWORD)):
        assert fetch(site.url + f"reports/review/{qid}", headers, {"outcome": "gap"}).status == 403
    assert qid in in_queue(site)
    page = me.request(f"reports/review/{qid}", {"outcome": "dismiss", "csrf": mine})
    assert page.status == 303 and page.headers["Location"] == "/reports/review?done=dismissed"
    assert qid not in in_queue(site)
    again = me.request(f"reports/review/{qid}", {"outcome": "gap", "csrf": mine})
    assert again.status == 409 and "already reviewed: dismissed by reports admin" in again.body


def test_basic_auth_reviewers_are_named_in_what_they_do(site: Served) -> None:
    qid = site.web_ask("Can I bring my sourdough starter to the office fridge?")["query_id"]
    s = Session(site.url, basic(USER, PASSWORD))
    token = s.token("reports/review")
    assert s.request(f"reports/review/{qid}", {"outcome": "gap", "csrf": token}).status == 303
    with site.rt.db.session() as db:
        from db.models import Review

        assert db.get(Review, qid).reviewer == USER


# -- the report's rows, search, pin, undo ---------------------------------------------------


def test_downvoted_and_content_gap_rows_link_to_curate_them(site: Served) -> None:
    down = site.web_ask("How do I rotate the queue password?", "rex")
    site.web_vote(down["query_id"], "down", "rex", "outdated")
    gap = site.web_ask("Which sourdough flour does the canteen buy?", "rae")
    assert gap["abstained"]
    body = fetch(site.url + "reports", BEARER).body
    assert f'<a href="/reports/curate/{down["query_id"]}">curate</a>' in body
    assert f'<a href="/reports/curate/{gap["query_id"]}">curate</a>' in body
    assert re.search(r'<a href="/reports/review">Review queue \(\d+\)</a>', body)
    # The downloadable HTML report has no such links: nothing to post to.
    static = render(build_report(site.rt.db, site.rt.config), "html")
    assert "/reports/curate/" not in static and "<th>curate</th>" not in static

    page = fetch(site.url + f"reports/curate/{down['query_id']}", BEARER).body
    assert "How do I rotate the queue password?" in page
    # What the answer cited can be suppressed from there.
    assert f'name="path" value="{ROTATE_DOC}"' in page and 'value="suppress"' in page


def test_search_pin_from_the_report_undo_and_the_answer_is_restored(site: Served) -> None:
    before = site.web_ask(CONNECTIONS_Q)
    assert before["abstained"]
    s = admin(site)
    page = s.request(f"reports/curate/{before['query_id']}?q=queue+credentials")
    assert page.status == 200
    assert f'name="path" value="{ROTATE_DOC}"' in page.body  # found by its title
    token = CSRF.search(page.body).group(1)
    form = {"csrf": token, "action": "pin", "connector": "runbooks", "path": ROTATE_DOC}
    done = s.request(f"reports/curate/{before['query_id']}", form)
    assert done.status == 303 and done.headers["Location"] == "/reports/curations?done=pin"
    [pin] = [c for c in site.rt.curations.list() if c.query_id == before["query_id"]]
    listing = s.request("reports/curations?done=pin").body
    assert "Pinned." in listing and f'action="/reports/curations/{pin.id}/remove"' in listing
    pinned = site.web_ask(CONNECTIONS_Q)
    assert not pinned["abstained"] and pinned["citations"][0]["path"] == ROTATE_DOC
    trace = fetch(site.url + f"reports/trace/{pinned['query_id']}", BEARER).body
    assert "<h2>Feedback and curations</h2>" in trace
    assert f"pin #{pin.id} of runbooks:{ROTATE_DOC} applied" in trace

    forged = s.request(f"reports/curations/{pin.id}/remove", {"csrf": "f" * 64})
    assert forged.status == 403 and site.rt.curations.get(pin.id).active
    undo = s.request(f"reports/curations/{pin.id}/remove", {"csrf": token})
    assert undo.status == 303 and not site.rt.curations.get(pin.id).active
    after = site.web_ask(CONNECTIONS_Q)
    assert after["abstained"] and after["answer"] == before["answer"]
    assert f'data-curation-id="{pin.id}"' not in s.request("reports/curations").body
    assert "removed by reports admin" in s.request("reports/curations?all=1").body


def test_a_broken_curation_is_shown_as_broken(site: Served) -> None:
    page = site.kb / "ops" / "retired.md"
    page.write_text("# Retired billing runbook\n\nRun `billctl retire` to retire billing.\n")
    assert all(r.ok for r in site.rt.indexer.sync())
    question = "How do I retire billing?"
    c = site.rt.curations.add("pin", question, "runbooks", "ops/retired.md", "lead")
    try:
        page.unlink()
        assert all(r.ok for r in site.rt.indexer.sync())
        body = fetch(site.url + "reports/curations", BEARER).body
        row = re.search(
            rf'<tr class="curation broken-row" data-curation-id="{c.id}">.*?</tr>', body, re.S
        )
        assert row and '<span class="broken">broken</span>' in row.group(0)
        answer = site.web_ask(question)
        assert "ops/retired.md" not in [x["path"] for x in answer["citations"]]
    finally:
        site.rt.curations.remove(c.id, "lead")


def test_admins_find_restricted_documents_but_a_pin_to_one_stays_in_its_audience(
    site: Served,
) -> None:
    public = site.web_ask(VAULT_Q, "pia")
    s = admin(site)
    page = s.request(f"reports/curate/{public['query_id']}?q=unseal+the+vault").body
    row = re.search(r'<tr class="result">(?:(?!</tr>).)*vault-break-glass\.md.*?</tr>', page, re.S)
    assert row and "<td>sre</td>" in row.group(0)
    token = CSRF.search(page).group(1)
    form = {"csrf": token, "action": "pin", "connector": "vault", "path": VAULT_DOC}
    assert s.request(f"reports/curate/{public['query_id']}", form).status == 303
    [pin] = [c for c in site.rt.curations.list() if c.query_id == public["query_id"]]
    try:
        again = site.web_ask(VAULT_Q, "pia")  # the web chat asks as public
        assert "vault" not in {c["connector"] for c in again["citations"]}
        assert "vault operator unseal" not in again["answer"]
        sre = site.ask(VAULT_Q, "sam", frozenset({"sre"}))
        assert sre.citations[0].path == VAULT_DOC
    finally:
        site.rt.curations.remove(pin.id, "lead")


def test_metrics_count_the_queue(site: Served) -> None:
    site.web_ask("Who feeds the office sourdough starter at weekends?")
    n = site.queue.count()
    body = fetch(site.url + "metrics").body
    assert re.search(rf"^kbot_review_queue {n}(\.0)?$", body, re.M), body[-2000:]


# -- in a browser -----------------------------------------------------------------------


def write_cli_config(site: Served) -> Path:
    """A config file for `kbot` over the site's database (export reads only the database)."""
    path = site.folder / "kbot.yaml"
    url = site.rt.config.storage.database_url
    path.write_text(
        f"storage:\n  data_dir: {json.dumps(str(site.folder / 'cli-data'))}\n"
        f"  database_url: {json.dumps(url)}\nconnectors: []\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.browser
def test_in_chromium_a_reviewer_picks_a_document_and_it_is_pinned_and_exported(
    site: Served, browser: Any
) -> None:
    from playwright.sync_api import expect

    asked = site.web_ask(MAILBOX_Q, "una")
    qid = asked["query_id"]
    assert asked["abstained"]
    assert [c["path"] for c in asked["citations"]][:1] != [PHISHING_DOC]
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(site.url + "reports?token=" + urllib.parse.quote(TOKEN))
        page.get_by_role("link", name=re.compile(r"^Review queue \(\d+\)$")).click()
        expect(page.get_by_role("heading", name=re.compile(r"^Review queue"))).to_be_visible()
        row = page.locator(f'tr.queued[data-query-id="{qid}"]')
        expect(row).to_contain_text(MAILBOX_Q)
        expect(row).to_contain_text("abstained")
        row.get_by_role("link", name="Pick a document").click()

        expect(page.locator(".question")).to_have_text(MAILBOX_Q)
        page.get_by_role("searchbox", name="Title or text").fill("phishing")
        page.get_by_role("button", name="Search").click()
        result = page.locator("tr.result", has_text=PHISHING_DOC)
        expect(result).to_have_count(1)
        result.get_by_role("button", name="Pick").click()

        expect(page).to_have_url(site.url + "reports/review?done=pinned")
        expect(page.get_by_role("status")).to_contain_text("Pinned")
        expect(page.locator(f'tr.queued[data-query-id="{qid}"]')).to_have_count(0)
        page.get_by_role("link", name="Curations").click()
        pin_row = page.locator("tr.curation", has_text=MAILBOX_Q)
        expect(pin_row).to_have_count(1)
        expect(pin_row).to_contain_text("pin")
        expect(pin_row).to_contain_text("Reporting a phishing email")
        expect(pin_row.get_by_role("button", name="Undo")).to_be_visible()
    finally:
        context.close()
    assert problems == [], problems

    # A new ask of the question is answered from the picked document first.
    again = site.web_ask(MAILBOX_Q, "vic")
    assert not again["abstained"] and again["citations"][0]["path"] == PHISHING_DOC
    # And `kbot feedback export --to-eval` writes it as a labeled eval case.
    out = site.folder / "cases.jsonl"
    result = CliRunner().invoke(
        cli, ["--config", str(write_cli_config(site)), "feedback", "export", "--to-eval", str(out)]
    )
    assert result.exit_code == 0, result.output
    cases = {c["question"]: c for c in map(json.loads, out.read_text().splitlines())}
    case = cases[MAILBOX_Q]
    assert case["relevant"] == [PHISHING_DOC] and case["kind"] == "lookup"
    assert case["review"]["outcome"] == "pinned" and case["review"]["query_id"] == qid
    labeled = site.folder / "labeled.jsonl"
    labeled.write_text(json.dumps(case) + "\n")
    [q] = load_questions(labeled)
    assert q.relevant == (PHISHING_DOC,)
    for c in site.rt.curations.list():
        site.rt.curations.remove(c.id, "lead")
