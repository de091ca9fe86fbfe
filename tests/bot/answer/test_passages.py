"""Passage choice as a ranking model: named features, combined in one place, explainable
and ablatable (bot.answer.passages)."""

from __future__ import annotations

import pytest

from bot.answer import passages
from bot.answer.passages import FEATURES, Block, Query, choose
from indexer.text import terms

RUNBOOK = [
    (
        "## Mitigation\n\n"
        "The quota protects the cluster from running out of disk.\n\n"
        "Defragment each member to reclaim the space:\n\n"
        "```shell\netcdctl defrag --cluster\n```\n\n"
        "Service degradation or unavailability.\n\n"
        "History of the etcd project and who maintains it, at length, with many words "
        "that have nothing to do with the question at all, repeated for size.",
        0,
        "Mitigation",
    ),
    (
        "## Background\n\nThe etcd database keeps every revision until it is compacted. "
        "Compaction runs every five minutes by default.",
        1,
        "Background",
    ),
]
QUESTION = "how do I reclaim etcd space"


def test_the_features_have_unique_names_weights_and_notes() -> None:
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    assert all(f.weight > 0 and f.note for f in FEATURES)


def test_a_chosen_passage_brings_its_command_and_explains_each_share() -> None:
    c = choose(RUNBOOK, QUESTION, budget=120)
    assert "Defragment each member" in c.text and "etcdctl defrag --cluster" in c.text
    assert "History of the etcd project" not in c.text
    rows = c.explain()
    assert rows and {r["block"] for r in rows} >= {"Defragment each member to reclaim the space:"}
    names = {f.name for f in FEATURES}
    for r in rows:
        assert set(r["shares"]) <= names
        if r["shares"]:
            assert sum(r["shares"].values()) == pytest.approx(1.0, abs=0.01)
    lead = next(r for r in rows if r["block"].startswith("Defragment"))
    assert lead["shares"]["question_words"] > 0 and "section_rank" in lead["shares"]
    command = next(r for r in rows if r["block"].startswith("```"))
    assert command["shares"]["code"] > 0


def test_section_rank_needs_evidence() -> None:
    q = Query(frozenset(terms("reclaim space")), {}, None)
    nothing = passages._contributions(Block("Service degradation.", 0, ""), q, FEATURES)
    assert nothing["section_rank"] == 0 and sum(nothing.values()) == 0
    some = passages._contributions(Block("Reclaim the space.", 0, ""), q, FEATURES)
    assert some["section_rank"] == 2.0 and some["question_words"] == len(q.words) > 0


def test_an_ablation_drops_a_feature_from_the_list_and_changes_the_choice() -> None:
    sections = [
        ("Restart the pod to reclaim space.\n\n" + "Reclaim with `kubectl delete pod x`", 0, "")
    ]
    question = "how to reclaim"
    full = choose(sections, question, budget=40)
    assert "kubectl" in full.text  # code lifts the command
    without_code = tuple(f for f in FEATURES if f.name != "code")
    ablated = choose(sections, question, budget=40, features=without_code)
    assert "kubectl" not in ablated.text and "Restart the pod" in ablated.text
    assert all("code" not in r["shares"] for r in ablated.explain())


def test_the_same_question_gives_the_same_choice() -> None:
    a = choose(RUNBOOK, QUESTION, budget=150)
    b = choose(RUNBOOK, QUESTION, budget=150)
    assert a.text == b.text and a.explain() == b.explain()


def test_a_short_document_is_quoted_whole_without_scoring() -> None:
    c = choose([("Just one line.", 0)], "anything", budget=500)
    assert c.text == "Just one line." and c.explain() == []
