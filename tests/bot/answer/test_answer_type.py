"""Questions that ask for an amount are answered only from sources that state one, and a
passage is cut from a document's best-ranked sections first."""

from __future__ import annotations

import pytest

from bot.answer import answer_type
from bot.answer.passages import select_from_sections
from tests.conftest import synced_runtime


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How much are we paid for a weekend on-call shift?", answer_type.MONEY),
        ("how much does the CDN cost per month", answer_type.MONEY),
        ("How much memory should the search pod get?", answer_type.NUMBER),
        ("how long are pages cached for?", answer_type.DURATION),
        ("I need fulladmin, how do I get it and for how long?", answer_type.DURATION),
        ("How many replicas does the router run?", answer_type.NUMBER),
        ("How do I restart the router?", None),
        ("Is the cache long-lived?", None),
    ],
)
def test_the_kind_of_amount_a_question_asks_for(question, kind):
    assert answer_type.expected(question) == kind


@pytest.mark.parametrize(
    ("kind", "text", "supplied"),
    [
        (answer_type.MONEY, "The allowance is £150 per weekend.", True),
        (answer_type.MONEY, "Costs are billed at 20 USD per seat.", True),
        (answer_type.MONEY, "Get paid: follow the process on the wiki.", False),
        (answer_type.DURATION, "Pages are cached for 5 minutes.", True),
        (answer_type.DURATION, "Cache-Control: max-age=300", True),
        (answer_type.DURATION, "Access lasts a day.", True),
        (answer_type.DURATION, "Pages are cached by the CDN.", False),
        (answer_type.NUMBER, "The router runs 3 replicas.", True),
        (answer_type.NUMBER, "The router runs several replicas.", False),
    ],
)
def test_whether_a_passage_states_an_amount(kind, text, supplied):
    assert answer_type.supplies(kind, text) is supplied


@pytest.fixture
def rota_runtime(tmp_path, runtime_factory):
    return synced_runtime(
        runtime_factory,
        tmp_path,
        {
            "on-call.md": """\
                # On-call rota

                Engineers join the out-of-hours on-call rota after six months. A weekend
                on-call shift starts on Friday evening and ends on Monday morning.

                ## Getting paid for on-call

                Claim your on-call allowance through the HR portal after each shift.
                """,
            "caching.md": """\
                # Page caching

                The CDN caches pages for 5 minutes, so a published fix is visible everywhere
                within 5 minutes. Purge the cache to show it sooner.
                """,
        },
    )


def test_a_money_question_the_sources_do_not_price_is_not_answered(rota_runtime):
    answer = rota_runtime.answering.ask("How much are we paid for a weekend on-call shift?")
    assert answer.abstained
    assert "don't state an amount of money" in answer.text
    assert answer.citations[0].path == "on-call.md", "the closest source is still shown"


def test_a_duration_question_the_sources_answer_is_answered(rota_runtime):
    answer = rota_runtime.answering.ask("How long does the CDN cache pages for?")
    assert not answer.abstained
    assert "5 minutes" in answer.text
    assert answer.citations[0].path == "caching.md"


def test_a_document_s_best_ranked_section_is_quoted_before_its_other_sections():
    # Two sections share the same words with the question; the budget holds one of them.
    ci = "Continuous deployment: every merged branch is deployed by the CI pipeline."
    manual = "Manual deployment: start the deploy workflow for a branch from a terminal."
    question = "how do I deploy a branch?"
    first = select_from_sections([(ci, 1), (manual, 0)], question, 80)
    assert "Manual deployment" in first and "Continuous" not in first
    first = select_from_sections([(ci, 0), (manual, 1)], question, 80)
    assert "Continuous deployment" in first and "Manual" not in first


@pytest.mark.parametrize(
    ("question", "expected", "preferred"),
    [
        ("how long are pages cached for?", answer_type.DURATION, answer_type.DURATION),
        ("how fast will AWS support get back to us?", None, answer_type.DURATION),
        ("how soon does a published fix show everywhere?", None, answer_type.DURATION),
        ("how often does the backup run?", None, answer_type.DURATION),
        ("How many replicas does the router run?", answer_type.NUMBER, answer_type.NUMBER),
        ("How do I restart the router?", None, None),
    ],
)
def test_how_soon_questions_prefer_a_duration_but_never_demand_one(question, expected, preferred):
    # "how fast is the disk filling up" may want a rate: such a question is not refused
    # for lacking a duration, but passages that state one are quoted first.
    assert answer_type.expected(question) == expected
    assert answer_type.preferred(question) == preferred


