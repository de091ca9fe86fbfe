"""``/reports`` and ``/reports/trace/{id}`` on the real aiohttp app over real HTTP, with the
query log seeded through ``/api/ask`` and ``/api/feedback``: who gets in, what the pages show,
that user text stays text; and in a real headless Chromium, that the report loads, its charts
render and a 👎 row opens its trace. On SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest

from bot.runtime import Runtime
from bot.server import create_app
from config.models import ReportsConfig
from tests.bot.review.test_report import DISK_DOC, DISK_Q, ROTATE_Q, Seeded, database_url, seeded
from tests.bot.servers import serve

TOKEN = "tok-5d2b9c0e-reports-admin"
USER, PASSWORD = "lead", "pw-7e1a-reports-lead"


@dataclass
class Page:
    status: int
    headers: Message
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(
    url: str, headers: dict[str, str] | None = None, form: dict[str, str] | None = None
) -> Page:
    """One request, redirects not followed; an error status is a page to assert on."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=60) as r:
            return Page(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        with e:
            return Page(e.code, e.headers, e.read().decode())


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kbot(request, tmp_path_factory, embedder, llm) -> Iterator[Seeded]:
    folder = tmp_path_factory.mktemp(f"reports-web-{request.param}")
    reports = {"admin_token": TOKEN, "username": USER, "password": PASSWORD}
    with database_url(request.param, folder) as url, seeded(folder, url, llm, reports) as s:
        yield s


@contextmanager
def other_server(kbot: Seeded, **reports: Any) -> Iterator[str]:
    """kbot's app over the same database with another ``reports:`` config."""
    cfg = kbot.rt.config.model_copy(update={"reports": ReportsConfig(**reports)})
    rt = Runtime(cfg)
    try:
        with serve(create_app(rt)) as url:
            yield url
    finally:
        rt.close()


# -- who gets in ------------------------------------------------------------------------


def test_without_credentials_the_page_asks_for_them(kbot: Seeded) -> None:
    qid = kbot.asked["disk"]["query_id"]
    for path in ("reports", f"reports/trace/{qid}"):
        page = fetch(kbot.url + path)
        assert page.status == 401
        assert page.headers["WWW-Authenticate"].startswith('Basic realm="kbot reports"')
        assert '<form method="post" action="/reports/login">' in page.body
        assert "kbot report:" not in page.body and "no space" not in page.body


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer tok-5d2b9c0e-reports-admiN"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": f"Bearer {PASSWORD}"},
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, TOKEN),
        {"Authorization": "Basic !!!not-base64"},
        {"Cookie": "kbot_reports=" + "0" * 64},
        {"Cookie": f"kbot_reports={TOKEN}"},
    ],
    ids=[
        "wrong-token",
        "empty-bearer",
        "other-scheme",
        "password-as-token",
        "wrong-password",
        "wrong-user",
        "token-as-password",
        "garbage-basic",
        "forged-cookie",
        "token-as-cookie",
    ],
)
def test_wrong_credentials_are_401(kbot: Seeded, headers: dict[str, str]) -> None:
    page = fetch(kbot.url + "reports", headers)
    assert page.status == 401
    assert "kbot report:" not in page.body
    assert "set-cookie" not in {k.lower() for k in page.headers}


def test_a_wrong_token_in_the_address_is_401(kbot: Seeded) -> None:
    assert fetch(kbot.url + "reports?token=nope").status == 401
    assert fetch(kbot.url + "reports?format=json&token=" + TOKEN.upper()).status == 401


@pytest.mark.parametrize("how", ["bearer", "basic"])
def test_the_admin_token_or_basic_auth_opens_the_report(kbot: Seeded, how: str) -> None:
    page = fetch(kbot.url + "reports", BEARER if how == "bearer" else basic(USER, PASSWORD))
    assert page.status == 200
    assert page.headers.get_content_type() == "text/html"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.body.count("<svg") == 4
    assert "&lt;b&gt;no space&lt;/b&gt;" in page.body and "<b>no space" not in page.body
    for name in ("gap", "disk", "rotate again"):
        assert f'href="reports/trace/{kbot.asked[name]["query_id"]}"' in page.body
    assert f'href="reports/trace/{kbot.asked["rotate"]["query_id"]}"' not in page.body


