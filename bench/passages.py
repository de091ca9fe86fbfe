"""Passage choice, ablated: the dev-set measures with each feature of the ranking model
(bot.answer.passages.FEATURES) dropped in turn, and with each selection rule turned off.

It reads an index that already holds the corpus (``kbot --config CFG sync`` first) and asks
the labeled questions through the real answering service, once per variant, in one run.
A drop in a measure when a feature is removed is what that feature is worth.

Usage: ``.venv/bin/python bench/passages.py --config CFG [--questions FILE] [--out PATH]``
(default questions: ../shared/eval/dev_questions.jsonl; ``--out`` writes the table as
Markdown).
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bot.answer.passages as passages
from bot.review import evaluation
from bot.runtime import Runtime
from config import load_config

SHARED = Path(os.environ.get("KBOT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MEASURES = ("context_keywords@3", "answer_keywords", "answer_chars", "cited_relevant")


@contextmanager
def patched(**values: Any) -> Iterator[None]:
    old = {k: getattr(passages, k) for k in values}
    for k, v in values.items():
        setattr(passages, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(passages, k, v)


def variants() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "all features (the default)", {}
    for f in passages.FEATURES:
        rest = tuple(g for g in passages.FEATURES if g.name != f.name)
        yield f"without {f.name}", {"FEATURES": rest}
    yield "without inheritance (INHERIT 0)", {"INHERIT": 0.0}
    yield "without length normalisation", {"LENGTH_SCALE": float("inf")}
    yield "no overshoot (OVERSHOOT 1.0)", {"OVERSHOOT": 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--questions", type=Path, default=SHARED / "eval" / "dev_questions.jsonl")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runtime = Runtime(load_config(args.config))
    questions = evaluation.load_questions(args.questions)
    rows = []
    for name, values in variants():
        with patched(**values):
            result = evaluation.summarize(evaluation.run(runtime, questions))
        rows.append((name, [result[m] for m in MEASURES]))
        print(
            f"{name:38}", "  ".join(f"{m}={v}" for m, v in zip(MEASURES, rows[-1][1], strict=True))
        )
    base = rows[0][1]
    lines = [
        f"Dev set ({len(questions)} questions), one run on {platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}; the difference to the default "
        "in brackets.",
        "",
        "| variant | " + " | ".join(MEASURES) + " |",
        "|---|" + "---|" * len(MEASURES),
    ]
    for name, vals in rows:
        cells = [
            f"{v}" if name == rows[0][0] else f"{v} ({v - b:+.4g})"
            for v, b in zip(vals, base, strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