SUPPORT = [
    (
        "Our AWS support plan covers production. AWS support is the first point of contact "
        "for the managed cluster; contact AWS support by phone, chat or a support case.",
        0,
    ),
    ("AWS support response times: production system down: 1 hour; impaired: 4 hours.", 1),
]


def test_a_passage_stating_the_asked_for_amount_is_quoted_first():
    question = "how fast will AWS support get back to us?"
    # Word overlap alone prefers the paragraph that repeats "AWS support".
    plain = select_from_sections(SUPPORT, question, 160)
    assert "1 hour" not in plain
    typed = select_from_sections(SUPPORT, question, 160, kind=answer_type.preferred(question))
    assert "1 hour" in typed


def test_prose_sharing_no_word_with_the_question_gets_no_lift_from_its_section():
    question = "how do I purge the CDN cache?"
    best = "Service degradation."  # the top-ranked section's "Impact", say
    lower = "Purge it from the dashboard."
    passage = select_from_sections([(best, 0), (lower, 3)], question, 30)
    assert passage == lower


def test_blocks_already_quoted_are_skipped_unless_nothing_else_is_left():
    quoted = "Restart the router with `kubectl rollout restart deploy/router`."
    own = "Check the router's error rate on the dashboard first."
    question = "how do I restart the router?"
    passage = select_from_sections([(f"{quoted}\n\n{own}", 0)], question, 500, skip={quoted})
    assert passage == own
    # A near-copy with nothing new is quoted again rather than left empty.
    assert select_from_sections([(quoted, 0)], question, 500, skip={quoted}) == quoted


def test_a_question_word_inside_a_compound_name_counts_for_part_of_a_word():
    question = "how can I validate the yaml before pushing?"
    sections = [
        ("Validate the change with `amtool` before pushing it to the repo.", 0),
        ("Validate `alertmanager.yaml` before pushing it to the repository.", 0),
    ]
    # "yaml" occurs only inside the file name; keyword search matches it there too.
    assert "alertmanager.yaml" in select_from_sections(sections, question, 70)


def test_a_paragraph_two_near_copy_runbooks_share_is_quoted_once(tmp_path, runtime_factory):
    shared = (
        "If the cluster cannot add nodes, check that the cluster-autoscaler can create new "
        "nodes: see its logs and its status configmap."
    )
    runbooks = {
        f"{kind.lower()}-mismatch.md": (
            f"# {kind} generation mismatch\n\n## Mitigation\n\n{shared}\n\n{extra}\n"
        )
        for kind, extra in (
            ("Deployment", "Look at the rollout history with `kubectl rollout history`."),
            ("StatefulSet", "Look at the StatefulSet's update strategy and partition."),
        )
    }
    rt = synced_runtime(runtime_factory, tmp_path, runbooks)
    answer = rt.answering.ask("generation mismatch and the cluster cannot add nodes: what now?")
    assert len(answer.citations) == 2, "both runbooks are cited"
    assert answer.text.count("cluster-autoscaler can create new") == 1
    context = "\n".join(c.text for c in answer.context[:2])
    assert context.count("cluster-autoscaler can create new") == 1


def test_a_question_word_in_the_heading_a_block_sits_under_counts_for_part_of_a_word():
    question = "how do I get temporary access to production?"
    sections = [
        ("### Permanent access\n\nOpen a pull request that adds you to `users.yml`.", 0),
        ("### Temporary access\n\nOpen a pull request that adds you to `admins.yml`.", 0),
    ]
    # Both blocks say the same; only the heading above the second says "temporary".
    assert "admins.yml" in select_from_sections(sections, question, 75)
    # The heading a continued section starts under counts as well.
    continued = [
        ("Open a pull request that adds you to `users.yml`.", 0, "Permanent access"),
        ("Open a pull request that adds you to `admins.yml`.", 0, "Temporary access"),
    ]
    assert "admins.yml" in select_from_sections(continued, question, 55)
