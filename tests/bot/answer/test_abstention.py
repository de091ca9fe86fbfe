"""Abstaining on named things the knowledge base does not cover, without abstaining on
questions about covered things that also mention their context."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config, synced_runtime


@pytest.fixture
def kb_runtime(tmp_path, runtime_factory):
    return synced_runtime(
        runtime_factory,
        tmp_path,
        {
            "KubeContainerWaiting.md": """\
                # KubeContainerWaiting

                ## Meaning

                A container in a pod has been waiting to start for longer than an hour.

                ## Diagnosis

                Run `kubectl describe pod $POD` and read the events: a missing config map or
                secret, a volume that cannot mount, or an image that cannot be pulled.
                """,
            "databases.md": """\
                # Databases

                The checkout-api keeps its orders in PostgreSQL. Connections go straight to
                the database; raise `max_connections` in the parameter group when it runs out.
                """,
        },
    )


def test_a_question_about_an_alert_the_knowledge_base_lacks_abstains_naming_it(kb_runtime):
    answer = kb_runtime.answering.ask("KubeJobStuckTerminating is firing, what is the runbook?")
    assert answer.abstained
    assert "`KubeJobStuckTerminating`" in answer.text


def test_a_covered_alert_asked_with_an_unknown_pod_state_is_answered(kb_runtime):
    # "ContainerCreating" is nowhere in the knowledge base, but the alert has a runbook.
    answer = kb_runtime.answering.ask(
        "pod stuck in ContainerCreating forever and KubeContainerWaiting is firing. what now?"
    )
    assert not answer.abstained, answer.text
    assert answer.citations[0].path == "KubeContainerWaiting.md"
    assert "kubectl describe pod" in answer.text


def test_a_known_name_that_no_document_is_about_does_not_cover_an_unknown_one(kb_runtime):
    # "checkout-api" is mentioned in passing, but no document is about it; the question
    # is about a pooler setting the knowledge base never mentions.
    answer = kb_runtime.answering.ask(
        "pgbouncer for checkout-api refuses connections (max_client_conn reached). "
        "how do I raise the limit?"
    )
    assert answer.abstained
    assert "`max_client_conn`" in answer.text
    assert "`checkout-api`" not in answer.text


def test_a_word_no_document_uses_is_not_answered_from_the_nearest_ones(kb_runtime):
    # SonarQube is a product of its own, nowhere in the knowledge base: the database page
    # shares "checkout-api" with the question, but answering from it would be answering
    # another question.
    answer = kb_runtime.answering.ask("what sonarqube coverage gate does checkout-api need?")
    assert answer.abstained
    assert "`sonarqube`" in answer.text
    assert answer.citations, "the closest sources are still shown"


def test_a_misspelt_word_is_not_taken_for_an_unknown_one(kb_runtime):
    answer = kb_runtime.answering.ask(
        "what setting do I raise when the checkout-api databse runs out of connections?"
    )
    assert "databse" not in answer.text
    assert not answer.abstained, answer.text
    assert "max_connections" in answer.text


def test_a_word_no_document_uses_in_a_question_close_to_one_is_a_detail(kb_runtime):
    # The passages answer it closely in meaning: "homegrown" is the asker's context.
    answer = kb_runtime.answering.ask(
        "a container in a pod of our homegrown app has been waiting to start for longer "
        "than an hour, how do I find out why?"
    )
    assert not answer.abstained, answer.text
    assert "kubectl describe pod" in answer.text


ALERTING = {
    "alertmanager-security.md": """\
        # Alertmanager access

        Anyone who can reach the Alertmanager web endpoint can read its alerts. They can
        create and resolve alerts, and they can create or delete silences too, so keep
        the endpoint behind the single sign-on proxy.
        """,
    "alertmanager-routing.md": """\
        # Alertmanager routing

        Alertmanager groups alerts by cluster and alert name, then routes each group to
        a receiver: the paging receiver for critical alerts, the chat receiver for the
        rest. Inhibition rules mute warning alerts while a critical alert of the same
        cluster is firing.
        """,
}


@pytest.fixture
def alerting(tmp_path, runtime_factory):
    return synced_runtime(runtime_factory, tmp_path, ALERTING)


def test_a_how_to_whose_documents_only_mention_it_in_passing_says_so(alerting):
    answer = alerting.answering.ask("How do I silence an alert in Alertmanager?")
    assert answer.abstained
    assert answer.text.startswith("The closest sources mention *silence* but don't explain")
    # What they do cover is named, and they are offered as the closest sources, unquoted.
    assert "**Alertmanager access**" in answer.text
    assert "single sign-on proxy" not in answer.text
    assert "alertmanager-security.md" in [c.path for c in answer.citations]


def test_a_how_to_that_a_document_explains_is_answered(tmp_path, runtime_factory):
    docs = dict(ALERTING)
    docs["silences.md"] = """\
        # Silencing alerts

        1. Open the Alertmanager web page and choose **New silence**.
        2. Add a matcher for the alert name, set how long the silence lasts, and save.
        """
    rt = synced_runtime(runtime_factory, tmp_path, docs)
    answer = rt.answering.ask("How do I silence an alert in Alertmanager?")
    assert not answer.abstained, answer.text
    assert answer.citations[0].path == "silences.md"
    assert "New silence" in answer.text


KNOWLEDGE = Path(__file__).resolve().parents[3] / "knowledge"


@pytest.fixture
def sample(tmp_path, runtime_factory):
    """The bundled sample knowledge, as `make run` serves it."""
    rt = runtime_factory(
        make_config(tmp_path, [{"name": "kb", "type": "filesystem", "path": str(KNOWLEDGE)}])
    )
    assert rt.indexer.sync()[0].ok
    return rt


@pytest.mark.parametrize(
    ("question", "path", "step"),
    [
        # A few words, all of them the best document's title: far in meaning from any
        # one passage, but plainly about that page.
        ("How do I deploy a service?", "wiki/deploying-a-service.md", "Merge to `main`"),
        # The title names the subject; "fix" and "returning" ask for its steps.
        ("How do I fix Postgres replica lag?", "runbooks/postgres-replica-lag.md", "patronictl"),
        (
            "Checkout is returning 5xx errors, what should I check?",
            "runbooks/checkout-5xx-spike.md",
            "kubectl",
        ),
    ],
)
def test_a_how_to_about_a_documents_subject_is_answered_with_its_steps(
    sample, question, path, step
):
    answer = sample.answering.ask(question)
    assert not answer.abstained, answer.text
    assert answer.citations[0].path == path
    assert step in answer.text
    assert "1. " in answer.text


def test_a_title_word_alone_does_not_make_an_uncovered_question_confident(sample):
    # "deploy" is in a title, but nothing here is about mobile apps.
    answer = sample.answering.ask("How do I deploy the iOS mobile app to the App Store?")
    assert answer.abstained, answer.text


def test_a_steps_code_block_cut_between_chunks_stays_inside_its_step(sample):
    # Step 4's command starts the runbook's next chunk; chunks are stored stripped.
    answer = sample.answering.ask("How do I fix Postgres replica lag?")
    assert "4. Look for long-running queries" in answer.text
    step4 = answer.text.split("4. Look for long-running queries", 1)[1]
    assert step4.split("\n\n", 2)[1].startswith("   ```bash"), step4[:200]
    assert "\n```" not in answer.text  # no fence falls out of its list item


def test_a_chunk_quoted_after_its_neighbour_does_not_repeat_their_overlap(sample):
    # The deploy page's step 4 is cut between chunks; the next chunk repeats its end.
    answer = sample.answering.ask("How do I roll back a bad deploy?")
    assert answer.text.count("You can follow it with:") <= 1, answer.text
