"""The report (``bot.review.report.build_report``) written out as Markdown, self-contained
HTML, CSV or JSON, and the one Jinja2 environment the review pages render through.

HTML and Markdown come from the templates in ``bot/review/templates``, which escape by
default (``autoescape``; the Markdown template turns it off and makes user text inert with
``|md`` instead). Undefined names are errors, not blanks. The CSV is long format, one value
per row (``section, item, field, type, value``), so any tool can filter it and ``from_csv``
rebuilds exactly the JSON report.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from bot.review import formats, tables
from bot.review.charts import report_charts
from bot.review.report import ReportError

FORMATS = ("md", "html", "csv", "json")
CSV_COLUMNS = ("section", "item", "field", "type", "value")
# Rows shown per table in Markdown and HTML (JSON and CSV have them all).
SHOWN = 20

# A link to an answer's trace, or None where there is no page to link to.
TraceLink = Callable[[str], str | None]

ENV = Environment(
    loader=PackageLoader("bot.review", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
ENV.filters.update(
    md=formats.md,
    fenced=formats.fenced,
    preview=formats.preview,
    pct=formats.pct,
    ms=formats.ms,
    usd=formats.usd,
    when=formats.when,
    cost_line=formats.cost_line,
    redaction_note=formats.redaction_note,
)
ENV.tests["http"] = formats.is_http
ENV.globals.update(tables=tables, md_link=formats.md_link)


def render_template(name: str, **context: Any) -> str:
    """``templates/name`` rendered with ``context``."""
    return ENV.get_template(name).render(**context)


def render(report: dict[str, Any], fmt: str, trace_link: TraceLink | None = None) -> str:
    """The report as ``fmt`` (one of ``FORMATS``). ``trace_link`` gives the address of an
    answer's trace page; without one, Markdown and HTML name the `kbot trace` command."""
    link = trace_link or (lambda _qid: None)
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "md":
        return to_markdown(report, link)
    if fmt == "html":
        return to_html(report, link)
    raise ReportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def report_context(report: dict[str, Any], trace_link: TraceLink) -> dict[str, Any]:
    """What the report templates read: the report, its charts, and where traces are."""
    return {
        "report": report,
        "trace_link": trace_link,
        "shown": SHOWN,
        "charts": report_charts(report),
        "stages": [{"stage": s, **v} for s, v in report["latency_ms"]["by_stage"].items()],
    }


def to_html(report: dict[str, Any], trace_link: TraceLink) -> str:
    """A self-contained page: inline CSS and SVG, no script and nothing loaded from elsewhere."""
    return render_template("report.html.j2", **report_context(report, trace_link))


def to_markdown(report: dict[str, Any], trace_link: TraceLink) -> str:
    """The report as Markdown, every user or document text inert."""
    return render_template("report.md.j2", **report_context(report, trace_link))


# -- CSV ---------------------------------------------------------------------------------


def to_csv(report: dict[str, Any]) -> str:
    """Long format: one value per row. ``item`` is the row's index in a list section (by_day,
    downvoted, ...); ``field`` a dotted path inside it (``citations.0.title``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for section, value in report.items():
        if isinstance(value, list) and value:
            for i, item in enumerate(value):
                for path, leaf in _leaves(item, ""):
                    w.writerow([section, i, path, *_typed(leaf)])
        else:
            for path, leaf in _leaves(value, ""):
                w.writerow([section, "", path, *_typed(leaf)])
    return out.getvalue()


def from_csv(text: str) -> dict[str, Any]:
    """The report ``to_csv`` wrote, rebuilt value for value."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(header) != CSV_COLUMNS:
        raise ReportError(f"not a kbot report CSV: the header must be {','.join(CSV_COLUMNS)}")
    report: dict[str, Any] = {}
    for n, row in enumerate(rows, 2):
        if len(row) != len(CSV_COLUMNS):
            raise ReportError(f"line {n}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
        section, item, field, kind, raw = row
        path: list[str | int] = [section]
        if item != "":
            path.append(int(item))
        if field:
            path += [int(p) if p.isdigit() else p for p in field.split(".")]
        _put(report, path, _untyped(kind, raw, n))
    return report


def _leaves(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    """(dotted path, scalar) pairs; an empty list or dict is a leaf of its own."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}.{i}" if path else str(i))
    else:
        yield path, value


def _typed(value: Any) -> tuple[str, str]:
    if value is None:
        return "null", ""
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, float):
        return "float", repr(value)
    if isinstance(value, list):
        return "list", ""
    if isinstance(value, dict):
        return "dict", ""
    return "str", str(value)


def _untyped(kind: str, raw: str, line: int) -> Any:
    try:
        return {
            "null": lambda: None,
            "bool": lambda: raw == "true",
            "int": lambda: int(raw),
            "float": lambda: float(raw),
            "str": lambda: raw,
            "list": list,
            "dict": dict,
        }[kind]()
    except (KeyError, ValueError):
        raise ReportError(f"line {line}: cannot read {raw!r} as type {kind!r}") from None


def _put(root: dict[str, Any], path: list[str | int], value: Any) -> None:
    node: Any = root
    for here, nxt in zip(path, path[1:], strict=False):
        fresh: Any = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            if here == len(node):
                node.append(fresh)
            node = node[here]
        else:
            node = node.setdefault(here, fresh)
    last = path[-1]
    if isinstance(node, list):
        node.append(value)
    else:
        node[last] = value
