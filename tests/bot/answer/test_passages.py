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


def test_a_short_document_is_quoted_whole_and_still_scored() -> None:
    c = choose([("Just one line.", 0)], "anything", budget=500)
    assert c.text == "Just one line." and c.how == "whole"
    # Scored all the same, so a fact answer can lead with the sentence that states it.
    assert [e["block"] for e in c.explain()] == ["Just one line."]


ALERT_RUNBOOK = (
    "# DiskDegraded\n\n"
    "## Meaning\n\nThe disk array of a node is degraded.\n\n"
    "## Impact\n\nThe node could go offline if another disk fails.\n\n"
    "## Diagnosis\n\nOpen a shell on the node and read the array's state:\n\n"
    "```shell\ncat /proc/mdstat\n```\n\n"
    "## Mitigation\n\nCordon and drain the node, then replace the disk."
)


def test_a_how_to_answer_from_a_short_document_starts_at_its_best_section() -> None:
    question = "how do I read the state of the disk array on the node shell?"
    c = choose([(ALERT_RUNBOOK, 0, "")], question, budget=2000, procedure=True)
    assert c.how == "whole"
    # The diagnosis first, the mitigation after it, the background last after a "…"; the
    # title heading, which the citation names, is not moved into the middle.
    assert c.text.startswith("## Diagnosis\n\nOpen a shell on the node")
    at = [c.text.index(s) for s in ("cat /proc/mdstat", "## Mitigation", "…", "## Meaning")]
    assert at == sorted(at) and "# DiskDegraded" not in c.text
    # A fact question gets the document as it is: its lead comes first instead.
    fact = choose([(ALERT_RUNBOOK, 0, "")], question, budget=2000)
    assert fact.text == ALERT_RUNBOOK


def test_a_how_to_answer_keeps_document_order_when_the_best_block_opens_it() -> None:
    question = "what does it mean that the disk array is degraded?"
    c = choose([(ALERT_RUNBOOK, 0, "")], question, budget=2000, procedure=True)
    assert c.text == ALERT_RUNBOOK


STARTUP = "and must match. "
PROCEDURE = [
    (
        "## Meaning\n\nThe signing key expires every year and must be rotated in time.\n\n"
        "## Rotation\n\nTo rotate the signing key:\n\n"
        "1. Create the key:\n\n   ```\nkeyctl create signing\n   ```\n\n"
        "2. Store the signing key in the vault.\n\n"
        "3. Restart the signer:\n\n   ```\nkubectl rollout restart deploy/signer\n   ```\n\n"
        "4. Check the signer logs for the new key id, which is printed at startup "
        + STARTUP
        * 100
        + "\n\n5. Revoke the old signing key.\n\n"
        "**Rollback:** put the old key back.",
        0,
        "Meaning",
    ),
]


def test_a_procedure_is_quoted_whole_from_its_first_step_with_its_introduction() -> None:
    short = [(PROCEDURE[0][0].replace(STARTUP * 100, STARTUP), 0, "")]
    c = choose(short, "how do I rotate the signing key", budget=2000, procedure=True)
    assert c.steps_heading == "Rotation"
    # The list first, introduced, each step with its command, in order, no "…" inside.
    assert c.text.startswith("To rotate the signing key:\n\n1. Create the key:")
    at = [c.text.index(s) for s in ("1. Create", "keyctl create", "3. Restart", "5. Revoke")]
    assert at == sorted(at) and "…" not in c.text[: at[-1]]
    assert c.left_out is None


def test_a_long_procedure_is_cut_between_steps_and_says_what_is_left() -> None:
    c = choose(PROCEDURE, "how do I rotate the signing key", budget=150, procedure=True, source=2)
    assert "3. Restart the signer" in c.text and "kubectl rollout restart" in c.text
    assert "5. Revoke" not in c.text and "4. Check" not in c.text
    assert c.left_out == "Steps 4–5 and the rollback"
    assert "Steps 4–5 and the rollback are in [2]." in c.text


def test_without_procedure_a_list_is_chosen_block_by_block_as_before() -> None:
    c = choose(PROCEDURE, "how do I rotate the signing key", budget=150)
    assert c.steps_heading is None and c.left_out is None


@pytest.mark.parametrize(
    ("question", "steps"),
    [
        ("How do I rotate the payments API key?", True),
        ("what are the steps to fail over the CDN", True),
        ("KubeProxyDown on EKS, known fix?", True),
        ("what am I supposed to check first?", True),
        ("the token expires next week, whats the process to rotate it?", True),
        ("what's the process for a data breach report?", True),
        ("how long are pages cached for?", False),
        ("which process holds the port?", False),
        ("the content team published a fix; how long until it shows?", False),
        ("which channel do we use for incidents?", False),
    ],
)
def test_which_questions_ask_for_steps(question: str, steps: bool) -> None:
    from bot.answer.procedures import asks_for_steps

    assert asks_for_steps(question) is steps