def test_a_token_in_the_address_sets_a_cookie_that_opens_the_traces(kbot: Seeded) -> None:
    page = fetch(kbot.url + "reports?token=" + urllib.parse.quote(TOKEN))
    assert page.status == 200
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("kbot_reports=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/reports" in cookie
    assert TOKEN not in cookie and PASSWORD not in cookie
    value = cookie.split(";")[0]
    qid = kbot.asked["rotate again"]["query_id"]
    trace = fetch(kbot.url + f"reports/trace/{qid}", {"Cookie": value})
    assert trace.status == 200
    assert "outdated: step 2 moved" in trace.body


def test_the_login_form_sets_the_cookie(kbot: Seeded) -> None:
    page = fetch(kbot.url + "reports/login", form={"token": TOKEN})
    assert page.status == 303
    assert page.headers["Location"] == "/reports"
    value = page.headers["Set-Cookie"].split(";")[0]
    assert fetch(kbot.url + "reports", {"Cookie": value}).status == 200
    wrong = fetch(kbot.url + "reports/login", form={"token": "guess"})
    assert wrong.status == 401
    assert "That token is not the admin token." in wrong.body


def test_without_a_credential_in_the_config_the_pages_are_off(kbot: Seeded) -> None:
    with other_server(kbot) as url:
        qid = kbot.asked["disk"]["query_id"]
        for page in (
            fetch(url + "reports", BEARER),
            fetch(url + f"reports/trace/{qid}", BEARER),
            fetch(url + "reports/login", form={"token": TOKEN}),
        ):
            assert page.status == 404
            assert "set reports.admin_token" in page.body
            assert "reports.username and reports.password" in page.body


# -- what the pages show ----------------------------------------------------------------


def test_json_csv_and_markdown_downloads_and_periods(kbot: Seeded) -> None:
    from bot.review.render import from_csv

    data = json.loads(fetch(kbot.url + "reports?format=json", BEARER).body)
    assert (data["questions"], data["answered"], data["abstained"]) == (6, 4, 2)
    assert data["feedback"] == {"up": 3, "down": 3}
    assert data["period"]["days"] == 7
    csv_page = fetch(kbot.url + "reports?format=csv&since=30d", BEARER)
    assert csv_page.headers.get_content_type() == "text/csv"
    assert 'filename="kbot-report.csv"' in csv_page.headers["Content-Disposition"]
    rebuilt = from_csv(csv_page.body)
    assert rebuilt["period"]["days"] == 30
    assert rebuilt["downvoted"] == data["downvoted"]
    md = fetch(kbot.url + "reports?format=md", BEARER)
    assert md.headers.get_content_type() == "text/markdown" and md.body.startswith("# kbot report")
    for query, message in (
        ("since=yesterday", "is not a period"),
        ("format=pdf", "format must be"),
    ):
        bad = fetch(kbot.url + "reports?" + query, BEARER)
        assert bad.status == 400
        assert message in bad.body


def test_the_trace_page_shows_the_trace_with_user_text_escaped(kbot: Seeded) -> None:
    qid = kbot.asked["disk"]["query_id"]
    page = fetch(kbot.url + f"reports/trace/{qid}", BEARER)
    assert page.status == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    body = page.body
    assert "&lt;b&gt;no space&lt;/b&gt; left on device | what now?" in body
    assert "<b>" not in body
    assert "web in web by carol" in body
    assert "generated" in body and "gpt-4o-mini" in body and "cost" in body
    assert f"<td>runbooks</td><td>{DISK_DOC}</td>" in body
    assert "<h2>Prompt</h2>" in body and "Question: Build agent says &lt;b&gt;" in body
    # The generated answer keeps the extractive choice it was grounded on, source by source.
    assert "<h2>Passage choice</h2>" in body and "<td>[1]</td>" in body
    assert "down by carol: wrong runbook" in body
    for stage in ("retrieve", "generate", "total"):
        assert stage in body
    assert fetch(kbot.url + "reports/trace/" + "0" * 32, BEARER).status == 404


def test_with_redact_hash_the_trace_page_hides_the_question_and_users(kbot: Seeded) -> None:
    reports = {"admin_token": TOKEN, "redact": "hash"}
    with other_server(kbot, **reports) as url:
        qid = kbot.asked["rotate again"]["query_id"]
        body = fetch(url + f"reports/trace/{qid}", BEARER).body
        assert "<h1>Trace</h1>" in body
        assert ROTATE_Q not in body  # neither as the question nor inside the prompt
        assert "bob" not in body and "carol" not in body
        assert re.search(r"down by u:[0-9a-f]{10}: outdated: step 2 moved", body)
        report = fetch(url + "reports", BEARER).body
        assert ROTATE_Q not in report and "q:" in report


# -- in a browser -----------------------------------------------------------------------


@pytest.mark.browser
def test_in_chromium_the_report_loads_its_charts_render_and_a_downvote_opens_its_trace(
    kbot: Seeded, browser: Any
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    # A Content-Security-Policy violation (a style or image the page may not load) is a
    # console error.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(kbot.url + "reports?token=" + urllib.parse.quote(TOKEN))
        expect(page).to_have_title(re.compile(r"^kbot report \d{4}-\d{2}-\d{2} to "))
        charts = page.locator("figure svg")
        expect(charts).to_have_count(4)
        for i in range(4):
            box = charts.nth(i).bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 80, box
        # The bars are drawn: today's questions bar has a height on screen.
        heights = charts.first.locator("rect.bar").evaluate_all(
            "bars => bars.map(b => b.getBoundingClientRect().height)"
        )
        assert max(heights) > 10

        row = page.locator("tr.downvoted", has_text="wrong runbook")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(DISK_Q)  # the markup in the question is shown as text
        expect(row.locator("b")).to_have_count(0)
        row.get_by_role("link", name="trace").click()

        qid = kbot.asked["disk"]["query_id"]
        expect(page).to_have_url(kbot.url + f"reports/trace/{qid}")
        expect(page.get_by_role("heading", name="Trace")).to_be_visible()
        expect(page.locator(".question")).to_have_text(DISK_Q)
        expect(page.locator("main")).to_contain_text("down by carol: wrong runbook")
        page.get_by_role("link", name="← report").click()
        expect(page.locator("figure svg")).to_have_count(4)
    finally:
        context.close()
    assert problems == [], problems
