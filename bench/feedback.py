"""Votes in ranking, measured: simulated 👍/👎 from the dev questions' labels, replayed
through the real answering and feedback paths, then the questions asked again.

- Votes: for each of the 20 dev questions that ``bench/eval/paraphrases.jsonl``
  paraphrases, three voters each give 👍 when the answer cites a relevant document and
  👎 ``wrong`` when it cites none.
- Then mrr@10 and answer_keywords (and the rest) before and after the votes, on the voted
  questions, on their paraphrases (never voted on), and on the other 40 dev questions
  (held in, not voted on: they must not get worse).
- Adversarial: for each voted question whose relevant document is first, five voters 👎
  ``wrong`` on that answer alone (earlier votes cleared); the relevant document must drop
  at most one place and stay cited.
- How close paraphrases are to their questions, and distinct questions to each other, in
  question-embedding cosine: what ``feedback.close`` is chosen from.

It reads an index that already holds the corpus (``kbot --config CFG sync`` first) and
keeps its own query log in a temporary SQLite database; the config's ``llm:`` is dropped.

Usage: ``.venv/bin/python bench/feedback.py --config CFG [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete

from bot.answer.types import Answer, Requester
from bot.review import evaluation
from bot.review.evaluation import Outcome, Question
from bot.runtime import Runtime
from config import load_config
from db.models import Feedback

HERE = Path(__file__).resolve().parent
DEV = Path(os.environ.get("KBOT_SHARED", HERE.parent.parent / "shared")) / "eval"
MEASURES = ("hit@5", "mrr@10", "answer_keywords", "cited_relevant", "false_abstain")
VOTERS = 3
ADVERSARIES = 5


def paraphrases(dev: dict[str, Question], path: Path) -> list[Question]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            p = json.loads(line)
            out.append(replace(dev[p["of"]], id=p["id"], question=p["question"], line=n))
    return out


class Bench:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.service = runtime.answering
        self.requester = Requester(platform="bench", audiences=runtime.all_audiences)
        self.steps = evaluation.StepLists(runtime.store)

    def ask(self, questions: list[Question]) -> tuple[list[Outcome], list[Answer]]:
        answers: list[Answer] = []

        def answer(q: str, thread: str | None) -> Answer:
            answers.append(self.service.ask(q, self.requester))
            return answers[-1]

        return evaluation.evaluate(questions, answer, self.steps, threads=False), answers

    def vote(self, answer: Answer, vote: str, voters: list[str]) -> None:
        for v in voters:
            reason = "wrong" if vote == "down" else None
            self.runtime.feedback.record(answer.query_id, vote, user=v, reason=reason)

    def clear_votes(self) -> None:
        self.runtime.db.write(lambda s: s.execute(delete(Feedback)), "clear votes")
        if self.runtime.votes is not None:
            self.runtime.votes.invalidate()


def doc_rank(answer: Answer, path: str) -> int | None:
    docs = list(dict.fromkeys(r["path"] for r in answer.retrieved))
    return docs.index(path) + 1 if path in docs else None


def measures(outcomes: list[Outcome]) -> dict[str, Any]:
    s = evaluation.summarize(outcomes)
    return {m: s[m] for m in MEASURES}


def closeness(runtime: Runtime, dev: list[Question], paras: list[Question]) -> str:
    embed = runtime.embedder.embed
    by_id = {q.id: i for i, q in enumerate(dev)}
    vd = embed([q.question for q in dev])
    vp = embed([q.question for q in paras])
    of = [by_id[f"dev-{p.id.split('-')[1]}"] for p in paras]
    pair = sorted(float(vp[k] @ vd[i]) for k, i in enumerate(of))
    sims = vd @ vd.T
    np.fill_diagonal(sims, -1)
    other = vp @ vd.T
    for k, i in enumerate(of):
        other[k, i] = -1
    close = runtime.config.feedback.close
    return (
        f"Question-embedding cosine: a paraphrase to its question min {pair[0]:.3f}, "
        f"median {pair[len(pair) // 2]:.3f}, max {pair[-1]:.3f} "
        f"({sum(p >= close for p in pair)}/{len(pair)} at or over feedback.close {close}); "
        f"the closest distinct dev question to any other {float(sims.max()):.3f}, "
        f"to any paraphrase {float(other.max()):.3f}."
    )


def at_scale(runtime: Runtime, n: int) -> str:
    """How long the votes take with ``n`` of them: a full read, and one question's scores
    (p50/p95 over 200 questions), with random question vectors of the model's size."""
    import time

    from bot.answer.votes import VoteRanking
    from db import Database
    from db.models import QueryRecord

    tmp = tempfile.mkdtemp(prefix="kbot-votes-scale-")
    db = Database(f"sqlite:///{tmp}/votes.db")
    db.migrate()
    rng = np.random.default_rng(7)
    dim = len(runtime.embedder.embed(["x"])[0])
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def seed(s: Any) -> None:
        for i in range(n):
            s.add(
                QueryRecord(
                    id=f"q{i:08d}",
                    platform="bench",
                    question=f"question {i}",
                    answer="",
                    abstained=False,
                    citations=[{"connector": "kb", "path": f"doc{i % 500}.md"}],
                    retrieved=[],
                    latency_ms={},
                    audiences="public",
                    question_vec=vecs[i].tobytes(),
                )
            )
        s.flush()
        for i in range(n):
            down = i % 3 == 0
            s.add(
                Feedback(
                    query_id=f"q{i:08d}",
                    user_id=f"u{i % 300}",
                    vote="down" if down else "up",
                    reason="wrong" if down else None,
                )
            )

    db.write(seed, "seed votes")
    votes = VoteRanking(runtime.config.feedback, db)
    t0 = time.perf_counter()
    votes._load()
    full = (time.perf_counter() - t0) * 1000
    times = []
    for q in rng.normal(size=(200, dim)).astype(np.float32):
        q /= np.linalg.norm(q)
        t0 = time.perf_counter()
        votes.scores(q, "public")
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    db.dispose()
    return (
        f"At scale, {n} votes on {n} answers: a full read {full:.0f} ms (every "
        f"{votes_full_s():.0f} s, and new votes every 5 s); one question's vote scores p50 "
        f"{times[100]:.2f} ms, p95 {times[190]:.2f} ms."
    )


