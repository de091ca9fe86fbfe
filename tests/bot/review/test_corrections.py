"""Posting a reviewer's correction into the question's conversation (feedback.post_corrections):
questions asked through the real Slack events endpoint (signed, its Web API a local
stand-in) and the real Teams endpoint (emulator mode, its Bot Connector a local capture),
corrected from /reports/review over real HTTP and with `kbot review correct`. The reply
lands in the question's thread attributed to the reviewer; a refusing or unreachable
platform leaves the question queued; with the setting off nothing is offered. On SQLite and
on the real PostgreSQL server."""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.chat.slack import mount
from bot.cli import cli
from bot.review.corrections import Correction, slack_blocks, teams_activity
from bot.review.queue import export_cases
from bot.server import create_app
from db.models import QueryRecord, Review
from tests.bot import teams_fakes as teams
from tests.bot.fake_slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    FakeSlack,
    Loop,
    event_callback,
    mention,
    serving,
    signed_headers,
)
from tests.bot.review.test_pages import TOKEN, fetch
from tests.bot.review.test_review_pages import Session
from tests.bot.review.test_review_queue import (
    MAILBOX_Q,
    PHISHING_DOC,
    VAULT_DOC,
    Kbot,
    kbot_over,
)
from tests.bot.servers import URL_TEMPLATE, send

ENV = {"SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_BOT_TOKEN": BOT_TOKEN}
APP_ENV = ("MICROSOFT_APP_ID", "MICROSOFT_APP_PASSWORD", "MICROSOFT_APP_TYPE")
# Abstains over the runbooks, so it is queued.
GAP_Q = "What flour to water ratio makes a good sourdough starter?"
TEAM_ID = "19:sre-team-general@thread.tacv2"


@dataclass
class Site(Kbot):
    url: str = ""
    folder: Path | None = None
    fake: FakeSlack | None = None
    connector: teams.Connector | None = None
    adapter: Any = None
    loop: Loop | None = None

    def slack_ask(self, question: str, channel: str) -> tuple[dict[str, Any], str]:
        """A mention in ``channel``, answered in its thread; the event and its query id."""
        event = mention(question, channel)
        body = json.dumps(event_callback(event))
        reply = send(
            urllib.request.Request(
                self.url + "slack/events", body.encode(), signed_headers(body), method="POST"
            )
        )
        assert reply.status == 200, reply.body
        self.loop.run(self.adapter.drain())
        assert self.fake.of("chat.postMessage", channel=channel, thread_ts=event["ts"])
        return event, self.only_query(QueryRecord.channel == channel)

    def teams_ask(self, question: str, channel: str, user: str) -> tuple[dict[str, Any], str]:
        """An @-mention in a Teams channel's reply chain, answered; the activity and query id."""
        activity = teams.channel_mention(
            self.connector.url, question, channel=channel, team=TEAM_ID, user=user
        )
        req = urllib.request.Request(
            self.url + "api/messages",
            json.dumps(activity).encode(),
            {"Content-Type": "application/json"},
        )
        assert send(req).status == 200
        return activity, self.only_query(QueryRecord.user_id == f"aad-{user}")

    def only_query(self, where: Any) -> str:
        with self.rt.db.session() as s:
            [qid] = s.scalars(select(QueryRecord.id).where(where)).all()
            return qid

    def review_of(self, qid: str) -> Review | None:
        with self.rt.db.session() as s:
            r = s.get(Review, qid)
            if r is not None:
                s.expunge(r)
            return r

    def queued(self) -> set[str]:
        return {q for i in self.queue.items() for q in i.query_ids}

    def cli_config(self, **feedback: Any) -> Path:
        """A config file for `kbot` over the site's database, posting to the same stand-ins."""
        path = self.folder / f"kbot-{len(feedback)}.yaml"
        cfg = {
            "storage": {
                "data_dir": str(self.folder / "cli-data"),
                "database_url": self.rt.config.storage.database_url,
            },
            "slack": {"api_base_url": self.fake.url + "api/"},
            "feedback": feedback,
            "connectors": [],
        }
        path.write_text(json.dumps(cfg), encoding="utf-8")
        return path

    def kbot(self, config: Path, *args: str):
        env = {**ENV, **dict.fromkeys(APP_ENV, "")}
        return CliRunner().invoke(cli, ["--config", str(config), *args], env=env)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, tmp_path_factory, embedder) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"corrections-{request.param}")
    loop, fake = Loop(), FakeSlack()
    sections = {
        "reports": {"admin_token": TOKEN},
        "feedback": {"post_corrections": True},
        "teams": {"working_after_s": 10},
        "rate_limits": {"per_user": None, "per_channel": None},
    }
    try:
        with serving(loop, fake.app()) as fake_url, teams.connector() as connector:
            fake.url = fake_url
            sections["slack"] = {"api_base_url": fake_url + "api/"}
            with pytest.MonkeyPatch.context() as mp:
                for name in APP_ENV:
                    mp.delenv(name, raising=False)  # Teams in emulator mode
                mp.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
                with kbot_over(request.param, folder, **sections) as k:
                    app = create_app(k.rt)
                    adapter = mount(app, k.rt, env=ENV)
                    with serving(loop, app) as url:
                        yield Site(k.rt, k.kb, url, folder, fake, connector, adapter, loop)
    finally:
        loop.close()


