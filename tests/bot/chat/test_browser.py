"""The web chat in a real headless Chromium: ask, read the cited answer, vote 👎 with a reason."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.server import create_app
from tests.bot.servers import (
    ROTATE_DOC,
    ROTATE_TITLE,
    URL_TEMPLATE,
    runbook_connector,
    serve,
    write_runbooks,
)
from tests.conftest import make_config

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; the test fails on any script error in it."""
    context = browser.new_context()
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], f"script errors in the page: {errors}"


def test_ask_read_the_cited_answer_and_vote_it_down_with_a_reason(
    tmp_path: Path, runtime_factory: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    kb = write_runbooks(tmp_path / "kb")
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)]))
    [result] = rt.indexer.sync()
    assert result.ok, result.error

    with serve(create_app(rt)) as url:
        page.goto(url)
        expect(page).to_have_title("kbot")
        page.get_by_label("Question").fill("How do I rotate the password of the message queue?")
        page.get_by_role("button", name="Ask", exact=True).click()

        answer = page.locator(".msg.bot").last
        sources = answer.locator(".sources li")
        expect(sources.first.get_by_role("link")).to_have_text(ROTATE_TITLE)
        expect(sources.first.get_by_role("link")).to_have_attribute(
            "href", URL_TEMPLATE.format(path=ROTATE_DOC)
        )
        expect(sources.first).to_contain_text(f"runbooks: {ROTATE_DOC}")
        marker = answer.get_by_role("link", name=f"Source 1: {ROTATE_TITLE}")
        expect(marker).to_have_text("[1]")
        expect(marker).to_have_attribute("href", URL_TEMPLATE.format(path=ROTATE_DOC))
        # The quoted runbook is rendered as Markdown, not shown as raw source.
        expect(answer.locator("code", has_text="mq-admin passwd --user orders")).to_be_visible()
        expect(answer.locator("ol > li").first).to_be_visible()
        expect(answer).not_to_contain_text("`")
        expect(answer).not_to_contain_text("**")
        query_id = answer.get_attribute("data-query-id")
        assert query_id

        answer.get_by_role("button", name="Not helpful").click()
        answer.get_by_label("What was wrong?").select_option("outdated")
        answer.get_by_label("Details").fill("the vault path moved")
        answer.get_by_role("button", name="Send").click()
        expect(answer.get_by_role("status")).to_have_text("Thanks, your note was recorded.")
        expect(answer.get_by_role("button", name="Not helpful")).to_have_attribute(
            "aria-pressed", "true"
        )

    votes = rt.feedback.for_query(query_id)
    assert [(v.vote, v.reason) for v in votes] == [("down", "outdated: the vault path moved")]


HOSTILE_RUNBOOK = """\
---
url: "javascript:window.kbotPwned = 'source link'"
---
# Escalating a stuck deploy pipeline

If the deploy pipeline is stuck, page the release captain. The status widget shows
<svg onload="window.kbotPwned = 'markup'"> next to each stage, and the
[release dashboard](javascript:window.kbotPwned='markdown%20link') lists the captain.
"""


def test_document_text_and_links_cannot_run_script_in_the_page(
    tmp_path: Path, runtime_factory: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "stuck-deploy.md").write_text(HOSTILE_RUNBOOK, encoding="utf-8")
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)]))
    [result] = rt.indexer.sync()
    assert result.ok, result.error

    with serve(create_app(rt)) as url:
        page.goto(url)
        page.get_by_label("Question").fill("Who do I page when the deploy pipeline is stuck?")
        page.get_by_label("Question").press("Enter")
        answer = page.locator(".msg.bot").last
        expect(answer.locator(".vote")).to_be_visible()

        # The document's HTML is shown as text, and its javascript: links are not links.
        # (An <img> would already be its alt text, made plain at indexing: indexer.markup.)
        expect(answer).to_contain_text("<svg onload=")
        expect(answer.locator("svg[onload]")).to_have_count(0)
        expect(answer.locator(".sources li")).to_contain_text("Escalating a stuck deploy pipeline")
        expect(answer).to_contain_text("the release dashboard lists the captain")
        expect(answer.get_by_role("link", name="release dashboard")).to_have_count(0)
        hrefs = answer.locator("a").evaluate_all("links => links.map(a => a.href)")
        assert not [h for h in hrefs if h.lower().startswith("javascript:")]
        assert page.evaluate("window.kbotPwned") is None