def votes_full_s() -> float:
    from bot.answer.votes import FULL_READ_S

    return FULL_READ_S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--questions", type=Path, default=DEV / "dev_questions.jsonl")
    ap.add_argument("--paraphrases", type=Path, default=HERE / "eval" / "paraphrases.jsonl")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--scale", type=int, default=20000, help="votes for the latency part")
    args = ap.parse_args()
    config = load_config(args.config)
    tmp = tempfile.mkdtemp(prefix="kbot-feedback-bench-")
    storage = config.storage.model_copy(update={"database_url": f"sqlite:///{tmp}/kbot.db"})
    runtime = Runtime(config.model_copy(update={"llm": None, "storage": storage}))
    runtime.db.migrate()
    dev = evaluation.load_questions(args.questions)
    by_id = {q.id: q for q in dev}
    paras = paraphrases(by_id, args.paraphrases)
    voted_ids = {f"dev-{p.id.split('-')[1]}" for p in paras}
    voted = [q for q in dev if q.id in voted_ids]
    held = [q for q in dev if q.id not in voted_ids]
    bench = Bench(runtime)

    before = {name: bench.ask(qs) for name, qs in (("voted", voted), ("paraphrases", paras))}
    before["held in"] = bench.ask(held)
    ups = downs = 0
    for o, a in zip(*before["voted"], strict=True):
        good = o.cited_relevant
        bench.vote(a, "up" if good else "down", [f"voter-{i}" for i in range(VOTERS)])
        ups, downs = ups + good, downs + (not good)
    runtime.votes.invalidate()
    after = {name: bench.ask(qs) for name, qs in (("voted", voted), ("paraphrases", paras))}
    after["held in"] = bench.ask(held)
    moved = sum(
        1
        for _, answers in after.values()
        for a in answers
        for n in a.adjustments
        if n["kind"] == "votes" and n["from"] != n["to"]
    )

    lines = [
        f"One run on {platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d}, feedback: {config.feedback.model_dump()}.",
        "",
        f"Votes: {VOTERS} voters on each of {len(voted)} dev questions ({ups} 👍, {downs} 👎 "
        f"`wrong`); documents moved by votes in the asks after: {moved}.",
        "",
        "| questions | n | " + " | ".join(f"{m} before → after" for m in MEASURES) + " |",
        "|---|---|" + "---|" * len(MEASURES),
    ]
    for name in before:
        b, a = measures(before[name][0]), measures(after[name][0])
        cells = [f"{b[m]} → {a[m]}" for m in MEASURES]
        lines.append(f"| {name} | {len(before[name][0])} | " + " | ".join(cells) + " |")

    # The review queue's confidence threshold: what it would queue of the dev answers.
    below = config.feedback.review_below
    answered = [
        (a.confidence or 0.0, o.cited_relevant)
        for name in ("voted", "held in")
        for o, a in zip(*before[name], strict=True)
        if not a.abstained
    ]
    queued = [right for c, right in answered if c < below]
    wrong = [c for c, right in answered if not right]
    lines += [
        "",
        f"Review queue: feedback.review_below {below} queues {len(queued)} of "
        f"{len(answered)} answered dev questions ({sum(queued)} of them cited a relevant "
        f"document); answered without a relevant citation: {len(wrong)}"
        + (f", confidence {', '.join(f'{c:.3f}' for c in sorted(wrong))}" if wrong else "")
        + f". Answered confidences: min {min(c for c, _ in answered):.3f}, "
        f"10th percentile {sorted(c for c, _ in answered)[len(answered) // 10]:.3f}.",
    ]

    # Adversarial: five voters 👎 a correct first document.
    drops, cited, cases = [], 0, 0
    for q in voted:
        bench.clear_votes()
        _, (a,) = bench.ask([q])
        first = list(dict.fromkeys(r["path"] for r in a.retrieved))[:1]
        if a.abstained or not first or first[0] not in q.relevant:
            continue
        cases += 1
        bench.vote(a, "down", [f"adversary-{i}" for i in range(ADVERSARIES)])
        runtime.votes.invalidate()
        _, (again,) = bench.ask([q])
        rank = doc_rank(again, first[0])
        drops.append((rank or 99) - 1)
        cited += any(c.path == first[0] for c in again.citations)
    bench.clear_votes()
    lines += [
        "",
        f"Adversarial: {ADVERSARIES} voters 👎 `wrong` on a correct first document, "
        f"{cases} questions: places dropped "
        + ", ".join(f"{d}: {drops.count(d)}" for d in sorted(set(drops)))
        + f"; still cited {cited}/{cases}.",
        "",
        closeness(runtime, dev, paras),
        "",
        at_scale(runtime, args.scale),
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    runtime.close()


if __name__ == "__main__":
    main()