def admin(site: Site) -> Session:
    s = Session(site.url)
    assert s.request("reports?token=" + urllib.parse.quote(TOKEN)).status == 200
    return s


def row_of(page: str, qid: str) -> str:
    start = page.index(f'data-query-id="{qid}"')
    return page[start : page.index("</tr>", start)]


# -- Slack -----------------------------------------------------------------------------------


def test_a_slack_correction_is_a_reply_in_the_thread_attributed_with_the_picked_document(
    site: Site,
) -> None:
    event, qid = site.slack_ask(MAILBOX_Q, "C0FIXSLACK")
    s = admin(site)
    page = s.request("reports/review").body
    row = row_of(page, qid)
    assert f"posted into the Slack thread {event['ts']} in C0FIXSLACK" in row
    assert f'value="runbooks:{PHISHING_DOC}"' in row  # the answer's closest sources
    token = s.token("reports/review")
    text = "Use the Report phishing button in the mail client; do not click its links."
    done = s.request(
        f"reports/review/{qid}/correct",
        {"csrf": token, "text": text, "document": f"runbooks:{PHISHING_DOC}"},
    )
    assert done.status == 303 and done.headers["Location"] == "/reports/review?done=corrected"

    [call] = [
        c
        for c in site.fake.of("chat.postMessage", channel="C0FIXSLACK")
        if "Correction" in c.params["text"]
    ]
    assert call.params["thread_ts"] == event["ts"] and call.token == BOT_TOKEN
    assert call.params["text"].startswith(f"Correction from reports admin: {text}")
    section, context = call.params["blocks"]
    assert section["text"]["text"] == f"*Correction from reports admin:*\n{text}"
    url = URL_TEMPLATE.format(path=PHISHING_DOC)
    assert context["elements"][0]["text"] == f"<{url}|Reporting a phishing email>"

    review = site.review_of(qid)
    assert (review.outcome, review.reviewer, review.note) == ("corrected", "reports admin", text)
    assert (review.connector, review.path) == ("runbooks", PHISHING_DOC)
    assert qid not in site.queued()
    assert "Correction posted" in s.request("reports/review?done=corrected").body
    try:
        # The picked document is pinned, as `pick` pins it, and labels the eval case.
        assert site.rt.curations.get(review.curation_id).path == PHISHING_DOC
        cases, _ = export_cases(site.queue, site.rt.feedback.eval_cases())
        [case] = [c for c in cases if c.get("review", {}).get("query_id") == qid]
        assert case["relevant"] == [PHISHING_DOC] and case["review"]["outcome"] == "corrected"
    finally:
        site.rt.curations.remove(review.curation_id, "lead")


def test_a_correction_without_a_document_leaves_the_queue_but_labels_no_eval_case(
    site: Site,
) -> None:
    event, qid = site.slack_ask("Which sourdough starter does the office kitchen feed?", "C0NODOC")
    s = admin(site)
    token = s.token("reports/review")
    text = "None: ask Lee <!channel>."
    done = s.request(f"reports/review/{qid}/correct", {"csrf": token, "text": text})
    assert done.status == 303
    [call] = [
        c for c in site.fake.of("chat.postMessage", channel="C0NODOC") if "Lee" in c.params["text"]
    ]
    assert call.params["thread_ts"] == event["ts"] and len(call.params["blocks"]) == 1
    # What the reviewer wrote is text, in the message and in its notification: no @channel.
    assert "<!channel>" not in json.dumps(call.params)
    assert call.params["text"] == "Correction from reports admin: None: ask Lee &lt;!channel&gt;."
    assert site.review_of(qid).outcome == "corrected" and qid not in site.queued()
    cases, _ = export_cases(site.queue, site.rt.feedback.eval_cases())
    assert all(c.get("review", {}).get("query_id") != qid for c in cases)


