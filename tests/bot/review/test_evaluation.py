"""`kbot eval`: the measures on hand-made answers whose right numbers are known, then the real
command over a tiny synced knowledge folder (in-process, so the session's model is reused)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from bot.answer.types import Answer, Citation
from bot.cli import cli
from bot.review.evaluation import (
    FIRST_CHARS,
    MEASURES,
    STEP_CHARS,
    EvalError,
    Outcome,
    Question,
    StepList,
    StepLists,
    difference,
    evaluate,
    format_comparison,
    format_result,
    keywords_in,
    load_questions,
    numbered_lists,
    parse_questions,
    percentile,
    summarize,
)
from bot.review.evaluation import run as evaluation_run
from connectors.base import Document
from indexer.chunking import Chunk, Chunker, join_chunks
from indexer.store import VectorStore
from tests.conftest import synced_runtime

# -- hand-made answers -------------------------------------------------------------------------


def chunk(path: str, text: str = "", index: int = 0) -> Chunk:
    return Chunk(
        id=f"kb:{path}:{index}",
        connector="kb",
        doc_id=path,
        index=index,
        text=text,
        heading_path=("T",),
        title="T",
        url=f"file:///{path}",
        audience="public",
        last_modified=datetime(2024, 1, 1, tzinfo=UTC),
    )


def answer(
    paths: list[str],
    *,
    context: list[Chunk] | None = None,
    text: str = "an answer",
    abstained: bool = False,
    cited: Sequence[str] = (),
    total_ms: float = 10.0,
) -> Answer:
    """An Answer whose retrieved chunks come from ``paths``, best first (repeats allowed)."""
    retrieved = [
        {"chunk_id": f"kb:{p}:{i}", "connector": "kb", "path": p, "score": round(1 - i / 100, 2)}
        for i, p in enumerate(paths)
    ]
    citations = [Citation(n, "T", "u", "kb", p) for n, p in enumerate(cited, 1)]
    return Answer(
        "qid",
        "q",
        text,
        abstained,
        citations,
        latency_ms={"total": total_ms},
        retrieved=retrieved,
        context=context if context is not None else [chunk(p) for p in paths],
    )


def q(
    qid: str,
    relevant: list[str],
    kind: str = "lookup",
    keywords: Sequence[str] = (),
) -> Question:
    return Question(qid, f"question {qid}", tuple(relevant), tuple(keywords), kind)


def run(pairs: list[tuple[Question, Answer]]) -> dict[str, Any]:
    replies = {qu.question: a for qu, a in pairs}
    return summarize(evaluate([qu for qu, _ in pairs], lambda text, _thread: replies[text]))


def test_ranking_measures_count_distinct_documents():
    result = run(
        [
            # Distinct documents: x y a z w | b -> a is 3rd, b falls outside the first 5.
            (q("1", ["a", "b"]), answer(["x", "x", "y", "a", "z", "w", "b"])),
            (q("2", ["c"]), answer(["c", "d"])),
            (q("3", ["d"]), answer(["e", "f"])),
        ]
    )
    assert result["hit@5"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["recall@5"] == pytest.approx((0.5 + 1 + 0) / 3, abs=1e-4)
    assert result["mrr@10"] == pytest.approx((1 / 3 + 1 + 0) / 3, abs=1e-4)
    assert result["n"] == 3
    assert list(result) == [*MEASURES, "per_kind", "n"]


def test_mrr_looks_at_ten_documents_and_hit_at_five():
    eleven = [f"d{i}" for i in range(1, 12)]
    at_6 = run([(q("1", ["d6"]), answer(eleven))])
    assert (at_6["hit@5"], at_6["recall@5"], at_6["mrr@10"]) == (
        0.0,
        0.0,
        pytest.approx(1 / 6, abs=1e-4),
    )
    at_11 = run([(q("1", ["d11"]), answer(eleven))])
    assert at_11["mrr@10"] == 0.0


def test_keywords_match_case_insensitively_with_whitespace_collapsed():
    text = "Run `kubectl DESCRIBE\n    pod` first,\tthen read the Logs."
    assert keywords_in(["describe  pod", "LOGS", "liveness"], text) == ["describe  pod", "LOGS"]
    assert keywords_in(["describe pod"], "describepod") == []


def test_context_measures_use_the_first_three_chunks_only():
    context = [
        chunk("a", "restart the pod"),
        chunk("a", "x" * 10, 1),
        chunk("b", "check the logs"),
        chunk("c", "liveness probe"),  # 4th: not given weight by @3
    ]
    result = run(
        [
            (
                q("1", ["a"], keywords=["Restart", "logs", "liveness"]),
                answer(["a", "b", "c"], context=context, text="restart it; read the LOGS"),
            )
        ]
    )
    assert result["context_keywords@3"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["context_chars@3"] == len("restart the pod") + 10 + len("check the logs")
    assert result["answer_keywords"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["answer_chars"] == len("restart it; read the LOGS")


def test_abstention_and_citations():
    result = run(
        [
            # Cited the relevant doc.
            (q("1", ["a"]), answer(["a"], cited=["a"])),
            # Cited only something else.
            (q("2", ["b"]), answer(["b", "c"], cited=["c"])),
            # Abstained: its closest sources do not count as citing.
            (q("3", ["d"]), answer(["d"], cited=["d"], abstained=True)),
            (q("4", [], "unanswerable"), answer(["a"], abstained=True)),
            (q("5", [], "unanswerable"), answer(["a"], cited=["a"])),
        ]
    )
    assert result["cited_relevant"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["false_abstain"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["abstain_accuracy"] == 0.5
    # Retrieval of unanswerable questions does not dilute the retrieval measures.
    assert result["hit@5"] == 1.0

    kinds = result["per_kind"]
    assert list(kinds) == ["lookup", "unanswerable"]
    assert kinds["lookup"]["n"] == 3 and kinds["unanswerable"]["n"] == 2
    assert kinds["lookup"]["abstain_accuracy"] is None
    assert kinds["unanswerable"]["abstain_accuracy"] == 0.5
    for m in MEASURES:
        if m not in ("abstain_accuracy", "latency_ms"):
            assert kinds["unanswerable"][m] is None, m


def test_per_kind_separates_the_groups():
    result = run(
        [
            (q("1", ["a"], "lookup"), answer(["a"])),
            (q("2", ["b"], "procedure"), answer(["x"])),
            (q("3", ["c"], "procedure"), answer(["c"])),
        ]
    )
    assert result["hit@5"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["per_kind"]["lookup"]["hit@5"] == 1.0
    assert result["per_kind"]["procedure"]["hit@5"] == 0.5
    assert result["abstain_accuracy"] is None


def test_latency_percentiles_cover_every_question():
    assert percentile([40.0, 10.0, 30.0, 20.0], 50) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0
    result = run(
        [
            (q("1", ["a"]), answer(["a"], total_ms=10)),
            (q("2", ["a"]), answer(["a"], total_ms=20)),
            (q("3", [], "unanswerable"), answer([], abstained=True, total_ms=30)),
            (q("4", [], "unanswerable"), answer([], abstained=True, total_ms=40)),
        ]
    )
    assert result["latency_ms"] == {"p50": 25.0, "p95": 38.5}


def test_difference_and_tables():
    base = run([(q("1", ["a"]), answer(["a"])), (q("2", ["b"]), answer(["x"]))])
    other = run([(q("1", ["a"]), answer(["a"])), (q("2", ["b"]), answer(["b"]))])
    diff = difference(base, other)
    assert diff["hit@5"] == 0.5 and diff["mrr@10"] == 0.5
    assert diff["abstain_accuracy"] is None
    assert diff["latency_ms"] == {"p50": 0.0, "p95": 0.0}
    assert diff["per_kind"]["lookup"]["hit@5"] == 0.5

    lines = format_comparison(base, other, diff).splitlines()
    assert lines[0].split() == ["measure", "base", "other", "diff"]
    assert ["hit@5", "0.500", "1.000", "+0.500"] in [line.split() for line in lines]
    table = [line.split() for line in format_result(base).splitlines()]
    assert table[0] == ["measure", "all", "lookup"]
    assert ["hit@5", "0.500", "0.500"] in table
    assert ["abstain_accuracy", "-", "-"] in table


def test_report_verdicts():
    pairs = [
        (q("hit", ["a"], keywords=["restart"]), answer(["x", "a"], text="Restart it")),
        (q("miss", ["a"]), answer(["x"])),
        (q("fa", ["a"]), answer(["a"], abstained=True)),
        (q("abst", [], "unanswerable"), answer(["a"], abstained=True)),
        (q("wrong", [], "unanswerable"), answer(["a"])),
    ]
    replies = {qu.question: a for qu, a in pairs}
    outcomes = evaluate([qu for qu, _ in pairs], lambda text, _thread: replies[text])
    reports = [o.report() for o in outcomes]
    assert [r["verdict"] for r in reports] == [
        "hit",
        "miss",
        "false_abstain",
        "abstained",
        "false_answer",
    ]
    first = reports[0]
    assert first["first_relevant_rank"] == 2
    assert first["retrieved"] == [
        {"path": "x", "connector": "kb", "score": 1.0},
        {"path": "a", "connector": "kb", "score": 0.99},
    ]
    assert first["answer_keywords"] == {"found": ["restart"], "missing": []}
    assert reports[1]["first_relevant_rank"] is None


# -- answer_first_keywords and procedure_steps --------------------------------------------------


def test_answer_first_keywords_look_at_the_first_400_characters_only():
    assert FIRST_CHARS == 400
    late = "restart the pod. " + "x" * (FIRST_CHARS - 30) + " then read the logs"
    assert late.index("logs") > FIRST_CHARS and late.index("restart") < FIRST_CHARS
    # "liveness" starts inside the first 400 characters but ends after them.
    edge = "y" * (FIRST_CHARS - 4) + "liveness probe"
    result = run(
        [
            (q("1", ["a"], keywords=["Restart", "logs"]), answer(["a"], text=late)),
            (q("2", ["a"], keywords=["liveness"]), answer(["a"], text=edge)),
            (q("3", ["a"]), answer(["a"], text="no keywords to look for")),
            (
                q("4", [], "unanswerable", ["restart"]),
                answer(["a"], text="restart", abstained=True),
            ),
        ]
    )
    assert result["answer_keywords"] == pytest.approx((1 + 1) / 2, abs=1e-4)
    assert result["answer_first_keywords"] == pytest.approx((0.5 + 0) / 2, abs=1e-4)
    assert result["per_kind"]["lookup"]["answer_first_keywords"] == 0.25
    assert result["per_kind"]["unanswerable"]["answer_first_keywords"] is None


def test_answer_first_keywords_count_abstentions_like_answer_keywords():
    result = run(
        [
            (q("1", ["a"], keywords=["logs"]), answer(["a"], text="logs", abstained=True)),
            (q("2", ["a"], keywords=["logs"]), answer(["a"], text="nothing")),
        ]
    )
    assert result["answer_keywords"] == result["answer_first_keywords"] == 0.5


STEPS_DOC = """\
# Rotate an API token

