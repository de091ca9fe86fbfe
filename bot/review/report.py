"""`kbot report` and the ``/reports`` page: the query log and feedback as a report for leads.

``build_report`` computes the report as plain, JSON-ready data, with question text and user
ids as ``reports.redact`` allows; ``bot.review.render`` writes it as Markdown, HTML, CSV or
JSON.

Questions asked by ``kbot eval`` (platform ``eval``) are not traffic and are left out. Votes
count towards the day and the answer they were cast on.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.answer.generation import normalise_question
from bot.review.cost import DAYS_PER_MONTH
from bot.review.evaluation import percentile
from bot.review.queue import ReviewQueue
from config.models import KbotConfig
from db import Database
from db.models import Feedback, IndexedDocument, QueryRecord, utcnow

# An answered question whose best passage is this close to answering.min_score was nearly
# an abstention: for writers it is a gap as much as one.
LOW_CONFIDENCE_MARGIN = 0.1
CONTENT_GAPS = 20
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
            gap["query_id"] = q.id  # the latest ask: the /reports page curates from it
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
        # Now, not over the period: how many questions wait in the review queue.
        "review_queue": ReviewQueue(db, config.feedback.review_below).count(),
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