def test_a_refusing_slack_leaves_the_question_queued_and_a_retry_posts_it(
    site: Site, caplog
) -> None:
    event, qid = site.slack_ask(GAP_Q, "C0GONE")
    s = admin(site)
    token = s.token("reports/review")
    site.fake.failures["C0GONE"] = "not_in_channel"
    try:
        with caplog.at_level(logging.WARNING, logger="bot.review.corrections"):
            page = s.request(f"reports/review/{qid}/correct", {"csrf": token, "text": "Fixed."})
        assert page.status == 502
        assert "Slack refused it (not_in_channel: kbot is no longer a member" in page.body
        assert "stays in the review queue" in page.body
        assert site.review_of(qid) is None and qid in site.queued()
        assert any("not posted" in r.getMessage() and qid in r.getMessage() for r in caplog.records)
    finally:
        site.fake.failures.pop("C0GONE")
    again = s.request(f"reports/review/{qid}/correct", {"csrf": token, "text": "Fixed."})
    assert again.status == 303 and site.review_of(qid).outcome == "corrected"


def test_a_review_made_while_the_correction_was_posted_is_said_not_hidden(site: Site) -> None:
    _, qid = site.slack_ask(GAP_Q, "C0RACE")
    s = admin(site)
    token = s.token("reports/review")
    posts = len(site.fake.of("chat.postMessage", channel="C0RACE"))
    hold = site.fake.hold("chat.postMessage")
    try:
        with ThreadPoolExecutor(1) as pool:
            form = {"csrf": token, "text": "Fixed."}
            page = pool.submit(s.request, f"reports/review/{qid}/correct", form)
            site.fake.wait(lambda: len(site.fake.of("chat.postMessage", channel="C0RACE")) > posts)
            site.queue.dismiss(qid, "other lead")  # another reviewer, meanwhile
            hold.release()
            page = page.result(60)
    finally:
        site.fake.holds.pop("chat.postMessage")
    assert page.status == 409
    assert "The correction was posted into the Slack thread" in page.body
    assert "already reviewed: dismissed by other lead" in page.body
    assert site.review_of(qid).outcome == "dismissed"


def test_a_document_the_place_may_not_read_is_refused_before_anything_is_posted(
    site: Site,
) -> None:
    _, qid = site.slack_ask("Where is the sourdough starter's feeding log kept?", "C0PUBLIC")
    s = admin(site)
    token = s.token("reports/review")
    page = s.request(
        f"reports/review/{qid}/correct",
        {"csrf": token, "text": "See the vault runbook.", "document": f"vault:{VAULT_DOC}"},
    )
    assert page.status == 400 and "for the &#39;sre&#39; audience" in page.body
    assert not [
        c
        for c in site.fake.of("chat.postMessage", channel="C0PUBLIC")
        if "vault" in c.params["text"]
    ]
    assert qid in site.queued()


# -- Teams -----------------------------------------------------------------------------------