def test_the_line_before_a_procedure_names_it() -> None:
    from bot.answer.procedures import preface

    assert (
        preface("Mitigation", "Rotating keys", 1) == "Mitigation steps, from **Rotating keys** [1]:"
    )
    assert preface("How to purge", "Cache", 2) == "How to purge, from **Cache** [2]:"
    assert preface("", "Cache", 1) == "Steps from **Cache** [1]:"
    long = "2. Update the token in the secrets of the app"
    assert preface(long, "Tokens", 1) == (
        "Steps from **Tokens › Update the token in the secrets of the app** [1]:"
    )


def test_sentences_split_prose_and_lists_but_not_code_or_tables() -> None:
    from bot.answer.passages import sentences

    assert sentences("Pages are cached. The CDN keeps them `5 minutes`.") == [
        "Pages are cached.",
        "The CDN keeps them `5 minutes`.",
    ]
    assert sentences("- one item\n  continued\n- two") == ["one item continued", "two"]
    assert sentences("```\nkubectl get pods\n```") == []
    assert sentences("| a | b |\n| --- | --- |") == []


def test_a_fact_question_leads_with_the_sentence_that_states_it() -> None:
    from bot.answer.passages import lead

    section = (
        "The content delivery network sits in front of every public page of the site.\n\n"
        "Most pages are cached for five minutes, so a published fix shows within five "
        "minutes.\n\nThe network has several points of presence across the continent.",
        0,
        "Caching",
    )
    question = "how long are pages cached for?"
    c = choose([section] * 1, question, budget=150, kind="duration")
    assert lead([(1, c)], question, kind="duration")[0] == (
        "Most pages are cached for five minutes, so a published fix shows within five minutes.",
        1,
    )


def test_a_lead_does_not_say_the_same_sentence_twice() -> None:
    from bot.answer.passages import lead

    # Two example messages of a runbook end alike, one with a typographic apostrophe.
    section = (
        "> We\u2019re looking into an issue with uploads. We\u2019ll update this page as soon "
        "as we know what's causing the uploads to fail.\n\n"
        "> We're looking into a problem with alerts. We'll update this page as soon as we "
        "know what's causing the uploads to fail.",
        0,
        "Messages",
    )
    question = "what should the page say about what's causing the uploads to fail?"
    said = [s for s, _ in lead([(1, choose([section], question, budget=100))], question)]
    assert len(said) == 2 and not any(s.startswith(">") for s in said)
    assert sum("update this page" in s for s in said) == 1


def test_what_a_lead_says_is_not_quoted_again() -> None:
    from bot.answer.passages import without

    passage = "Pages are cached.\n\n…\n\nThe CDN   keeps them.\n\n…\n\nOther words."
    assert without(passage, ["The CDN keeps them."]) == "Pages are cached.\n\n…\n\nOther words."
    assert without("Only this.\n\n…\n\nAnd this.", ["And this."]) == "Only this."
    # A paragraph the lead took one sentence of keeps the others; tables, code and lists
    # have no sentences to take and are kept whole.
    para = "Pages are cached for five minutes. Purge one to see a fix at once."
    rest = "Purge one to see a fix at once."
    assert without(para, ["Pages are cached for five minutes."]) == rest
    table = "| Strategy | Retention |\n| --- | --- |\n| Nightly | 120 days |"
    assert without(f"{para}\n\n{table}", [para]) == table
    # A bulleted list loses the item the lead says, with the lines that continue it; a
    # numbered list is kept whole, so its numbers stay its steps'.
    bullets = "- RDS keeps snapshots\n  for seven days.\n- Nightly dumps go to S3."
    assert without(bullets, ["RDS keeps snapshots for seven days."]) == "- Nightly dumps go to S3."
    assert without(f"{para}\n\n- Nightly dumps go to S3.", ["Nightly dumps go to S3."]) == para
    steps = "1. Stop the job.\n2. Restore the dump."
    assert without(steps, ["Stop the job."]) == steps


def test_a_block_that_only_points_elsewhere_is_not_quoted() -> None:
    section = (
        "## Diagnosis\n\n"
        "See [Debugging Pods](https://kubernetes.io/docs/tasks/debug/#debugging-pods)\n\n"
        "- Check pod events via `kubectl describe pod $POD`.\n"
        "- Check pod logs via `kubectl logs $POD`.\n\n"
        "History: the pods runbook was written in 2019 for the first pods cluster, long ago."
    )
    c = choose([(section, 0, "Diagnosis")], "How do I debug crashing pods?", budget=130)
    assert "kubectl describe pod" in c.text
    assert "See [Debugging Pods]" not in c.text
    # A pointer with words of its own is prose, and is scored like any other block.
    assert not passages._is_pointer("See [Debugging Pods](https://x/y) and restart the pod.")
    assert passages._is_pointer("For more details see [the guide](https://x/y).")