def test_a_runbook_written_for_github_reads_cleanly_in_the_web_chat(
    tmp_path: Path, runtime_factory: Any, page: Any
) -> None:
    """The runbook of test_rendering.py (raw HTML, reference and relative links, a command
    inside a numbered step), as the web chat shows it."""
    from playwright.sync_api import expect

    from tests.bot.chat.test_rendering import DOC, QUESTION, RAW, RUNBOOK

    (tmp_path / "kb" / DOC).parent.mkdir(parents=True)
    (tmp_path / "kb" / DOC).write_text(RUNBOOK, encoding="utf-8")
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(tmp_path / "kb")]))
    assert rt.indexer.sync()[0].ok

    with serve(create_app(rt)) as url:
        page.goto(url)
        page.get_by_label("Question").fill(QUESTION)
        page.get_by_label("Question").press("Enter")
        answer = page.locator(".msg.bot").last
        expect(answer.locator(".vote")).to_be_visible()

        text = answer.inner_text()
        assert not [r for r in RAW if r in text], text
        # Steps 1-3, then the command as code, then steps 4-5 still numbered 4 and 5.
        lists = answer.locator("ol")
        expect(lists.first.locator("li")).to_have_count(3)
        expect(lists.first.locator("li").nth(1)).to_contain_text("Store it: run vault kv put")
        expect(answer.locator("pre code")).to_contain_text(
            "kubectl rollout restart deploy/webhook-sender"
        )
        expect(lists.nth(1)).to_have_attribute("start", "4")
        expect(answer.get_by_role("link", name="delivery dashboard")).to_have_attribute(
            "href", "https://git.example.test/dashboards/webhooks"
        )
        expect(answer.get_by_role("link", name="key console")).to_have_attribute(
            "href", "https://keys.example.test/console"
        )


def test_the_sample_rotation_question_shows_its_steps_in_the_web_chat(
    tmp_path: Path, runtime_factory: Any, page: Any
) -> None:
    """The bundled sample knowledge, as `make run` serves it: "How do I rotate the payments
    API key?" shows steps 1-5 numbered, each command as code, in order."""
    from playwright.sync_api import expect

    from tests.bot.chat.test_rendering import ROTATE_QUESTION, ROTATE_STEPS, SAMPLE

    sample = {"name": "knowledge", "type": "filesystem", "path": str(SAMPLE)}
    rt = runtime_factory(make_config(tmp_path, [sample]))
    assert rt.indexer.sync()[0].ok

    with serve(create_app(rt)) as url:
        page.goto(url)
        page.get_by_label("Question").fill(ROTATE_QUESTION)
        page.get_by_label("Question").press("Enter")
        answer = page.locator(".msg.bot").last
        expect(answer.locator(".vote")).to_be_visible()

        # A command between two steps ends the list; the next one goes on at its number.
        lists = answer.locator("ol").evaluate_all(
            "ls => ls.map(l => [l.start, l.querySelector('li').innerText])"
        )
        at = []
        for n, (start, _) in enumerate(ROTATE_STEPS, 1):
            words = start.split(". ", 1)[1]
            at.append(next(i for i, (s, t) in enumerate(lists) if s == n and words in t))
        assert at == sorted(at), lists
        commands = [c for _, c in ROTATE_STEPS if c]
        code = answer.locator("pre code").all_inner_texts()
        found = [next(i for i, t in enumerate(code) if c in t) for c in commands]
        assert found == sorted(found), code
        expect(answer).to_contain_text("Step 7 and the rollback are in [1].")


def test_a_follow_up_in_the_web_chat_is_answered_in_its_conversation(
    tmp_path: Path, runtime_factory: Any, page: Any
) -> None:
    from playwright.sync_api import expect

    from tests.bot.chat.test_web import FOLLOW_UP, ROTATE_QUESTION

    kb = write_runbooks(tmp_path / "kb")
    rt = runtime_factory(make_config(tmp_path, [runbook_connector(kb)]))
    assert rt.indexer.sync()[0].ok

    def ask(question: str) -> Any:
        n = page.locator(".msg.bot").count()
        page.get_by_label("Question").fill(question)
        page.get_by_label("Question").press("Enter")
        answer = page.locator(".msg.bot").nth(n)
        expect(answer.locator(".vote")).to_be_visible()
        return answer

    with serve(create_app(rt)) as url:
        page.goto(url)
        ask(ROTATE_QUESTION)
        follow = ask(FOLLOW_UP)
        expect(follow).to_contain_text("secret/orders/mq")
        expect(follow.locator(".sources li").first.get_by_role("link")).to_have_text(ROTATE_TITLE)

        # A new conversation forgets the thread: the same words alone find nothing.
        page.get_by_role("button", name="New conversation").click()
        expect(page.locator(".msg")).to_have_count(0)
        alone = ask(FOLLOW_UP)
        expect(alone).to_have_class(re.compile(r"\babstain\b"))