Tell the team first.

1. Open the [API users](https://signon.example/api_users) page in **Signon**.
2. Choose `Manage tokens` for the
   application's user.

```sh
signon tokens list
```

3. Choose **Add application token**, then copy it somewhere safe.
4. Revoke the old token.

Done: the app uses the new token.
"""
STEPS = (
    "open the api users page in signon.",
    "choose manage tokens for the application",  # 40 characters of the item's text
    "choose add application token, then copy",
    "revoke the old token.",
)
MRKDWN = """\
*Rotate an API token*
1) Open the <https://signon.example/api_users|API users> page in *Signon*.
2) Choose `Manage tokens` for the application's user.
```signon tokens list```
3) Choose *Add application token*, then copy it somewhere safe.
4) Revoke the old token."""
STEP_LINES = [
    "Open the API users page in Signon.",
    "Choose Manage tokens for the application's user.",
    "Choose Add application token, then copy it somewhere safe.",
    "Revoke the old token.",
]


def test_numbered_lists_reads_items_across_continuations_and_code():
    assert numbered_lists(STEPS_DOC) == (StepList(STEPS),)
    assert STEP_CHARS == 40 and len(STEPS[1]) == STEP_CHARS


@pytest.mark.parametrize(
    ("text", "lists"),
    [
        # A heading, or an unindented paragraph after a blank line, ends a list.
        ("1. a\n2. b\n## Next\n3. c\n4. d", (("a", "b"), ("c", "d"))),
        ("1. a\n2. b\n\nProse.\n3. c", (("a", "b"),)),
        # Unindented text right after an item continues it; a bullet does not.
        ("1. a\nmore\n2. b", (("a more", "b"),)),
        ("1. a\n- x\n2. b\n3. c", (("b", "c"),)),
        # Nested items are part of their parent; "1)" and repeated numbers are items.
        ("1) a\n    1. x\n    2. y\n1) b", (("a", "b"),)),
        ("* top\n    1. x\n    2. y\n* next", (("x", "y"),)),
        # Inside code, a numbered line is not an item; one item is not a list.
        ("```\n1. a\n2. b\n```", ()),
        ("1. only one\n\nThe end.", ()),
        # A list's own "..." is counted, so quoting the list whole keeps it.
        ('1. Open the "..." menu\n2. Refresh', (StepList(('open the "..." menu', "refresh"), 1),)),
    ],
)
def test_numbered_lists_definition(text, lists):
    want = tuple(w if isinstance(w, StepList) else StepList(w) for w in lists)
    assert numbered_lists(text) == want


def steps_result(pairs: list[tuple[Question, Answer]], docs: dict[str, str]) -> list[Outcome]:
    """Outcomes whose questions' relevant numbered lists come from ``docs`` (path -> text)."""
    replies = {qu.question: a for qu, a in pairs}

    def steps(question: Question) -> list[StepList]:
        return [s for p in question.relevant for s in numbered_lists(docs.get(p, ""))]

    return evaluate([qu for qu, _ in pairs], lambda text, _thread: replies[text], steps)


