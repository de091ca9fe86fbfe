"""The tables of the report and the trace page, each one's columns defined once: a header,
what the cell holds, and what kind of cell it is. The Markdown and HTML templates draw
every table from these, so a column is added or renamed in one place.

Kinds: ``text`` and ``number`` (right-aligned in HTML) print the value; ``link`` is a
``(label, url)`` pair, a link only for http(s); ``when`` is an ISO timestamp, kept whole in
Markdown and shortened in HTML. The 👎 table's ``asked``, ``question``, ``sources`` and
``trace`` cells are drawn from the whole row by the HTML template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from bot.review.formats import changed, ms, pct, usd


@dataclass(frozen=True)
class Column:
    """One column: its header, its cell's value for a row, and the kind of cell."""

    header: str
    value: Callable[[dict[str, Any]], Any]
    kind: str = "text"


Table = tuple[Column, ...]


def _text(header: str, key: str) -> Column:
    return Column(header, itemgetter(key))


def _number(header: str, key: str) -> Column:
    return Column(header, itemgetter(key), "number")


def _whole(row: dict[str, Any]) -> dict[str, Any]:
    return row


_VOTES = (
    _number("👍", "up"),
    _number("👎", "down"),
    Column("helpful", lambda r: pct(r["helpful_rate"])),
)
_DOCUMENT = Column("document", lambda d: (d["title"] or d["path"], d["url"]), "link")
_CONNECTOR = _text("connector", "connector")
_CITED = _number("cited", "cited")
_CHANGED = Column("last changed", changed)

# The period's totals, one row: the report itself (Markdown; HTML shows them as cards).
SUMMARY: Table = (
    _number("questions", "questions"),
    _number("answered", "answered"),
    _number("abstained", "abstained"),
    Column("👍", lambda r: r["feedback"]["up"], "number"),
    Column("👎", lambda r: r["feedback"]["down"], "number"),
    Column("helpful", lambda r: pct(r["helpful_rate"])),
)
# Markdown; HTML draws the days as charts.
DAYS: Table = (
    _text("day", "date"),
    _number("questions", "questions"),
    _number("answered", "answered"),
    _number("abstained", "abstained"),
    _number("👍", "up"),
    _number("👎", "down"),
    _number("tokens in", "input_tokens"),
    _number("out", "output_tokens"),
    Column("USD", lambda d: usd(d["cost_usd"])),
)
# Rows are ``{"stage": name, "p50": ..., "p95": ...}`` (Markdown; HTML draws a chart).
STAGES: Table = (
    _text("stage", "stage"),
    Column("p50", lambda s: ms(s["p50"])),
    Column("p95", lambda s: ms(s["p95"])),
)
CONNECTORS: Table = (_CONNECTOR, _CITED, *_VOTES)
DOCUMENTS: Table = (_DOCUMENT, _CONNECTOR, _CITED, *_VOTES, _CHANGED)
DOWNVOTED: Table = (
    Column("asked", _whole, "asked"),
    Column("question", _whole, "question"),
    Column("reason", lambda d: d["reason"] or "none given"),
    Column("sources", itemgetter("citations"), "sources"),
    Column("trace", itemgetter("query_id"), "trace"),
)
CONTENT_GAPS: Table = (
    _number("asked", "asked"),
    _text("question", "question"),
    _number("abstained", "abstained"),
    _number("low confidence", "low_confidence"),
    Column("closest source", lambda g: g["closest"] or "-"),
    Column("last asked", itemgetter("last_asked"), "when"),
)
STALE_DOCUMENTS: Table = (_DOCUMENT, _CONNECTOR, _CITED, _CHANGED)
# The trace page's passage choice: one row per chosen block (score None: quoted whole).
PASSAGES: Table = (
    Column("source", lambda b: f"[{b['n']}]"),
    Column("score", lambda b: "" if b["score"] is None else f"{b['score']:.3f}", "number"),
    _text("features (share of the score)", "shares_text"),
    _text("block", "block"),
)
# The trace page's retrieved chunks; rows carry their rank ``n`` and whether ``cited``.
RETRIEVED: Table = (
    Column("", lambda h: "cited" if h["cited"] else ""),
    _number("#", "n"),
    Column("score", lambda h: f"{h['score']:.3f}", "number"),
    Column("dense", lambda h: f"{h.get('dense', 0):.3f}", "number"),
    Column("lexical", lambda h: f"{h.get('lexical', 0):.2f}", "number"),
    _CONNECTOR,
    _text("document", "path"),
)
