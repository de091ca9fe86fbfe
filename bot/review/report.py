"""`kbot report` and the ``/reports`` page: the query log and feedback as a report for leads.

``build_report`` computes the report as plain, JSON-ready data; ``render`` writes it as
Markdown, self-contained HTML (inline SVG charts, no script, no external assets), CSV or
JSON. The CSV is long format, one value per row (``section, item, field, type, value``), so
any tool can filter it and ``from_csv`` rebuilds exactly the JSON report.

Questions asked by ``kbot eval`` (platform ``eval``) are not traffic and are left out. Votes
count towards the day and the answer they were cast on.
"""

from __future__ import annotations

import csv
import hmac
import html
import io
import json
import math
import os
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.answer.generation import normalise_question
from bot.review.cost import DAYS_PER_MONTH
from bot.review.evaluation import percentile
from config.models import KbotConfig
from db import Database
from db.models import Feedback, IndexedDocument, QueryRecord, utcnow

FORMATS = ("md", "html", "csv", "json")
CSV_COLUMNS = ("section", "item", "field", "type", "value")
# An answered question whose best passage is this close to answering.min_score was nearly
# an abstention: for writers it is a gap as much as one.
LOW_CONFIDENCE_MARGIN = 0.1
CONTENT_GAPS = 20
# Rows shown per table in Markdown and HTML (JSON and CSV have them all).
SHOWN = 20
ANSWER_PREVIEW_CHARS = 600
REDACTED = "[redacted]"
STALE_FIELDS = (
    "connector",
    "path",
    "title",
    "url",
    "cited",
    "in_index",
    "last_modified",
    "age_days",
)
_SINCE = re.compile(r"^\s*(\d+)\s*([dw])\s*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# A link to an answer's trace, or None where there is no page to link to.
TraceLink = Callable[[str], str | None]


class ReportError(ValueError):
    """The report cannot be made as asked; the message says what would work."""


def period_start(since: str, now: datetime) -> datetime:
    """The start of ``since``: ``7d`` is today and the 6 days before it (whole UTC days), ``2w``
    14 days, ``2024-05-01`` that day."""
    value = since.strip()
    m = _SINCE.match(value)
    if m:
        days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
        if not 1 <= days <= 3660:
            raise ReportError(f"{since!r}: the period must be 1 to 3660 days")
        first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    elif _DATE.match(value):
        try:
            first = date.fromisoformat(value)
        except ValueError:
            raise ReportError(f"{since!r} is not a real date") from None
        if first > now.astimezone(UTC).date():
            raise ReportError(f"{since!r} is in the future")
    else:
        raise ReportError(
            f"{since!r} is not a period: use days or weeks like 7d, 30d, 2w, "
            "or a start date like 2024-05-01"
        )
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


class Redactor:
    """Question text and user ids as the config allows them to be shown: as they are, as a
    stable short hash (the same question always gets the same one, so repeats still group),
    or not at all."""

    def __init__(self, mode: str = "none", key: bytes = b""):
        self.mode = mode
        self._key = key

    @classmethod
    def from_config(cls, config: KbotConfig) -> Redactor:
        mode = config.reports.redact
        if mode != "hash":
            return cls(mode)
        secret = config.reports.hash_key
        key = (
            secret.get_secret_value().encode()
            if secret is not None
            else _key_file(config.storage.data_dir / "reports.key")
        )
        return cls(mode, key)

    def question(self, text: str) -> str:
        if self.mode == "none":
            return text
        if self.mode == "redact":
            return REDACTED
        return "q:" + self._hash(normalise_question(text))

    def user(self, user: str | None) -> str | None:
        if self.mode == "none" or not user:
            return user or None
        return REDACTED if self.mode == "redact" else "u:" + self._hash(user)

    def _hash(self, text: str) -> str:
        # Keyed: a plain hash of a user id could be reversed by hashing the workspace's ids.
        return hmac.new(self._key, text.encode(), sha256).hexdigest()[:10]


def _key_file(path: Path) -> bytes:
    """The installation's hashing key, made once. Written aside and hard-linked into place,
    so two processes starting together agree on one key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip().encode()


# -- computing -------------------------------------------------------------------------


def build_report(
    db: Database,
    config: KbotConfig,
    since: str = "7d",
    *,
    now: datetime | None = None,
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """The report over questions asked from ``since`` until ``now``, as JSON-ready data."""
    now = (now or utcnow()).astimezone(UTC)
    start = period_start(since, now)
    redactor = redactor or Redactor.from_config(config)
    queries, votes = _load(db, start, now)
    days = [
        (start.date() + timedelta(days=i)).isoformat()
        for i in range((now.date() - start.date()).days + 1)
    ]
    elapsed_days = max((now - start).total_seconds() / 86400, 1 / 24)
    min_score = config.answering.min_score
    base_url = (config.reports.base_url or "").rstrip("/")

    by_day = {
        d: {
            "date": d,
            "questions": 0,
            "answered": 0,
            "abstained": 0,
            "up": 0,
            "down": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
        }
        for d in days
    }
    platforms: Counter[str] = Counter()
    stages: dict[str, list[float]] = defaultdict(list)
    tokens = {"input": 0, "output": 0, "cached": 0}
    model_calls = unpriced = 0
    cost = 0.0
    connectors = {c.name: _tally() for c in config.connectors}
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    downvoted: list[dict[str, Any]] = []
    gaps: dict[str, dict[str, Any]] = {}

    for q in queries:
        day = by_day[q.created_at.date().isoformat()]
        qv = votes.get(q.id, [])
        up = sum(v.vote == "up" for v in qv)
        down = sum(v.vote == "down" for v in qv)
        platforms[q.platform] += 1
        day["questions"] += 1
        day["abstained" if q.abstained else "answered"] += 1
        day["up"] += up
        day["down"] += down
        for stage, ms in (q.latency_ms or {}).items():
            if isinstance(ms, int | float):
                stages[stage].append(float(ms))
        if q.input_tokens is not None:
            model_calls += 1
            tokens["input"] += q.input_tokens
            tokens["output"] += q.output_tokens or 0
            tokens["cached"] += q.cached_tokens or 0
            day["input_tokens"] += q.input_tokens
            day["output_tokens"] += q.output_tokens or 0
            if q.cost_usd is None:
                unpriced += 1
        if q.cost_usd is not None:
            cost += q.cost_usd
            day["cost_usd"] += q.cost_usd

        if not q.abstained:
            # An abstention's sources are only the closest misses, not citations.
            for name in {c["connector"] for c in q.citations}:
                _count(connectors.setdefault(name, _tally()), up, down)
            for c in {(c["connector"], c["path"]): c for c in q.citations}.values():
                doc = documents.setdefault(
                    (c["connector"], c["path"]),
                    {
                        "connector": c["connector"],
                        "path": c["path"],
                        "title": "",
                        "url": "",
                        **_tally(),
                    },
                )
                # The latest citation's title and link: a document can be renamed.
                doc["title"], doc["url"] = c.get("title", ""), c.get("url", "")
                _count(doc, up, down)

        if down:
            reasons = [v.reason for v in qv if v.vote == "down" and v.reason]
            downvoted.append(
                {
                    "query_id": q.id,
                    "asked_at": _iso(q.created_at),
                    "platform": q.platform,
                    "user": redactor.user(q.user_id),
                    "question": redactor.question(q.question),
                    "reason": "; ".join(reasons) or None,
                    "votes": {"up": up, "down": down},
                    "abstained": q.abstained,
                    "answer": q.answer,
                    "citations": [
                        {k: c.get(k, "") for k in ("n", "title", "url", "connector", "path")}
                        for c in q.citations
                    ],
                    "trace_url": f"{base_url}/reports/trace/{q.id}" if base_url else None,
                }
            )

        low = not q.abstained and _best_dense(q.retrieved) < min_score + LOW_CONFIDENCE_MARGIN
        if q.abstained or low:
            key = normalise_question(q.question)
            gap = gaps.setdefault(
                key, {"question": "", "asked": 0, "abstained": 0, "low_confidence": 0}
            )
            gap["question"] = redactor.question(q.question)  # the latest wording
            gap["asked"] += 1
            gap["abstained" if q.abstained else "low_confidence"] += 1
            gap["last_asked"] = _iso(q.created_at)
            gap["closest"] = q.citations[0].get("title", "") if q.citations else None

    up_total = sum(d["up"] for d in by_day.values())
    down_total = sum(d["down"] for d in by_day.values())
    for d in by_day.values():
        d["cost_usd"] = round(d["cost_usd"], 6)
    indexed = _indexed(db, documents)
    stale_cutoff = now - timedelta(days=config.reports.stale_after_days)
    doc_rows = []
    for key, doc in documents.items():
        modified = indexed.get(key)
        doc_rows.append(
            {
                **_rated(doc),
                "in_index": modified is not None,
                "last_modified": _iso(modified) if modified else None,
                "age_days": (now - modified).days if modified else None,
                "stale": modified is None or modified < stale_cutoff,
            }
        )
    doc_rows.sort(key=lambda d: (-d["cited"], -d["down"], d["connector"], d["path"]))
    conn_rows = [{"connector": name, **_rated(t)} for name, t in connectors.items()]
    conn_rows.sort(key=lambda c: (-c["cited"], c["connector"]))
    total = stages.get("total", [])

    return {
        "period": {"since": _iso(start), "until": _iso(now), "days": len(days)},
        "generated_at": _iso(now),
        "redact": redactor.mode,
        "stale_after_days": config.reports.stale_after_days,
        "questions": len(queries),
        "answered": sum(not q.abstained for q in queries),
        "abstained": sum(q.abstained for q in queries),
        "feedback": {"up": up_total, "down": down_total},
        "helpful_rate": _rate(up_total, down_total),
        "latency_ms": {
            **_percentiles(total),
            "by_stage": {name: _percentiles(ms) for name, ms in sorted(stages.items())},
        },
        "tokens": {**tokens, "model_calls": model_calls, "unpriced_calls": unpriced},
        "cost_usd": round(cost, 6),
        "projected_monthly_cost_usd": round(cost / elapsed_days * DAYS_PER_MONTH, 6),
        "by_day": list(by_day.values()),
        "by_platform": [{"platform": p, "questions": n} for p, n in platforms.most_common()],
        "by_connector": conn_rows,
        "by_document": doc_rows,
        "downvoted": downvoted[::-1],  # newest first (queries come oldest first)
        "content_gaps": sorted(
            gaps.values(), key=lambda g: (-g["asked"], -g["abstained"], g["question"])
        )[:CONTENT_GAPS],
        "stale_documents": [{k: d[k] for k in STALE_FIELDS} for d in doc_rows if d["stale"]],
    }


def _load(db: Database, start: datetime, end: datetime) -> tuple[list[Any], dict[str, list[Any]]]:
    """The questions of the period (not eval runs), and the votes on them by query id."""
    window = (
        QueryRecord.created_at >= start,
        QueryRecord.created_at <= end,
        QueryRecord.platform != "eval",
    )
    with db.session() as s:
        queries = s.execute(
            select(
                QueryRecord.id,
                QueryRecord.created_at,
                QueryRecord.platform,
                QueryRecord.user_id,
                QueryRecord.question,
                QueryRecord.answer,
                QueryRecord.abstained,
                QueryRecord.citations,
                QueryRecord.retrieved,
                QueryRecord.latency_ms,
                QueryRecord.input_tokens,
                QueryRecord.output_tokens,
                QueryRecord.cached_tokens,
                QueryRecord.cost_usd,
            )
            .where(*window)
            .order_by(QueryRecord.created_at)
        ).all()
        rows = s.execute(
            select(Feedback.query_id, Feedback.vote, Feedback.reason)
            .join(QueryRecord, Feedback.query_id == QueryRecord.id)
            .where(*window)
            .order_by(Feedback.updated_at)
        ).all()
    votes: dict[str, list[Any]] = defaultdict(list)
    for v in rows:
        votes[v.query_id].append(v)
    return list(queries), votes


def _indexed(db: Database, docs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    """When each cited document that is still in the index last changed at its source."""
    by_connector: dict[str, list[str]] = defaultdict(list)
    for connector, path in docs:
        by_connector[connector].append(path)
    found: dict[tuple[str, str], datetime] = {}
    with db.session() as s:
        for connector, paths in by_connector.items():
            for i in range(0, len(paths), 500):
                rows = s.execute(
                    select(IndexedDocument.doc_id, IndexedDocument.last_modified).where(
                        IndexedDocument.connector == connector,
                        IndexedDocument.doc_id.in_(paths[i : i + 500]),
                    )
                ).all()
                found.update({(connector, doc_id): lm for doc_id, lm in rows})
    return found


def _tally() -> dict[str, Any]:
    return {"cited": 0, "up": 0, "down": 0}


def _count(tally: dict[str, Any], up: int, down: int) -> None:
    tally["cited"] += 1
    tally["up"] += up
    tally["down"] += down


def _rated(tally: dict[str, Any]) -> dict[str, Any]:
    return {**tally, "helpful_rate": _rate(tally["up"], tally["down"])}


def _rate(up: int, down: int) -> float | None:
    return round(up / (up + down), 4) if up + down else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": round(percentile(values, 50), 1), "p95": round(percentile(values, 95), 1)}


def _best_dense(retrieved: list[dict[str, Any]]) -> float:
    return max((float(h.get("dense", h.get("score", 0.0))) for h in retrieved), default=0.0)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


# -- rendering -------------------------------------------------------------------------


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


# Markdown


def to_markdown(report: dict[str, Any], trace_link: TraceLink) -> str:
    p = report["period"]
    lines = [
        f"# kbot report: {p['since'][:10]} to {p['until'][:10]}",
        "",
        f"Generated {report['generated_at']} from the query log and feedback."
        + _redaction_note(report["redact"]),
        "",
        "## Volume and feedback",
        "",
        *_md_table(
            ["questions", "answered", "abstained", "👍", "👎", "helpful"],
            [
                [
                    report["questions"],
                    report["answered"],
                    report["abstained"],
                    report["feedback"]["up"],
                    report["feedback"]["down"],
                    _pct(report["helpful_rate"]),
                ]
            ],
        ),
        "",
        *_md_table(
            ["day", "questions", "answered", "abstained", "👍", "👎", "tokens in", "out", "USD"],
            [
                [
                    d["date"],
                    d["questions"],
                    d["answered"],
                    d["abstained"],
                    d["up"],
                    d["down"],
                    d["input_tokens"],
                    d["output_tokens"],
                    _usd(d["cost_usd"]),
                ]
                for d in report["by_day"]
            ],
        ),
        "",
        "## Latency (ms)",
        "",
        *_md_table(
            ["stage", "p50", "p95"],
            [
                [s, _ms(v["p50"]), _ms(v["p95"])]
                for s, v in report["latency_ms"]["by_stage"].items()
            ],
        ),
        "",
        "## Tokens and cost",
        "",
        _cost_line(report),
        "",
        "## Connectors",
        "",
        *_md_table(
            ["connector", "cited", "👍", "👎", "helpful"],
            [
                [c["connector"], c["cited"], c["up"], c["down"], _pct(c["helpful_rate"])]
                for c in report["by_connector"]
            ],
        ),
        "",
        "## Documents",
        "",
        *_md_table(
            ["document", "connector", "cited", "👍", "👎", "helpful", "last changed"],
            [
                [
                    _md_link(d["title"] or d["path"], d["url"]),
                    d["connector"],
                    d["cited"],
                    d["up"],
                    d["down"],
                    _pct(d["helpful_rate"]),
                    _changed(d),
                ]
                for d in report["by_document"][:SHOWN]
            ],
        ),
        "",
        f"## 👎 answers ({len(report['downvoted'])})",
        "",
    ]
    if not report["downvoted"]:
        lines += ["None in this period.", ""]
    for d in report["downvoted"][:SHOWN]:
        href = trace_link(d["query_id"])
        trace = f"[trace]({href})" if href else f"`kbot trace {d['query_id']}`"
        lines += [
            f"### {_md(d['question'])}",
            "",
            f"- asked {d['asked_at']} on {d['platform']}"
            + (f" by {_md(d['user'])}" if d["user"] else "")
            + f"; {d['votes']['down']} 👎, {d['votes']['up']} 👍; {trace}",
            f"- reason: {_md(d['reason'] or 'none given')}",
            "- sources: "
            + (
                ", ".join(
                    f"[{c['n']}] {_md_link(c['title'] or c['path'], c['url'])}"
                    for c in d["citations"]
                )
                or "none"
            ),
            "",
            _fenced(_preview(d["answer"])),
            "",
        ]
    lines += [
        "## Content gaps",
        "",
        "Questions kbot abstained on or answered with low confidence, most asked first.",
        "",
        *_md_table(
            ["asked", "question", "abstained", "low confidence", "closest source", "last asked"],
            [
                [
                    g["asked"],
                    _md(g["question"]),
                    g["abstained"],
                    g["low_confidence"],
                    _md(g["closest"] or "-"),
                    g["last_asked"],
                ]
                for g in report["content_gaps"]
            ],
        ),
        "",
        "## Stale cited documents",
        "",
        f"Cited in this period but unchanged for over {report['stale_after_days']} days, or no "
        "longer in the index.",
        "",
        *_md_table(
            ["document", "connector", "cited", "last changed"],
            [
                [
                    _md_link(d["title"] or d["path"], d["url"]),
                    d["connector"],
                    d["cited"],
                    _changed(d),
                ]
                for d in report["stale_documents"]
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["None in this period."]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _md(text: Any) -> str:
    """User or document text made inert in Markdown: one line, no markup, no HTML, no links."""
    flat = " ".join(str(text).split())
    return re.sub(r"([\\`*_\[\]<>|#!])", r"\\\1", flat)


def _fenced(text: str) -> str:
    """``text`` verbatim in a fenced block, its fence longer than any backtick run inside."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


def _md_link(label: str, url: str) -> str:
    return f"[{_md(label)}]({url})" if _http(url) else _md(label)


# HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px}
.muted{color:#5b6475}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 16px;min-width:120px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0}
th,td{border:1px solid #dde1e8;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:8px 0;background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:8px}
figure svg{max-width:100%;height:auto;display:block}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
details{margin-top:4px}blockquote{margin:4px 0;padding:4px 8px;border-left:3px solid #c7ccd6;
white-space:pre-wrap}nav a{margin-right:12px}.bad{color:#b42318}.ok{color:#067647}
"""
COLORS = {"answered": "#2e6fd8", "abstained": "#a3acb9", "up": "#12a150", "down": "#d92d20"}


def to_html(report: dict[str, Any], trace_link: TraceLink, nav: str = "") -> str:
    """A self-contained page: inline CSS and SVG, no script and nothing loaded from elsewhere.
    ``nav`` is trusted HTML (the server's period and download links)."""
    p, days = report["period"], report["by_day"]
    labels = [d["date"][5:] for d in days]
    stages = report["latency_ms"]["by_stage"]
    cards = [
        ("questions", report["questions"]),
        ("answered", report["answered"]),
        ("abstained", report["abstained"]),
        ("👍 / 👎", f"{report['feedback']['up']} / {report['feedback']['down']}"),
        ("helpful", _pct(report["helpful_rate"])),
        (
            "latency p50 / p95",
            f"{_ms(report['latency_ms']['p50'])} / {_ms(report['latency_ms']['p95'])} ms",
        ),
        ("cost", _usd(report["cost_usd"])),
        ("projected / month", _usd(report["projected_monthly_cost_usd"])),
    ]
    charts = [
        bar_chart(
            "Questions per day",
            labels,
            [
                ("answered", [d["answered"] for d in days], COLORS["answered"]),
                ("abstained", [d["abstained"] for d in days], COLORS["abstained"]),
            ],
        ),
        bar_chart(
            "👍 / 👎 per day",
            labels,
            [
                ("helpful", [d["up"] for d in days], COLORS["up"]),
                ("not helpful", [d["down"] for d in days], COLORS["down"]),
            ],
        ),
        bar_chart(
            "Latency per stage (ms)",
            list(stages),
            [
                ("p50", [v["p50"] or 0 for v in stages.values()], "#2e6fd8"),
                ("p95", [v["p95"] or 0 for v in stages.values()], "#f79009"),
            ],
            stacked=False,
        ),
        bar_chart(
            "Cost per day (USD)",
            labels,
            [("USD", [d["cost_usd"] for d in days], "#7a5af8")],
            value_format=lambda v: f"${v:.4f}",
        ),
    ]
    e = _h
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>kbot report {e(p['since'][:10])} to {e(p['until'][:10])}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>kbot report: {e(p['since'][:10])} to {e(p['until'][:10])}</h1>",
        f'<p class="muted">Generated {e(report["generated_at"])} from the query log and '
        f"feedback.{e(_redaction_note(report['redact']))}</p>",
        nav,
        '<section class="cards" aria-label="Summary">',
        *(f'<div class="card"><b>{e(v)}</b>{e(k)}</div>' for k, v in cards),
        "</section>",
        f'<section class="charts" aria-label="Charts">{"".join(charts)}</section>',
        f"<p>{e(_cost_line(report))}</p>",
        "<h2>Connectors</h2>",
        _html_table(
            ["connector", "cited", "👍", "👎", "helpful"],
            [
                [e(c["connector"]), c["cited"], c["up"], c["down"], _pct(c["helpful_rate"])]
                for c in report["by_connector"]
            ],
        ),
        "<h2>Documents</h2>",
        _html_table(
            ["document", "connector", "cited", "👍", "👎", "helpful", "last changed"],
            [
                [
                    _html_link(d["title"] or d["path"], d["url"]),
                    e(d["connector"]),
                    d["cited"],
                    d["up"],
                    d["down"],
                    _pct(d["helpful_rate"]),
                    e(_changed(d)),
                ]
                for d in report["by_document"][:SHOWN]
            ],
        ),
        f'<h2 id="downvoted">👎 answers ({len(report["downvoted"])})</h2>',
        _html_table(
            ["asked", "question", "reason", "sources", "trace"],
            [_downvoted_row(d, trace_link) for d in report["downvoted"]],
            row_class="downvoted",
        ),
        "<h2>Content gaps</h2>",
        '<p class="muted">Questions kbot abstained on or answered with low confidence, most '
        "asked first: what writers could add.</p>",
        _html_table(
            ["asked", "question", "abstained", "low confidence", "closest source", "last asked"],
            [
                [
                    g["asked"],
                    e(g["question"]),
                    g["abstained"],
                    g["low_confidence"],
                    e(g["closest"] or "-"),
                    e(_when(g["last_asked"])),
                ]
                for g in report["content_gaps"]
            ],
        ),
        "<h2>Stale cited documents</h2>",
        f'<p class="muted">Cited in this period but unchanged for over '
        f"{report['stale_after_days']} days, or no longer in the index.</p>",
        _html_table(
            ["document", "connector", "cited", "last changed"],
            [
                [
                    _html_link(d["title"] or d["path"], d["url"]),
                    e(d["connector"]),
                    d["cited"],
                    e(_changed(d)),
                ]
                for d in report["stale_documents"]
            ],
        ),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _downvoted_row(d: dict[str, Any], trace_link: TraceLink) -> list[Any]:
    e = _h
    href = trace_link(d["query_id"])
    trace = (
        f'<a href="{e(href)}">trace</a>' if href else f"<code>kbot trace {e(d['query_id'])}</code>"
    )
    sources = "<br>".join(
        f"[{e(c['n'])}] {_html_link(c['title'] or c['path'], c['url'])}" for c in d["citations"]
    )
    who = f" by {e(d['user'])}" if d["user"] else ""
    question = (
        f"{e(d['question'])}<details><summary>answer{' (abstained)' if d['abstained'] else ''}"
        f"</summary><blockquote>{e(_preview(d['answer']))}</blockquote></details>"
    )
    return [
        f"{e(_when(d['asked_at']))}<br><span class=muted>{e(d['platform'])}{who}</span>",
        question,
        e(d["reason"] or "none given"),
        sources or "none",
        trace,
    ]


def _html_table(header: list[str], rows: list[list[Any]], row_class: str = "") -> str:
    if not rows:
        return '<p class="muted">None in this period.</p>'
    cls = f' class="{row_class}"' if row_class else ""
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = "".join(
        f"<tr{cls}>"
        + "".join(
            f'<td class="n">{c}</td>' if isinstance(c, int | float) else f"<td>{c}</td>" for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_link(label: str, url: str) -> str:
    if _http(url):
        return f'<a href="{_h(url)}" rel="noreferrer noopener">{_h(label)}</a>'
    return _h(label)


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(
    title: str,
    labels: list[str],
    series: list[tuple[str, list[float], str]],
    *,
    stacked: bool = True,
    value_format: Callable[[float], str] | None = None,
) -> str:
    """An inline SVG bar chart with a legend and hover titles: stacked, or grouped side by
    side. Sized in its own attributes, so it has a size before any CSS."""
    fmt = value_format or _short
    width, height = 640, 240
    left, right, top, bottom = 56, 12, 36, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    if stacked:
        peaks = [sum(s[1][i] for s in series) for i in range(len(labels))]
    else:
        peaks = [max(s[1][i] for s in series) for i in range(len(labels))]
    ymax = _nice(max(peaks, default=0))
    band = plot_w / n
    e = _h
    out = [
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
        f"<title>{e(title)}</title>",
        f'<text x="{left}" y="16" font-size="14" font-weight="600" fill="#1d2330">'
        f"{e(title)}</text>",
    ]
    x = left + plot_w
    for name, _values, color in reversed(series):
        x -= 8 + 7 * len(name) + 14
        out.append(
            f'<rect x="{x}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="17" font-size="12" fill="#5b6475">{e(name)}</text>'
        )
    for frac in (0, 0.5, 1):
        y = top + plot_h - frac * plot_h
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#dde1e8"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#5b6475">{e(fmt(ymax * frac))}</text>'
        )
    every = max(1, -(-len(labels) // 14))
    for i, label in enumerate(labels):
        x0 = left + i * band + band * 0.15
        inner = band * 0.7
        base = top + plot_h
        for j, (name, values, color) in enumerate(series):
            v = values[i]
            h = plot_h * v / ymax
            if stacked:
                bx, bw, by = x0, inner, base - h
                base -= h
            else:
                bw = inner / len(series)
                bx, by = x0 + j * bw, top + plot_h - h
            out.append(
                f'<rect class="bar" x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{e(label)}: {e(fmt(v))} '
                f"{e(name)}</title></rect>"
            )
        if i % every == 0:
            out.append(
                f'<text x="{left + (i + 0.5) * band:.1f}" y="{height - bottom + 16}" '
                f'font-size="11" text-anchor="middle" fill="#5b6475">{e(label)}</text>'
            )
    out.append("</svg></figure>")
    return "".join(out)


def _nice(v: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``v`` (1 for nothing)."""
    if v <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(v))
    return next(m * step for m in (1, 2, 5, 10) if m * step >= v * (1 - 1e-9))


# Shared helpers


def _redaction_note(mode: str) -> str:
    return {
        "none": "",
        "hash": " Question text and user ids are replaced by stable hashes.",
        "redact": " Question text and user ids are redacted.",
    }[mode]


def _cost_line(report: dict[str, Any]) -> str:
    t = report["tokens"]
    if not t["model_calls"]:
        return "No model calls in this period: every answer was extractive, at no token cost."
    line = (
        f"{t['model_calls']} model calls used {t['input']} input tokens ({t['cached']} cached) "
        f"and {t['output']} output tokens, costing {_usd(report['cost_usd'])}: about "
        f"{_usd(report['projected_monthly_cost_usd'])} per {DAYS_PER_MONTH}-day month at "
        "this period's daily rate."
    )
    if t["unpriced_calls"]:
        line += f" {t['unpriced_calls']} calls were to a model without a known price."
    return line


def _when(iso: str) -> str:
    """An ISO timestamp as people read it: ``2024-05-01 14:03`` (UTC)."""
    return iso[:16].replace("T", " ")


def _preview(answer: str) -> str:
    return answer if len(answer) <= ANSWER_PREVIEW_CHARS else answer[:ANSWER_PREVIEW_CHARS] + "…"


def _changed(doc: dict[str, Any]) -> str:
    if not doc["in_index"]:
        return "no longer in the index"
    return f"{doc['last_modified'][:10]} ({doc['age_days']} days ago)"


def _http(url: str | None) -> bool:
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _usd(v: float) -> str:
    return f"${v:.4f}" if v < 1 else f"${v:,.2f}"


def _short(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"