def procedure_score(text: str, doc: str = STEPS_DOC) -> float | None:
    [o] = steps_result([(q("p", ["doc"], "procedure"), answer(["doc"], text=text))], {"doc": doc})
    return o.procedure_steps


@pytest.mark.parametrize(
    ("text", "score"),
    [
        (STEPS_DOC, 1.0),
        # Renumbered, reformatted as Slack mrkdwn: the item text is what counts.
        (MRKDWN, 1.0),
        ("Steps:\n" + "\n".join(f"• {line}" for line in STEP_LINES), 1.0),
        # An ellipsis outside the list is not inside it.
        ("Before … then:\n" + "\n".join(STEP_LINES) + "\n\n…\n\nAfterwards.", 1.0),
        # The first step mentioned, elided, then the whole list: that quote counts.
        (f"{STEP_LINES[0]}\n\n…\n\n" + "\n".join(STEP_LINES), 1.0),
        # A step missing, two swapped, or elided between the first and the last.
        ("\n".join(STEP_LINES[:2] + STEP_LINES[3:]), 0.0),
        ("\n".join([STEP_LINES[0], STEP_LINES[2], STEP_LINES[1], STEP_LINES[3]]), 0.0),
        ("\n".join(STEP_LINES[:2]) + "\n\n…\n\n" + "\n".join(STEP_LINES[2:]), 0.0),
        ("\n".join(STEP_LINES[:3]) + " ...\n" + STEP_LINES[3], 0.0),
        ("Rotate the token in Signon.", 0.0),
    ],
)
def test_procedure_steps_keeps_the_items_in_order_without_an_ellipsis(text, score):
    assert procedure_score(text) == score


