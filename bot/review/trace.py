"""One answer, everything needed to debug it: who asked where, the question, what was
retrieved with its scores, the prompt and model when an LLM was used, tokens, cost, each
stage's latency, why a generated answer was not shown, and the feedback it got."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db import Database
from db.models import Feedback, QueryRecord


class UnknownTrace(LookupError):
    """No answer has that query id."""


def trace(db: Database, query_id: str) -> dict[str, Any]:
    """The trace of answer ``query_id`` as plain data (JSON-ready but for datetimes)."""
    with db.session() as s:
        q = s.get(QueryRecord, query_id)
        if q is None:
            raise UnknownTrace(f"no answer with query id {query_id!r}")
        votes = s.scalars(
            select(Feedback).where(Feedback.query_id == query_id).order_by(Feedback.created_at)
        ).all()
        return {
            "query_id": q.id,
            "created_at": q.created_at,
            "requester": {"platform": q.platform, "channel": q.channel, "user": q.user_id},
            "question": q.question,
            "answer": q.answer,
            "abstained": q.abstained,
            "mode": q.mode,
            "citations": q.citations,
            "retrieved": q.retrieved,
            "latency_ms": q.latency_ms,
            "model": q.model,
            "usage": {
                "input_tokens": q.input_tokens,
                "output_tokens": q.output_tokens,
                "cached_tokens": q.cached_tokens,
                "cost_usd": q.cost_usd,
            },
            "fallback_reason": q.fallback_reason,
            "prompt": q.prompt,
            "passages": q.passages or [],
            "thread": _thread(s, q),
            "adjustments": q.adjustments or [],
            "feedback": [
                {"user": f.user_id, "vote": f.vote, "reason": f.reason, "at": f.updated_at}
                for f in votes
            ],
        }


# How far back `kbot trace` follows a thread: its history is bounded anyway.
CHAIN_LIMIT = 20


def _thread(s: Any, q: QueryRecord) -> dict[str, Any] | None:
    """A follow-up's place in its thread: the earlier questions it follows (oldest first,
    by the ``follows`` links; one whose query is gone ends the chain as ``missing``), the
    stand-alone question searched for it, and the follow-ups asked after it."""
    if q.thread_key is None and q.follows is None:
        return None
    chain: list[dict[str, Any]] = []
    missing = None
    at = q.follows
    while at and len(chain) < CHAIN_LIMIT:
        earlier = s.get(QueryRecord, at)
        if earlier is None:
            missing = at  # deleted, or older than a restored backup
            break
        chain.append({"query_id": earlier.id, "question": earlier.question})
        at = earlier.follows
    later = s.scalars(
        select(QueryRecord).where(QueryRecord.follows == q.id).order_by(QueryRecord.created_at)
    ).all()
    return {
        "key": q.thread_key,
        "earlier": chain[::-1],
        "missing": missing,
        "standalone_question": q.standalone_question,
        "condense_fallback": q.condense_fallback,
        "later": [{"query_id": x.id, "question": x.question} for x in later],
    }


# How a source's passage was made, for sources whose blocks were not scored one by one.
HOW = {
    "whole": "the whole document fit the budget",
    "unquoted": "the whole document, less blocks already quoted from a near-copy",
    "cut": "no block scored; the document's start, cut to the budget",
}


def thread_lines(th: dict[str, Any] | None) -> list[str]:
    """The thread part of a trace: the chain of questions this one follows, then this one
    (as searched), then the follow-ups asked after it."""
    if not th:
        return []
    lines = [f"thread: {th['key'] or '-'}"]
    if th["missing"]:
        lines.append(f"  (earlier query {th['missing']} is gone)")
    lines += [f"  {e['query_id']}  {e['question']}" for e in th["earlier"]]
    if th["standalone_question"]:
        how = f" (condense failed: {th['condense_fallback']})" if th["condense_fallback"] else ""
        lines.append(f"  > this one, searched as: {th['standalone_question']}{how}")
    else:
        lines.append("  > this one")
    lines += [f"  {x['query_id']}  {x['question']}  (follow-up)" for x in th["later"]]
    return lines


def adjustment_line(note: dict[str, Any]) -> str:
    """What one vote or curation note of the retriever did, in a sentence:
    "votes moved runbooks/x.md from 1 to 2 (net -2.0 from 3 voters)"."""
    doc = f"{note['connector']}:{note['path']}"
    kind = note.get("kind")
    if kind == "votes":
        n = note["voters"]
        why = f"net {note['net']:+.1f} from {n} voter{'' if n == 1 else 's'}"
        if note["from"] == note["to"]:
            return f"votes left {doc} at {note['from']} ({why})"
        return f"votes moved {doc} from {note['from']} to {note['to']} ({why})"
    if kind in ("pin", "suppress"):
        head = f"{kind} #{note['curation']} of {doc}"
        sim = f"similarity {note['similarity']:.2f}"
        if note.get("applied"):
            return f"{head} applied ({sim})"
        why = "not retrieved" if kind == "suppress" else "not visible to the asker or gone"
        return f"{head} matched but did nothing: {why} ({sim})"
    return f"{kind} on {doc}"


def passage_shares(block: dict[str, Any]) -> str:
    """A chosen block's feature shares, largest first: "question_words 52%, code 31%"."""
    if block.get("inherited"):
        return "inherited from the block before"
    shares = sorted(block["shares"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0%}" for k, v in shares) or "no feature (filler)"


def format_trace(t: dict[str, Any]) -> str:
    """The trace as text for a terminal."""
    r = t["requester"]
    lines = [
        f"query {t['query_id']} at {t['created_at']:%Y-%m-%d %H:%M:%S} UTC",
        f"asked on {r['platform']} in {r['channel'] or '-'} by {r['user'] or 'anonymous'}",
        f"question: {t['question']}",
        f"outcome: {'abstained' if t['abstained'] else (t['mode'] or 'extractive')}"
        + (f" (fallback: {t['fallback_reason']})" if t["fallback_reason"] else ""),
        "latency ms: " + ", ".join(f"{k} {v}" for k, v in t["latency_ms"].items()),
    ]
    lines += thread_lines(t.get("thread"))
    if t["model"]:
        u = t["usage"]
        cost = "unknown" if u["cost_usd"] is None else f"${u['cost_usd']:.6f}"
        lines.append(
            f"model: {t['model']}, tokens in {u['input_tokens']} (cached {u['cached_tokens']})"
            f", out {u['output_tokens']}, cost {cost}"
        )
    lines.append("retrieved (score, dense, lexical):")
    cited = {c.get("chunk_id") for c in t["citations"]}
    for i, h in enumerate(t["retrieved"], 1):
        mark = "*" if h["chunk_id"] in cited else " "
        lines.append(
            f" {mark}{i:>2}. {h['score']:.3f} {h['dense']:.3f} {h['lexical']:6.2f}  "
            f"{h['connector']}: {h['path']}"
        )
    lines.append("citations:")
    lines += [f"  [{c['n']}] {c['title']} ({c['connector']}: {c['path']})" for c in t["citations"]]
    lines += ["answer:", *("  " + line for line in t["answer"].splitlines())]
    if t["passages"]:
        lines.append("passage choice (score, each feature's share):")
        for p in t["passages"]:
            how = p.get("how", "chosen")
            if how != "chosen":
                lines.append(f"  [{p['n']}] {HOW.get(how, how)}")
            for b in p["blocks"]:
                lines.append(f"  [{p['n']}] {b['score']:.3f}  {passage_shares(b)}  {b['block']}")
    notes = t.get("adjustments") or []
    lines.append("feedback and curations:" if notes else "feedback and curations: none")
    lines += [f"  {adjustment_line(n)}" for n in notes]
    if t["prompt"]:
        lines += ["prompt:", *("  " + line for line in t["prompt"].splitlines())]
    lines.append("feedback:" if t["feedback"] else "feedback: none")
    lines += [
        f"  {f['vote']} by {f['user'] or 'anonymous'}" + (f": {f['reason']}" if f["reason"] else "")
        for f in t["feedback"]
    ]
    return "\n".join(lines)