def test_a_teams_correction_from_the_cli_replies_to_the_question_in_its_conversation(
    site: Site,
) -> None:
    activity, qid = site.teams_ask(GAP_Q, "19:fix-teams@thread.tacv2", "tess")
    before = len(site.connector.calls)
    result = site.kbot(
        site.cli_config(post_corrections=True),
        "review", "correct", qid, "--text", "Ask the bakers' guild.", "--by", "Lee",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "corrected, posted into the Teams channel" in result.output
    [call] = site.connector.calls[before:]
    assert call.method == "POST" and call.status == 200
    assert call.conversation_id == activity["conversation"]["id"]
    assert call.activity_id == activity["id"]  # POST .../activities/{replyToId}
    assert call.body["replyToId"] == activity["id"]
    assert call.body["from"]["id"] == teams.BOT_ID
    assert call.body["channelData"] == {"tenant": {"id": teams.TENANT}}
    [card] = call.body["attachments"]
    texts = [b["text"] for b in card["content"]["body"]]
    assert texts == ["Correction from Lee", "Ask the bakers' guild."]
    review = site.review_of(qid)
    assert (review.outcome, review.reviewer, review.note) == (
        "corrected",
        "Lee",
        "Ask the bakers' guild.",
    )


def test_a_refusing_or_unreachable_bot_connector_leaves_the_question_queued(site: Site) -> None:
    _, qid = site.teams_ask(GAP_Q, "19:gone@thread.tacv2", "uma")
    config = site.cli_config(post_corrections=True)
    site.connector.failures.append((403, None))
    result = site.kbot(config, "review", "correct", qid, "--text", "Fixed.", "--by", "Lee")
    assert result.exit_code == 1
    assert "Teams refused it (HTTP 403): kbot may no longer post there" in result.output
    assert "stays in the review queue" in result.output
    assert site.review_of(qid) is None and qid in site.queued()
    # The Bot Connector moved away (the stored service URL answers nothing).
    with site.rt.db.session() as s:
        q = s.get(QueryRecord, qid)
        q.reply_to = {**q.reply_to, "serviceUrl": "http://127.0.0.1:9/"}
    result = site.kbot(config, "review", "correct", qid, "--text", "Fixed.", "--by", "Lee")
    assert result.exit_code == 1 and "could not be reached" in result.output
    assert site.review_of(qid) is None and qid in site.queued()


# -- where there is nowhere to post, and when it is off ------------------------------------------


def test_web_chat_and_cli_questions_are_not_offered_a_correction(site: Site) -> None:
    # Asked through the web chat's own endpoint, as a browser asks it.
    req = urllib.request.Request(
        site.url + "api/ask",
        json.dumps({"question": "Can I keep sourdough starter in the office freezer?"}).encode(),
        {"Content-Type": "application/json"},
    )
    qid = send(req).json()["query_id"]
    s = admin(site)
    row = row_of(s.request("reports/review").body, qid)
    assert "/correct" not in row
    assert "No correction can be posted: it was asked in the web chat" in row
    token = s.token("reports/review")
    page = s.request(f"reports/review/{qid}/correct", {"csrf": token, "text": "Fixed."})
    assert page.status == 400 and "asked in the web chat" in page.body
    result = site.kbot(
        site.cli_config(post_corrections=True), "review", "correct", qid, "--text", "x"
    )
    assert result.exit_code == 1 and "asked in the web chat" in result.output
    assert qid in site.queued()


def test_without_credentials_401_and_without_a_csrf_token_403(site: Site) -> None:
    _, qid = site.slack_ask(GAP_Q, "C0FORGED")
    token = admin(site).token("reports/review")
    assert (
        fetch(site.url + f"reports/review/{qid}/correct", {}, {"csrf": token, "text": "x"}).status
        == 401
    )
    s = admin(site)
    for form in ({"text": "x"}, {"text": "x", "csrf": "0" * 64}, {"text": "x", "csrf": token}):
        page = s.request(f"reports/review/{qid}/correct", form)
        assert page.status == 403 and "CSRF token is missing or wrong" in page.body
    assert site.fake.of("chat.postMessage", channel="C0FORGED")[-1].params["text"] != "x"
    assert qid in site.queued()


def test_with_post_corrections_off_nothing_is_offered_and_posts_are_refused(
    site: Site, monkeypatch
) -> None:
    _, qid = site.slack_ask(GAP_Q, "C0OFF")
    posted = len(site.fake.of("chat.postMessage", channel="C0OFF"))
    monkeypatch.setattr(site.rt.config.feedback, "post_corrections", False)
    s = admin(site)
    page = s.request("reports/review").body
    assert "Post correction" not in page and "No correction can be posted" not in page
    token = s.token("reports/review")
    refused = s.request(f"reports/review/{qid}/correct", {"csrf": token, "text": "Fixed."})
    assert refused.status == 403 and "feedback.post_corrections: true" in refused.body
    result = site.kbot(site.cli_config(), "review", "correct", qid, "--text", "Fixed.")
    assert result.exit_code == 1
    assert "Posting corrections is off: set feedback.post_corrections: true" in result.output
    assert len(site.fake.of("chat.postMessage", channel="C0OFF")) == posted
    assert qid in site.queued()


# -- the messages ------------------------------------------------------------------------------


def test_the_messages_escape_what_the_reviewer_wrote() -> None:
    c = Correction("Ann <ops>", "Use <!channel> & `x`", "A|B", "https://x.test/a>b")
    [section, context] = slack_blocks(c)
    assert (
        section["text"]["text"]
        == "*Correction from Ann &lt;ops&gt;:*\nUse &lt;!channel&gt; &amp; `x`"
    )
    assert context["elements"][0]["text"] == "<https://x.test/a&gt;b|A¦B>"
    card = teams_activity(c).attachments[0].content
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "A|B", "url": "https://x.test/a>b"}
    ]
    assert teams_activity(Correction("Ann", "x")).attachments[0].content.get("actions") is None