def test_procedure_steps_allows_the_lists_own_ellipsis():
    doc = '1. Open the "..." menu.\n2. Choose Refresh.\n'
    assert procedure_score('Open the "..." menu.\nChoose Refresh.', doc) == 1.0
    assert procedure_score('Open the "..." menu.\n…\nChoose Refresh.', doc) == 0.0


def test_procedure_steps_is_none_without_a_procedure_or_a_list():
    docs = {"steps": STEPS_DOC, "prose": "# Notes\n\nNo steps here.\n1. one item only\n"}
    outcomes = steps_result(
        [
            (q("lookup", ["steps"], "lookup"), answer(["steps"], text=STEPS_DOC)),
            (q("prose", ["prose"], "procedure"), answer(["prose"], text="No steps here.")),
            (q("kept", ["prose", "steps"], "procedure"), answer(["steps"], text=MRKDWN)),
            (q("cut", ["steps"], "procedure"), answer(["steps"], text=STEP_LINES[0])),
        ],
        docs,
    )
    assert [o.procedure_steps for o in outcomes] == [None, None, 1.0, 0.0]
    assert [o.step_lists for o in outcomes] == [0, 0, 1, 1]
    # A plain callable gives no lists: procedure_steps is not measured.
    plain_run = run([(q("p", ["steps"], "procedure"), answer(["steps"], text=MRKDWN))])
    assert plain_run["procedure_steps"] is None


def test_summary_table_difference_and_report_have_the_new_measures():
    docs = {"steps": STEPS_DOC}
    first = f"Revoke the old token. {'z' * FIRST_CHARS} logs"
    pairs = [
        (q("l", ["a"], "lookup", ["revoke", "logs"]), answer(["a"], text=first)),
        (q("p1", ["steps"], "procedure", ["revoke"]), answer(["steps"], text=MRKDWN)),
        (q("p2", ["steps"], "procedure"), answer(["steps"], text=STEP_LINES[3])),
        (q("p3", ["a"], "procedure"), answer(["a"], text="no list to keep")),
    ]
    outcomes = steps_result(pairs, docs)
    result = summarize(outcomes)
    assert result["answer_first_keywords"] == pytest.approx((0.5 + 1) / 2, abs=1e-4)
    assert result["procedure_steps"] == 0.5
    kinds = result["per_kind"]
    assert kinds["lookup"]["answer_first_keywords"] == 0.5
    assert kinds["lookup"]["procedure_steps"] is None
    assert kinds["procedure"]["answer_first_keywords"] == 1.0
    assert kinds["procedure"]["procedure_steps"] == 0.5
    assert list(result) == [*MEASURES, "per_kind", "n"]

    table = [line.split() for line in format_result(result).splitlines()]
    assert table[0] == ["measure", "all", "lookup", "procedure"]
    assert ["answer_first_keywords", "0.750", "0.500", "1.000"] in table
    assert ["procedure_steps", "0.500", "-", "0.500"] in table

    better = summarize(steps_result([pairs[0], pairs[1], (pairs[2][0], pairs[1][1])], docs))
    diff = difference(result, better)
    assert diff["procedure_steps"] == 0.5
    assert diff["per_kind"]["procedure"]["procedure_steps"] == 0.5
    assert diff["per_kind"]["lookup"]["procedure_steps"] is None
    assert diff["answer_first_keywords"] == 0.0
    lines = [line.split() for line in format_comparison(result, better, diff).splitlines()]
    assert ["procedure_steps", "0.500", "1.000", "+0.500"] in lines

    reports = [o.report() for o in outcomes]
    assert reports[0]["answer_first_keywords"] == {"found": ["revoke"], "missing": ["logs"]}
    assert reports[0]["answer_keywords"] == {"found": ["revoke", "logs"], "missing": []}
    assert [r["procedure_steps"] for r in reports] == [
        {"score": None, "lists": 0},
        {"score": 1, "lists": 1},
        {"score": 0, "lists": 1},
        {"score": None, "lists": 0},
    ]


