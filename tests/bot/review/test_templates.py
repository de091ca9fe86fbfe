"""The review pages' templates: user text with markup in it stays text on the real
``/reports`` page, trace page and error page (real HTTP to the real aiohttp app) and in the
HTML report; every template renders a seeded report with nothing undefined; and every
table's header and cells follow its columns in ``bot.review.tables``."""

from __future__ import annotations

import copy
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from jinja2 import StrictUndefined, UndefinedError

from bot.review import tables
from bot.review.pages import DOWNLOADS, PERIODS, trace_html
from bot.review.render import ENV, render, render_template, report_context
from bot.review.report import Redactor, build_report
from bot.review.tables import Table
from bot.review.trace import trace
from db.models import utcnow
from tests.bot.review.test_pages import fetch
from tests.bot.review.test_report import Seeded, seeded

TOKEN = "tok-31c9-templates-admin"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL_Q = '<script>alert(1)</script> "quotes" & ampersands: how do I rotate the queue password?'
EVIL_REASON = 'wrong <img src=x onerror=alert(1)> & "stale"'
EVIL_USER = "<b>mallory</b> & co"


@pytest.fixture(scope="module")
def kbot(tmp_path_factory, embedder, llm) -> Iterator[Seeded]:
    """The seeded kbot, plus a question, a 👎 reason and a user id that carry markup."""
    folder = tmp_path_factory.mktemp("templates")
    with seeded(folder, f"sqlite:///{folder / 'kbot.db'}", llm, {"admin_token": TOKEN}) as s:
        s.ask("evil", EVIL_Q, EVIL_USER)
        s.vote("evil", "down", EVIL_USER, EVIL_REASON)
        yield s


# -- reading HTML back ------------------------------------------------------------------


@dataclass
class Cell:
    classes: str
    text: str = ""


@dataclass
class HtmlTable:
    headers: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)


class _Reader(HTMLParser):
    """A page's text, its links, and its tables (header texts, body cells)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.tables: list[HtmlTable] = []
        self._head = False
        self._row: list[Cell] = []
        self._cell: Cell | None = None
        self._link: list[str] | None = None
        self._href = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(HtmlTable())
        elif tag == "thead":
            self._head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = Cell(dict(attrs).get("class") or "")
        elif tag == "a":
            self._href, self._link = dict(attrs).get("href") or "", []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._head = False
        elif tag in ("th", "td") and self._cell is not None:
            self._row.append(Cell(self._cell.classes, self._cell.text.strip()))
            self._cell = None
        elif tag == "tr":
            table = self.tables[-1]
            if self._head:
                table.headers = [c.text for c in self._row]
            else:
                table.rows.append(self._row)
        elif tag == "a" and self._link is not None:
            self.links.append((self._href, "".join(self._link)))
            self._link = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.text += data
        if self._link is not None:
            self._link.append(data)


def read(page: str) -> _Reader:
    r = _Reader()
    r.feed(page)
    r.close()
    return r


def text_of(page: str) -> str:
    return "".join(read(page).text)


def assert_shown_as_text(page: str, *texts: str) -> None:
    """Each of ``texts`` is in the page's text, and none of their markup is in its source."""
    shown = text_of(page)
    for t in texts:
        assert t in shown, t
    for raw in ("<script", "<img", "<b>mallory", '"quotes" &', '& "stale"', "& co"):
        assert raw not in page, raw


# -- user text stays text ---------------------------------------------------------------


def test_markup_in_a_question_reason_and_user_is_text_on_the_reports_page(kbot: Seeded) -> None:
    page = fetch(kbot.url + "reports", BEARER)
    assert page.status == 200
    assert_shown_as_text(page.body, EVIL_Q, EVIL_REASON, EVIL_USER)
    qid = kbot.asked["evil"]["query_id"]
    assert f'href="reports/trace/{qid}"' in page.body


def test_markup_in_a_question_reason_and_user_is_text_on_the_trace_page(kbot: Seeded) -> None:
    qid = kbot.asked["evil"]["query_id"]
    page = fetch(kbot.url + f"reports/trace/{qid}", BEARER)
    assert page.status == 200
    assert_shown_as_text(page.body, EVIL_Q, f"down by {EVIL_USER}: {EVIL_REASON}")
    assert f"web in web by {EVIL_USER}" in text_of(page.body)


def test_markup_in_the_period_is_text_on_the_error_page(kbot: Seeded) -> None:
    since = "<script>alert(1)</script>"
    page = fetch(kbot.url + "reports?since=" + urllib.parse.quote(since), BEARER)
    assert page.status == 400
    assert_shown_as_text(page.body, f"since: '{since}' is not a period")


def test_markup_in_a_question_reason_and_user_is_text_in_the_html_report(kbot: Seeded) -> None:
    report = build_report(kbot.rt.db, kbot.rt.config)
    assert_shown_as_text(render(report, "html"), EVIL_Q, EVIL_REASON, EVIL_USER)


def test_a_document_link_keeps_its_address_exactly_and_only_http_is_a_link(
    kbot: Seeded,
) -> None:
    report = copy.deepcopy(build_report(kbot.rt.db, kbot.rt.config))
    tricky = 'https://docs.example.test/a?b=1&c="2"\'x><script>alert(1)</script>'
    first, second = report["by_document"][:2]
    first.update(title=EVIL_Q, url=tricky)
    second.update(title="Pwned", url="javascript:alert(1)")
    page = render(report, "html")
    links = read(page).links
    assert (tricky, EVIL_Q) in links
    assert not [href for href, _ in links if not href.startswith(("https:", "http:"))]
    assert "Pwned" in text_of(page)
    assert "<script" not in page


# -- every template, nothing undefined --------------------------------------------------