def test_a_procedure_in_numbered_parts_is_begun_at_its_first_part() -> None:
    doc = [
        (
            "### 1. Issue a new token\n\n"
            "1. Open the API users page.\n"
            "1. Choose **Add application token**.\n",
            1,
            "1. Issue a new token",
        ),
        (
            "### 2. Update the token in the app's secret\n\n"
            "1. Run the `sync-token-secrets` job to update the app's token secret.\n"
            "1. Restart the app with `kubectl rollout restart` so it reads the token.\n",
            0,
            "2. Update the token in the app's secret",
        ),
    ]
    question = "How do I rotate the app's token secret?"
    c = choose(doc, question, budget=400, procedure=True)
    assert c.steps_heading == "1. Issue a new token"
    assert c.text.index("Add application token") < c.text.index("sync-token-secrets")
    # Parts that are not numbered are chosen on their merits, as before.
    plain = [(t.replace("### 1. ", "### ").replace("### 2. ", "### "), r, h[3:]) for t, r, h in doc]
    assert choose(plain, question, budget=400, procedure=True).steps_heading.startswith("Update")
    assert passages._part("Step 3: Verify") == 3 and passages._part("2. Update") == 2
    assert passages._part("Rotating the key") is None and passages._part("2026 changes") is None


DEPLOY_PAGE = [
    (
        "# Deploying\n\nThis page says how code reaches production, and how to undo it.\n\n"
        "## Steps\n\n"
        "1. Merge the change to main; the pipeline builds the image, tags it with the "
        "commit, pushes it to the registry and writes the tag into the manifests repository "
        "for staging, which takes up to ten minutes on a busy day.\n\n"
        "2. Check staging, which updates by itself:\n\n   ```\nsmoke-test --env staging\n   ```\n\n"
        "3. Promote the image to production:\n\n   ```\nrelease <sha> --env prod\n   ```",
        1,  # the chunk of the steps ranks below the rollback's
        "",
    ),
    (
        "## Rolling back\n\nIf something looks wrong, roll back first and look later.\n\n"
        "- During a canary, abort it:\n\n  ```\nrollouts abort <service>\n  ```\n\n"
        "- After the rollout, go back to the previous revision:\n\n"
        "  ```\nrollouts undo <service>\n  ```\n\n"
        "  Then revert the tag with `release <previous-sha> --env prod`, so the bad "
        "version is not deployed again.\n\n"
        "## History\n\n" + "The pipeline was introduced years ago by a team long gone. " * 20,
        0,
        "Rolling back",
    ),
]


def test_asked_how_to_undo_the_section_that_names_it_leads_not_another_list() -> None:
    c = choose(DEPLOY_PAGE, "how do I roll back a bad deploy?", budget=600, procedure=True)
    # The numbered deploy steps do not lead: the rollback section does, whole and in
    # order from its first paragraph, with no "…" inside it.
    assert c.steps_heading is None
    assert c.text.startswith("If something looks wrong, roll back first")
    at = [c.text.index(s) for s in ("rollouts abort", "rollouts undo", "previous-sha")]
    assert at == sorted(at) and "…" not in c.text[: at[-1]]
    assert "History" not in c.text
    # Asked how to deploy, the numbered steps lead as before.
    d = choose(DEPLOY_PAGE, "how do I deploy to production?", budget=600, procedure=True)
    assert d.steps_heading == "Steps" and d.text.startswith("1. Merge the change")


# A tutorial: its procedure is its sections in order, each named as an action, with no
# numbered list; the best-scoring block sits in the last section (its curl commands share
# the question's words).
TUTORIAL = [
    (
        "# Securing the API with basic auth\n\n"
        "The server supports basic auth for its web API.\n\n"
        "## Hashing a password\n\n"
        "Pick a username and a password for each user who needs access.\n\n"
        "Generate a bcrypt hash of the password with this script:\n\n"
        "```python\nimport bcrypt\nprint(bcrypt.hashpw(b'secret', bcrypt.gensalt()))\n```\n\n"
        "## Creating web.yml\n\n"
        "Write the hash into a web.yml file:\n\n"
        "```yaml\nbasic_auth_users:\n  admin: $2b$12$hash\n```\n\n"
        "Check it with `promtool check web-config web.yml` before you go on.",
        1,
        "",
    ),
    (
        "## Launching the server\n\n"
        "Start the server with the file:\n\n"
        "```shell\nserver --web.config.file=web.yml\n```\n\n"
        "## Testing\n\n"
        "Request a page with the username and password of a user with basic auth access:\n\n"
        "```shell\ncurl -u admin http://localhost:9090/metrics\n```\n\n"
        + "The reply lists the server's metrics, one per line, with their help texts. " * 8
        + "\n\n## Summary\n\nYou stored a hashed password and launched the server with it.",
        0,
        "Launching the server",
    ),
]