def test_difference_with_a_result_saved_before_the_new_measures():
    base = run([(q("1", ["a"]), answer(["a"]))])
    old = {k: v for k, v in base.items() if k not in ("answer_first_keywords", "procedure_steps")}
    old["per_kind"] = {
        k: {m: x for m, x in v.items() if m != "procedure_steps"}
        for k, v in base["per_kind"].items()
    }
    diff = difference(old, base)
    assert diff["procedure_steps"] is None and diff["answer_first_keywords"] is None
    assert diff["hit@5"] == 0.0


# -- the numbered lists of an indexed document ------------------------------------------------


def test_join_chunks_drops_the_overlap_and_the_fences_a_cut_adds():
    # The next chunk repeats the end of the one before, its first line only in part.
    assert (
        join_chunks(
            [
                "1. First step, then\n2. Second step here",
                "step, then\n2. Second step here\n3. Third",
            ]
        )
        == "1. First step, then\n2. Second step here\n3. Third"
    )
    # Cut inside a code block: the first chunk's closing fence and the next one's opening
    # fence are not the document's.
    cut = join_chunks(
        [
            "1. Find the pod:\n\n    ```\n    k get pods | grep api\n```",
            "1. Find the pod:\n\n    ```\n    k get pods | grep api\n    ```\n\n2. Open a shell",
        ]
    )
    assert (
        cut == "1. Find the pod:\n\n    ```\n    k get pods | grep api\n    ```\n\n2. Open a shell"
    )
    # No overlap: joined with a blank line; a short repeat ("fi") is not an overlap.
    assert join_chunks(["a\nfi", "fi\nb"]) == "a\nfi\n\nfi\nb"
    # An item's paragraph cut in two gets its indentation back and stays in the item.
    rejoined = join_chunks(["1. Step one:\n\n    Some detail", "More detail.\n\n2. Step two"])
    assert rejoined == "1. Step one:\n\n    Some detail\n\n    More detail.\n\n2. Step two"
    assert [s.items for s in numbered_lists(rejoined)] == [("step one:", "step two")]


def test_join_chunks_rebuilds_the_lists_of_a_chunked_document():
    steps = "\n\n".join(
        f"{n}. Step {n}: run the command for phase {n} and check its output carefully.\n\n"
        f"    ```sh\n    run-phase {n} --verbose --wait\n    ```"
        for n in range(1, 9)
    )
    text = f"# Long procedure\n\nIntro.\n\n{steps}\n\nThe end.\n"
    doc = Document("kb", "long.md", "Long procedure", "file:///long.md", text, datetime.now(UTC))
    chunks = Chunker(chunk_size=300, chunk_overlap=80).split(doc)
    assert len(chunks) >= 3  # the list is cut across chunks
    [steps_list] = numbered_lists(text)
    assert len(steps_list.items) == 8
    assert numbered_lists(join_chunks(c.text for c in chunks)) == (steps_list,)


def test_step_lists_read_each_document_from_the_index_once(tmp_path):
    store = VectorStore(tmp_path / "chroma", "test-model", create=True)
    head, steps = STEPS_DOC.split("\n\n", 1)
    cut = steps.index("3. Choose")
    # Two documents with the same path in two connectors, each list cut across chunks
    # at the same chunk index: chunks are ordered per document, not all together.
    kb = [head, steps[:cut], steps[cut:]]
    wiki = ["# Team", "1. Call the team", "2. Wait for them"]
    chunks = [
        *(chunk("steps.md", text, i) for i, text in reversed(list(enumerate(kb)))),
        *(
            replace(chunk("steps.md", text, i), connector="wiki", id=f"wiki:steps.md:{i}")
            for i, text in enumerate(wiki)
        ),
        chunk("prose.md", "No steps."),
    ]
    store.upsert(chunks, np.random.default_rng(0).random((len(chunks), 4), dtype=np.float32))

    lists = StepLists(store)
    got = lists(q("p", ["steps.md", "prose.md", "missing.md"], "procedure"))
    # Chunks are put back in order, per connector: each copy of the path is one document.
    assert sorted(s.items for s in got) == sorted([STEPS, ("call the team", "wait for them")])
    assert lists(q("l", ["steps.md"], "lookup")) == ()
    store.delete([c.id for c in chunks])
    assert lists.of("steps.md") == got  # read once, then cached
    assert lists.of("prose.md") == ()


# -- the questions file ------------------------------------------------------------------------

GOOD = {
    "id": "q1",
    "question": "How?",
    "relevant": ["a.md"],
    "answer_keywords": ["x"],
    "kind": "lookup",
}


def lines(*rows: Any) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in rows]


