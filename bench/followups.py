"""Follow-ups in their thread's context: the follow-up kind's measures without context
(each question asked on its own), with the default rule (bot.answer.threads), and with
each part of the rule changed, in one run; plus the latency of a follow-up in a 50-turn
thread against a second-turn one.

It reads an index that already holds the corpus (``kbot --config CFG sync`` first) and
asks the questions through the real answering service (extractive: the config's ``llm:``
is dropped). The questions file pairs first questions with follow-ups (``follow_up_of``).

Usage: ``.venv/bin/python bench/followups.py --config CFG [--questions FILE] [--out PATH]``
(default questions: bench/eval/followups.jsonl; ``--out`` writes the tables as Markdown).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bot.answer.threads as threads
from bot.answer.types import Requester
from bot.review import evaluation
from bot.runtime import Runtime
from config import load_config

HERE = Path(__file__).resolve().parent
MEASURES = ("hit@5", "mrr@10", "answer_keywords", "cited_relevant", "false_abstain")
LONG_THREAD = 50


@contextmanager
def patched(**values: Any) -> Iterator[None]:
    old = {k: getattr(threads, k) for k in values}
    for k, v in values.items():
        setattr(threads, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(threads, k, v)


def variants() -> Iterator[tuple[str, bool, dict[str, Any]]]:
    """(name, in threads, thread constants patched)."""
    yield "without thread context", False, {}
    yield "the default rule", True, {}
    yield "always the combined query", True, {"CONTEXT_GAIN": float("-inf")}
    for gain in (0.05, 0.1):
        yield f"CONTEXT_GAIN {gain}", True, {"CONTEXT_GAIN": gain}
    yield "no cited documents first", True, {"PREFER_MARGIN": float("-inf")}
    yield "cited documents first, any score", True, {"PREFER_MARGIN": float("inf")}
    for margin in (0.05, 0.3):
        yield f"PREFER_MARGIN {margin}", True, {"PREFER_MARGIN": margin}


def long_thread(runtime: Runtime, first: str, follow_up: str) -> dict[str, float]:
    """Median total latency (ms) of ``follow_up`` asked as the 2nd turn and as the 51st."""
    service = runtime.answering
    out: dict[str, float] = {}
    for turns in (1, LONG_THREAD):
        requester = Requester(platform="bench", thread=f"bench-{uuid.uuid4().hex}")
        for _ in range(turns):
            service.ask(first, requester)
        times = []
        for _ in range(9):
            t0 = time.perf_counter()
            service.ask(follow_up, requester)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"after {turns} turn(s)"] = round(sorted(times)[len(times) // 2], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--questions", type=Path, default=HERE / "eval" / "followups.jsonl")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    config = load_config(args.config)
    runtime = Runtime(config.model_copy(update={"llm": None}))
    questions = evaluation.load_questions(args.questions)
    rows = []
    for name, in_threads, values in variants():
        with patched(**values):
            result = evaluation.summarize(evaluation.run(runtime, questions, in_threads))
        kind = result["per_kind"][evaluation.FOLLOW_UP]
        vals = [kind[m] for m in MEASURES] + [kind["latency_ms"]["p95"]]
        rows.append((name, vals))
        print(f"{name:36}", "  ".join(f"{v}" for v in vals))
    base = rows[1][1]
    n = sum(q.kind == evaluation.FOLLOW_UP for q in questions)
    lines = [
        f"{n} follow-ups of {args.questions.name}, one run on {platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}; the difference to the default "
        "rule in brackets.",
        "",
        "| variant | " + " | ".join(MEASURES) + " | latency_ms p95 |",
        "|---|" + "---|" * (len(MEASURES) + 1),
    ]
    for name, vals in rows:
        cells = [
            f"{v}" if name == rows[1][0] else f"{v} ({v - b:+.4g})"
            for v, b in zip(vals, base, strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(q for q in questions if q.kind != evaluation.FOLLOW_UP)
    follow = next(q for q in questions if q.follow_up_of == first.id)
    latency = long_thread(runtime, first.question, follow.question)
    lines += [
        "",
        "A follow-up's median latency (9 asks) by the thread's length: "
        + ", ".join(f"{k} {v} ms" for k, v in latency.items())
        + f" (history read: at most {threads.HISTORY_TURNS} turns).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    runtime.close()


if __name__ == "__main__":
    main()