PAGES = {
    "report.html.j2",
    "report.md.j2",
    "report_page.html.j2",
    "trace.html.j2",
    "message.html.j2",
    "review.html.j2",
    "pick.html.j2",
    "curations.html.j2",
}
PIECES = {"layout.html.j2", "page.html.j2", "macros.html.j2", "actions_page.html.j2"}


def test_the_environment_escapes_by_default_and_refuses_undefined_names() -> None:
    assert ENV.autoescape is True
    assert ENV.undefined is StrictUndefined
    # A new template must be added to PAGES (and rendered below) or be a shared piece.
    assert set(ENV.list_templates()) == PAGES | PIECES
    with pytest.raises(UndefinedError, match="message"):
        render_template("message.html.j2", title="Log in", login_form=False)


def test_every_template_renders_the_seeded_report_with_nothing_undefined(kbot: Seeded) -> None:
    report = build_report(kbot.rt.db, kbot.rt.config)
    context = report_context(report, lambda q: f"https://kbot.example.test/t/{q}")
    qid = kbot.asked["disk"]["query_id"]
    evil = kbot.asked["evil"]["query_id"]
    page_extra = {"since": "7d", "periods": PERIODS, "downloads": DOWNLOADS}
    rendered = {
        "report.html.j2": render_template("report.html.j2", **context),
        "report.md.j2": render_template("report.md.j2", **context),
        "report_page.html.j2": render_template("report_page.html.j2", **context, **page_extra),
        "trace.html.j2": trace_html(trace(kbot.rt.db, qid), Redactor("none")),
        "message.html.j2": render_template(
            "message.html.j2", title="Log in", message="Who are you?", login_form=True
        ),
        # The review queue's pages, as the server renders them (bot.review.queue_pages).
        "review.html.j2": fetch(kbot.url + "reports/review", BEARER).body,
        "pick.html.j2": fetch(kbot.url + f"reports/review/{evil}/pick", BEARER).body,
        "curations.html.j2": fetch(kbot.url + "reports/curations", BEARER).body,
    }
    assert set(rendered) == PAGES
    for name, out in rendered.items():
        assert out.strip(), name
        if name.endswith(".html.j2"):
            assert out.startswith("<!doctype html>") and out.rstrip().endswith("</html>"), name
    assert rendered["report.md.j2"].startswith("# kbot report: ")
    assert '<nav aria-label="Period and downloads">' in rendered["report_page.html.j2"]
    assert '<form method="post" action="/reports/login">' in rendered["message.html.j2"]
    for name in ("review.html.j2", "pick.html.j2"):
        assert "<script>" not in rendered[name] and "&lt;script&gt;alert(1)" in rendered[name]
    # A period with no traffic renders too: each empty section says so.
    later = build_report(kbot.rt.db, kbot.rt.config, "1d", now=utcnow() + timedelta(days=30))
    assert render(later, "html").count("None in this period.") == 4
    assert render(later, "md").count("None in this period.") == 5


# -- each table from its columns --------------------------------------------------------


def assert_follows(table: HtmlTable, columns: Table) -> None:
    assert table.headers == [c.header for c in columns]
    assert table.rows
    numbers = [c.kind == "number" for c in columns]
    for row in table.rows:
        assert [cell.classes == "n" for cell in row] == numbers, row


def test_each_html_table_has_its_columns_headers_and_cells(kbot: Seeded) -> None:
    report = build_report(kbot.rt.db, kbot.rt.config)
    found = read(render(report, "html")).tables
    expected = [
        tables.CONNECTORS,
        tables.DOCUMENTS,
        tables.DOWNVOTED,
        tables.CONTENT_GAPS,
        tables.STALE_DOCUMENTS,
    ]
    assert len(found) == len(expected)
    for table, columns in zip(found, expected, strict=True):
        assert_follows(table, columns)
    downvoted = found[2]
    assert len(downvoted.rows) == len(report["downvoted"])
    evil = next(r for r in downvoted.rows if EVIL_REASON in r[2].text)
    assert evil[1].text.startswith(EVIL_Q)
    assert evil[4].text == "kbot trace " + kbot.asked["evil"]["query_id"]

    qid = kbot.asked["disk"]["query_id"]
    retrieved, passages = read(fetch(kbot.url + f"reports/trace/{qid}", BEARER).body).tables[1:]
    assert_follows(retrieved, tables.RETRIEVED)
    assert retrieved.rows[0][1].text == "1"
    # A generated answer also shows why each cited source was quoted as it was.
    assert_follows(passages, tables.PASSAGES)
    assert all(row[0].text.startswith("[") for row in passages.rows)


def test_each_markdown_table_has_its_columns_headers_and_cells(kbot: Seeded) -> None:
    report = build_report(kbot.rt.db, kbot.rt.config)
    lines = render(report, "md").splitlines()
    heads = [i for i in range(len(lines) - 1) if lines[i + 1].startswith("|---")]
    expected = [
        tables.SUMMARY,
        tables.DAYS,
        tables.STAGES,
        tables.CONNECTORS,
        tables.DOCUMENTS,
        tables.CONTENT_GAPS,
        tables.STALE_DOCUMENTS,
    ]
    assert len(heads) == len(expected)
    for i, columns in zip(heads, expected, strict=True):
        assert lines[i] == "| " + " | ".join(c.header for c in columns) + " |"
        assert lines[i + 1] == "|" + "---|" * len(columns)
        body = []
        for line in lines[i + 2 :]:
            if not line.startswith("| "):
                break
            body.append(line)
        assert body
        for line in body:
            # Cells are split on unescaped pipes; user text has its pipes escaped.
            assert len(re.split(r"(?<!\\)\|", line)) == len(columns) + 2, line