def test_parse_questions_reads_every_kind_and_skips_blank_lines():
    rows = [
        {**GOOD, "id": "a"},
        "",
        {**GOOD, "id": "b", "kind": "multi-doc", "relevant": ["a.md", "b.md", "a.md"]},
        {**GOOD, "id": "c", "kind": "unanswerable", "relevant": [], "answer_keywords": []},
    ]
    got = parse_questions(lines(*rows), "q.jsonl")
    assert [(x.id, x.kind, x.line) for x in got] == [
        ("a", "lookup", 1),
        ("b", "multi-doc", 3),
        ("c", "unanswerable", 4),
    ]
    assert got[1].relevant == ("a.md", "b.md")  # duplicates would inflate recall
    assert not got[2].answerable


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "q.jsonl, line 2: not valid JSON"),
        ([1, 2], "q.jsonl, line 2: expected a JSON object"),
        ({"id": "x", "question": "?"}, "missing field(s) relevant, answer_keywords, kind"),
        ({**GOOD, "id": "x", "kind": "trivia"}, "kind 'trivia' is not one of lookup, procedure"),
        ({**GOOD, "id": "x", "relevant": "a.md"}, "'relevant' must be a list"),
        ({**GOOD, "id": "x", "question": " "}, "'question' must be a non-empty string"),
        ({**GOOD, "id": "x", "kind": "unanswerable"}, "must have an empty 'relevant'"),
        ({**GOOD, "id": "x", "relevant": []}, "needs at least one 'relevant'"),
        (GOOD, "q.jsonl, line 2: id 'q1' was already used on line 1"),
    ],
)
def test_parse_questions_says_which_line_is_wrong(row, message):
    with pytest.raises(EvalError) as e:
        parse_questions(lines(GOOD, row), "q.jsonl")
    assert message in str(e.value)
    assert "line 2" in str(e.value)


FIRST = {**GOOD, "id": "first"}
FOLLOW = {
    **GOOD,
    "id": "then",
    "question": "and what if that does not work?",
    "kind": "follow-up",
    "follow_up_of": "first",
}


def test_a_follow_up_names_the_earlier_question_it_follows():
    chain = {**FOLLOW, "id": "after", "follow_up_of": "then"}
    got = parse_questions(lines(FIRST, FOLLOW, chain), "q.jsonl")
    assert [(x.id, x.kind, x.follow_up_of) for x in got] == [
        ("first", "lookup", None),
        ("then", "follow-up", "first"),
        ("after", "follow-up", "then"),
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [FIRST, {**FOLLOW, "follow_up_of": "nope"}],
            "q.jsonl, line 2: follow_up_of 'nope' is not the id of an earlier question",
        ),
        (
            [{**FOLLOW, "follow_up_of": "first"}, FIRST],
            "q.jsonl, line 1: follow_up_of 'first' is not the id of an earlier question",
        ),
        (
            [FIRST, {**FOLLOW, "follow_up_of": "then"}],
            "q.jsonl, line 2: follow_up_of 'then' is not the id of an earlier question",
        ),
        ([FIRST, {**FOLLOW, "follow_up_of": 3}], "line 2: 'follow_up_of' must be the id"),
        (
            [FIRST, {k: v for k, v in FOLLOW.items() if k != "follow_up_of"}],
            "line 2: a follow-up question needs 'follow_up_of'",
        ),
        (
            [FIRST, {**FOLLOW, "kind": "lookup"}],
            "line 2: a follow-up question needs 'follow_up_of', and only a follow-up question",
        ),
    ],
    ids=["unknown", "later", "itself", "not-a-string", "kind-without-it", "it-without-kind"],
)
def test_a_bad_follow_up_of_says_which_line_and_why(rows, message):
    with pytest.raises(EvalError) as e:
        parse_questions(lines(*rows), "q.jsonl")
    assert message in str(e.value)


def test_a_follow_up_is_asked_in_the_thread_of_the_question_it_follows():
    questions = parse_questions(
        lines(
            FIRST,
            {**GOOD, "id": "other"},
            FOLLOW,
            {**FOLLOW, "id": "after", "follow_up_of": "then", "question": "and then?"},
        )
    )
    asked: list[tuple[str, str | None]] = []

    def ask(text: str, thread: str | None) -> Answer:
        asked.append((text, thread))
        return answer(["a.md"])

    outcomes = evaluate(questions, ask)
    first, other, then, after = (thread for _, thread in asked)
    assert first is not None and other is not None and first != other
    assert then == first and after == first
    # Another run starts threads of its own: it never continues this run's.
    evaluate(questions, ask)
    assert asked[4][1] not in (first, other)
    assert {r["id"]: r.get("follow_up_of") for r in (o.report() for o in outcomes)} == {
        "first": None,
        "other": None,
        "then": "first",
        "after": "then",
    }
    result = summarize(outcomes)
    assert result["per_kind"]["follow-up"]["n"] == 2
    assert result["per_kind"]["lookup"]["n"] == 2
    assert "follow-up" in format_result(result).splitlines()[0]

    asked.clear()
    evaluate(questions, ask, threads=False)
    assert [thread for _, thread in asked] == [None] * 4


