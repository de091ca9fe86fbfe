"""`kbot cost`: what generated answers would cost per month, per model, side by side.

Tokens per request come from the query log: the model calls of real traffic, or, before
there is any, those of a `kbot eval` run (platform ``eval``) with an ``llm:`` configured.
Each logged call is priced at every model's rates, and the p50 and p95 of those costs are
projected to a month of ``requests_per_day``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bot.answer.generation import cost_usd
from bot.review.evaluation import percentile
from config.models import DEFAULT_PRICES, KbotConfig, lookup_price
from db import Database
from db.models import QueryRecord

DAYS_PER_MONTH = 30


class CostError(ValueError):
    """No projection can be made as asked; the message says what to do."""


@dataclass(frozen=True)
class Calls:
    """Token counts of logged model calls, and where they came from (traffic or eval)."""

    source: str
    tokens: list[tuple[int, int, int]]  # (input, output, cached) per call


def logged_calls(db: Database) -> Calls:
    """The model calls of real traffic, else of eval runs."""
    columns = (QueryRecord.input_tokens, QueryRecord.output_tokens, QueryRecord.cached_tokens)
    with db.session() as s:
        for source, where in (
            ("traffic", QueryRecord.platform != "eval"),
            ("eval", QueryRecord.platform == "eval"),
        ):
            rows = s.execute(
                select(*columns).where(QueryRecord.input_tokens.is_not(None), where)
            ).all()
            if rows:
                return Calls(source, [(i or 0, o or 0, c or 0) for i, o, c in rows])
    raise CostError(
        "the query log has no model calls to measure yet: configure llm: and run "
        "`kbot eval --questions FILE.jsonl` (or serve some traffic), then try again"
    )


def project(
    config: KbotConfig, calls: Calls, requests_per_day: int, models: list[str] | None = None
) -> dict[str, Any]:
    """Per model: p50/p95 USD per request and per month. ``models`` defaults to the
    configured model and every model with a built-in price."""
    prices = config.llm.prices if config.llm else {}
    names = list(
        dict.fromkeys(
            models or [*([config.llm.model] if config.llm else []), *DEFAULT_PRICES, *prices]
        )
    )
    out = []
    for name in names:
        price = lookup_price(name, prices)
        if price is None:
            raise CostError(
                f"no price known for model {name!r}: add it under llm.prices in "
                f"{config.source} (USD per million input/output/cached tokens)"
            )
        costs = [cost_usd(price, i, o, c) for i, o, c in calls.tokens]
        p50, p95 = percentile(costs, 50), percentile(costs, 95)
        out.append(
            {
                "model": name,
                "p50_usd_per_request": round(p50, 8),
                "p95_usd_per_request": round(p95, 8),
                "monthly_usd_p50": round(p50 * requests_per_day * DAYS_PER_MONTH, 2),
                "monthly_usd_p95": round(p95 * requests_per_day * DAYS_PER_MONTH, 2),
            }
        )
    inputs = [float(i) for i, _, _ in calls.tokens]
    outputs = [float(o) for _, o, _ in calls.tokens]
    return {
        "source": calls.source,
        "calls": len(calls.tokens),
        "requests_per_day": requests_per_day,
        "tokens_per_request": {
            "input": {"p50": percentile(inputs, 50), "p95": percentile(inputs, 95)},
            "output": {"p50": percentile(outputs, 50), "p95": percentile(outputs, 95)},
        },
        "models": out,
    }


def format_projection(result: dict[str, Any]) -> str:
    """A table of models with their per-request and monthly costs."""
    tok = result["tokens_per_request"]
    lines = [
        f"{result['calls']} logged model calls ({result['source']}): input tokens p50 "
        f"{tok['input']['p50']:.0f}, p95 {tok['input']['p95']:.0f}; output p50 "
        f"{tok['output']['p50']:.0f}, p95 {tok['output']['p95']:.0f}",
        f"at {result['requests_per_day']} requests/day, {DAYS_PER_MONTH} days/month:",
    ]
    header = ["model", "$/req p50", "$/req p95", "$/month p50", "$/month p95"]
    body = [
        [
            m["model"],
            f"{m['p50_usd_per_request']:.6f}",
            f"{m['p95_usd_per_request']:.6f}",
            f"{m['monthly_usd_p50']:.2f}",
            f"{m['monthly_usd_p95']:.2f}",
        ]
        for m in result["models"]
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for r in [header, *body]:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)