def test_a_tutorial_is_answered_with_its_sections_in_order_not_its_best_section() -> None:
    question = "how do I set up basic auth with a username and password?"
    c = choose(TUTORIAL, question, budget=500, procedure=True)
    assert c.how == "walked" and c.steps_heading == ""
    at = [c.text.index(s) for s in ("bcrypt.hashpw", "basic_auth_users", "--web.config.file")]
    assert at == sorted(at)
    # Each command comes with the sentence that says what it does; the summary has no
    # command, so it is not a step; what did not fit is named, at a section boundary.
    assert "Generate a bcrypt hash" in c.text and "Start the server with the file:" in c.text
    assert "You stored a hashed password" not in c.text
    assert c.text.endswith("is in [1].") or "curl -u admin" in c.text
    assert "…" not in c.text


def test_a_walk_cut_short_names_the_sections_it_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passages, "WALK_CHARS", 300)
    c = choose(TUTORIAL, "how do I set up basic auth?", budget=100, procedure=True)
    assert c.how == "walked"
    assert c.left_out is not None and c.left_out.startswith("Section")
    assert c.text.endswith(f"{c.left_out} {'is' if ' and ' not in c.left_out else 'are'} in [1].")
    named = c.left_out.replace("Sections ", "").replace("Section ", "")
    assert "*Testing*" in named and "Testing" not in c.text.replace(c.left_out, "")


def test_a_walk_quotes_only_the_sections_it_walks() -> None:
    # A section with no command between two steps (a note on choosing the password) is
    # not a step: however well it scores, the walk does not quote it, since it would
    # stand there without its heading.
    aside = (
        "## Choosing a password\n\n"
        + "A basic auth username and password for every user: pick a long password. " * 3
        + "\n\n"
    )
    first, second = TUTORIAL
    tutorial = [
        (first[0].replace("## Creating web.yml", aside + "## Creating web.yml"), 1, ""),
        second,
    ]
    c = choose(
        tutorial,
        "how do I set up basic auth with a username and password?",
        budget=500,
        procedure=True,
    )
    assert c.how == "walked"
    assert "bcrypt.hashpw" in c.text and "basic_auth_users" in c.text
    assert "pick a long password" not in c.text


def test_a_runbook_or_a_section_named_in_the_question_is_not_walked() -> None:
    runbook = [
        (
            t.replace("Hashing a password", "Diagnosis")
            .replace("Creating web.yml", "Impact")
            .replace("Launching the server", "Mitigation")
            .replace("## Testing", "## Meaning"),
            r,
            h.replace("Launching the server", "Mitigation"),
        )
        for t, r, h in TUTORIAL
    ]
    assert (
        choose(runbook, "how do I set up basic auth?", budget=500, procedure=True).how != "walked"
    )
    # Asked how to test it, the *Testing* section is the answer.
    c = choose(TUTORIAL, "how do I test basic auth?", budget=500, procedure=True)
    assert c.how != "walked" and c.text.startswith("Request a page")


@pytest.mark.parametrize(
    ("heading", "action"),
    [
        ("Hashing a password", True),
        ("Install the agent", True),
        ("2. Update the token", True),
        ("How to: Export a CSV", True),
        ("Meaning", False),
        ("Mitigation", False),
        ("DEB installation", False),
        ("Logging", False),
        ("", False),
    ],
)
def test_a_heading_names_an_action(heading: str, action: bool) -> None:
    assert passages.names_action(heading) is action


def test_a_long_list_with_a_long_introduction_is_cut_with_room_for_both() -> None:
    # The introduction is quoted with the steps: counting the steps alone chose more than
    # fit, so the list was skipped, and the cut it had noted ended the answer after the
    # paragraph before it.
    intro = "For the integration environment follow these steps to rotate the token. " * 4
    steps = "\n".join(
        f"1. Rotate the token, part {n}: open the console and press the button {n}." + " x" * 20
        for n in range(1, 21)
    )
    doc = (
        "# Rotating the exporter token\n\n"
        "The exporter's token expires after a year.\n\n"
        f"{intro.strip()}\n\n{steps}\n"
    )
    c = choose([(doc, 0, "")], "how do I rotate the exporter token?", budget=1000, procedure=True)
    assert c.text.startswith("For the integration environment follow these steps")
    assert "part 1:" in c.text and "part 2:" in c.text
    assert c.left_out is not None and c.left_out.startswith("Steps ")
    assert f"{c.left_out} are in [1]." in c.text
    assert len(c.text) <= 1000 * passages.OVERSHOOT + 100