def test_the_follow_up_dev_file_is_valid_and_names_real_documents():
    from tests.conftest import CORPUS, REPO

    questions = load_questions(REPO / "bench" / "eval" / "followups.jsonl")
    follow_ups = [x for x in questions if x.kind == "follow-up"]
    assert len(follow_ups) >= 10
    assert len({x.follow_up_of for x in follow_ups}) >= 10
    if CORPUS.is_dir():
        missing = [p for x in questions for p in x.relevant if not (CORPUS / p).is_file()]
        assert missing == []


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(EvalError, match="no questions"):
        load_questions(empty)
    with pytest.raises(EvalError, match="cannot read the questions file"):
        load_questions(tmp_path / "nope.jsonl")


# -- the real command --------------------------------------------------------------------------

# Five short documents written for these tests.
DOCS = {
    "runbooks/disk-full.md": """\
# Build agent disk almost full

The BuildAgentDiskFull alert fires when a CI build agent has less than 10% free disk.
Free space with `docker system prune --all --force`, then confirm with `df -h /var/lib/docker`.
If usage stays above 90%, drain the agent from the CI pool and open a ticket for a bigger disk.
""",
    "runbooks/cert-expiry.md": """\
# TLS certificate expiring

The CertificateExpiringSoon alert fires 14 days before a public TLS certificate expires.
Renew it with `certbot renew --cert-name shop.example.com` on the edge proxy and reload nginx.
""",
    "runbooks/queue-backlog.md": """\
# Job queue backlog

When the JobQueueBacklog alert fires, more than 5000 jobs are waiting. Scale the workers with
`kubectl scale deployment/job-worker --replicas=12` and watch the queue depth graph drain.
""",
    "howto/vpn.md": """\
# Connecting to the office VPN

Install WireGuard, import the profile from the IT portal, and connect to vpn.example.internal.
The VPN is needed for the staging cluster and the internal package mirror.
""",
    "howto/expenses.md": """\
# Submitting expenses

Upload receipts to the expenses tool within 30 days of purchase. Your manager approves them,
and payment arrives with the next monthly salary.
""",
}
QUESTIONS = [
    {
        "id": "e1",
        "question": "How many days before expiry does the certificate alert fire?",
        "relevant": ["runbooks/cert-expiry.md"],
        "answer_keywords": ["14 days", "certbot renew"],
        "kind": "lookup",
    },
    {
        "id": "e2",
        "question": "BuildAgentDiskFull fired on a CI build agent, how do I free disk space?",
        "relevant": ["runbooks/disk-full.md"],
        "answer_keywords": ["docker system prune", "df -h"],
        "kind": "procedure",
    },
    {
        "id": "e3",
        "question": "The build agent disk is full and the job queue backlog keeps growing, help",
        "relevant": ["runbooks/disk-full.md", "runbooks/queue-backlog.md"],
        "answer_keywords": ["docker system prune", "kubectl scale"],
        "kind": "multi-doc",
    },
    {
        "id": "e4",
        "question": "What is the recipe for the lemon cake at the summer barbecue?",
        "relevant": [],
        "answer_keywords": [],
        "kind": "unanswerable",
    },
]
CONFIG = """\
storage:
  data_dir: data
answering:
  top_k: {top_k}
connectors:
  - name: kb
    type: filesystem
    path: kb
    schedule: 1h
"""


def kbot(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="kbot")


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory, embedder) -> Path:
    """A synced knowledge folder, a questions file, and two configs over the same index."""
    root = tmp_path_factory.mktemp("eval")
    for name, text in DOCS.items():
        (root / "kb" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "kb" / name).write_text(text, encoding="utf-8")
    (root / "kbot.yaml").write_text(CONFIG.format(top_k=8), encoding="utf-8")
    (root / "narrow.yaml").write_text(CONFIG.format(top_k=1), encoding="utf-8")
    (root / "questions.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in QUESTIONS), encoding="utf-8"
    )
    ok(kbot("--config", str(root / "kbot.yaml"), "sync", "--json"))
    return root


def report_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_eval_json_on_an_easy_set(site):
    result = ok(
        kbot(
            "--config",
            str(site / "kbot.yaml"),
            "eval",
            "--questions",
            str(site / "questions.jsonl"),
            "--json",
        )
    )
    out = json.loads(result.stdout)
    assert list(out) == [*MEASURES, "per_kind", "n"]
    assert out["n"] == 4
    assert out["hit@5"] == 1.0 and out["recall@5"] == 1.0
    assert 0.5 <= out["mrr@10"] <= 1.0
    assert out["abstain_accuracy"] == 1.0 and out["false_abstain"] == 0.0
    assert out["context_keywords@3"] == 1.0  # every document is one short chunk
    assert 0 < out["context_chars@3"] <= sum(len(t) for t in DOCS.values())
    assert out["answer_chars"] > 0 and 0 <= out["answer_keywords"] <= 1
    assert 0 <= out["answer_first_keywords"] <= out["answer_keywords"]
    assert out["procedure_steps"] is None  # the procedure's runbook has no numbered list
    assert out["cited_relevant"] == 1.0
    assert 0 < out["latency_ms"]["p50"] <= out["latency_ms"]["p95"]
    assert list(out["per_kind"]) == ["lookup", "procedure", "multi-doc", "unanswerable"]
    assert out["per_kind"]["unanswerable"]["hit@5"] is None

    report = site / "data" / "eval-report.jsonl"
    assert f"per-question report: {report}" in result.stderr
    rows = report_lines(report)
    assert [r["id"] for r in rows] == ["e1", "e2", "e3", "e4"]
    assert [r["verdict"] for r in rows] == ["hit", "hit", "hit", "abstained"]
    assert rows[0]["retrieved"][0]["path"] == "runbooks/cert-expiry.md"
    assert rows[0]["config"] == str(site / "kbot.yaml")


def test_eval_compare_shows_both_runs_and_the_difference(site, tmp_path):
    report = tmp_path / "compare.jsonl"
    result = ok(
        kbot(
            "eval",
            "--config",
            str(site / "kbot.yaml"),
            "--questions",
            str(site / "questions.jsonl"),
            "--compare",
            str(site / "narrow.yaml"),
            "--report",
            str(report),
            "--json",
        )
    )
    out = json.loads(result.stdout)
    assert set(out) == {"base", "other", "diff"}
    base, other, diff = out["base"], out["other"], out["diff"]
    # One chunk per question can hold only one of the multi-doc question's two documents.
    assert base["recall@5"] == 1.0
    assert other["per_kind"]["multi-doc"]["recall@5"] == 0.5
    assert other["recall@5"] < 1.0
    assert diff["recall@5"] == pytest.approx(other["recall@5"] - 1.0, abs=1e-4)
    assert set(diff) == {*MEASURES, "per_kind"}

    rows = report_lines(report)
    assert [r["config"] for r in rows] == [str(site / "kbot.yaml")] * 4 + [
        str(site / "narrow.yaml")
    ] * 4
    assert all(len(r["retrieved"]) == 1 for r in rows[4:])

    text = ok(
        kbot(
            "--config",
            str(site / "kbot.yaml"),
            "eval",
            "--questions",
            str(site / "questions.jsonl"),
            "--compare",
            str(site / "narrow.yaml"),
        )
    )
    table = [line.split() for line in text.stdout.splitlines()]
    assert ["measure", "base", "other", "diff"] in table
    assert ["recall@5", "1.000", f"{other['recall@5']:.3f}", f"{diff['recall@5']:+.3f}"] in table


def test_eval_text_table(site):
    result = ok(
        kbot(
            "--config",
            str(site / "kbot.yaml"),
            "eval",
            "--questions",
            str(site / "questions.jsonl"),
        )
    )
    table = [line.split() for line in result.stdout.splitlines()]
    assert ["measure", "all", "lookup", "procedure", "multi-doc", "unanswerable"] in table
    assert ["hit@5", "1.000", "1.000", "1.000", "1.000", "-"] in table
    assert ["n", "4", "1", "1", "1", "1"] in table


def test_eval_errors(site, tmp_path):
    config = str(site / "kbot.yaml")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n{oops\n", encoding="utf-8")
    result = kbot("--config", config, "eval", "--questions", str(bad))
    assert result.exit_code == 1
    assert f"{bad}, line 2: not valid JSON" in result.stderr
    assert "Traceback" not in result.output

    missing = kbot("--config", config, "eval", "--questions", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr

    (tmp_path / "empty.yaml").write_text(
        "storage:\n  data_dir: data\nconnectors: []\n", encoding="utf-8"
    )
    empty = kbot(
        "--config",
        str(tmp_path / "empty.yaml"),
        "eval",
        "--questions",
        str(site / "questions.jsonl"),
    )
    assert empty.exit_code == 1
    assert "is empty; run `kbot sync` first" in empty.stderr


def test_run_reads_the_relevant_lists_from_the_index(tmp_path, runtime_factory):
    rt = synced_runtime(
        runtime_factory, tmp_path, {"rotate.md": STEPS_DOC, "notes.md": DOCS["howto/vpn.md"]}
    )
    questions = parse_questions(
        [
            json.dumps(
                {
                    **GOOD,
                    "id": "p",
                    "question": "How do I rotate an API token in Signon?",
                    "relevant": ["rotate.md"],
                    "kind": "procedure",
                }
            ),
            json.dumps(
                {
                    **GOOD,
                    "id": "n",
                    "question": "How do I connect to the office VPN?",
                    "relevant": ["notes.md"],
                    "kind": "procedure",
                }
            ),
            json.dumps(
                {
                    **GOOD,
                    "id": "l",
                    "question": "Which page lists the API users?",
                    "relevant": ["rotate.md"],
                }
            ),
        ]
    )
    steps, prose, lookup = evaluation_run(rt, questions)
    assert (steps.step_lists, prose.step_lists, lookup.step_lists) == (1, 0, 0)
    assert steps.procedure_steps in (0.0, 1.0)
    assert prose.procedure_steps is None and lookup.procedure_steps is None
