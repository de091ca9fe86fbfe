"""Microsoft Teams: Bot Framework activities, as Teams posts them, sent over real HTTP to
``/api/messages`` on the kbot aiohttp app; the bot's replies captured by a local stand-in for
the Bot Connector service. The knowledge base has a public and a restricted connector."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from bot.answer.types import Answer, Citation
from bot.chat.teams import DELIVERY_ATTEMPTS, TeamsCredentials
from bot.chat.teams_cards import (
    ATTACHMENTS_TEXT,
    EMPTY_TEXT,
    WELCOME_TEXT,
    WORKING_TEXT,
    answer_card,
    markdown_blocks,
)
from bot.runtime import Runtime
from bot.server import create_app
from config.loader import ConfigError
from db.models import QueryRecord
from tests.bot import teams_fakes as teams
from tests.bot.servers import (
    ROTATE_DOC,
    ROTATE_TITLE,
    URL_TEMPLATE,
    Reply,
    runbook_connector,
    send,
    serve,
    write_runbooks,
)
from tests.conftest import make_config

SRE_CHANNEL = "19:sre-oncall@thread.tacv2"
SRE_TEAM = "19:sre-team-general@thread.tacv2"
SRE_GROUP = "6f1c2d3e-sre-group"
OTHER_CHANNEL = "19:random@thread.tacv2"
OTHER_TEAM = "19:everyone-general@thread.tacv2"
VAULT_QUESTION = "How do I rotate the vault root token?"
QUEUE_QUESTION = "How do I rotate the password of the message queue?"
VAULT_DOC = (
    "# Rotating the vault root token\n\nThe vault root token is rotated with "
    "`vaultctl rotate-root --quorum 3`. Three key holders must be present.\n"
)
CARD = "application/vnd.microsoft.card.adaptive"
APP_ENV = (
    "MICROSOFT_APP_ID",
    "MICROSOFT_APP_PASSWORD",
    "MICROSOFT_APP_TYPE",
    "MICROSOFT_APP_TENANT_ID",
)


@dataclass
class Bot:
    url: str
    rt: Runtime

    def post(
        self,
        activity: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        data = raw if raw is not None else json.dumps(activity).encode()
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = token
        req = urllib.request.Request(self.url + "api/messages", data=data, headers=headers)
        return send(req)

    def query_of(self, user: str) -> QueryRecord:
        """The one question logged for ``user`` (each test asks as its own user)."""
        with self.rt.db.session() as s:
            [row] = s.scalars(select(QueryRecord).where(QueryRecord.user_id == f"aad-{user}"))
            s.expunge(row)
            return row


@dataclass
class KnowledgeBase:
    tmp: Path
    connectors: list[dict[str, Any]]


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder) -> Iterator[KnowledgeBase]:
    """Runbooks for everyone and a security folder for the ``sre`` audience, synced once."""
    tmp = tmp_path_factory.mktemp("teams")
    sec = tmp / "sec"
    sec.mkdir()
    (sec / "vault.md").write_text(VAULT_DOC)
    connectors = [
        runbook_connector(write_runbooks(tmp / "kb")),
        {"name": "security", "type": "filesystem", "path": str(sec), "audience": "sre"},
    ]
    rt = Runtime(make_config(tmp, connectors))
    try:
        assert all(r.ok for r in rt.indexer.sync())
    finally:
        rt.close()
    yield KnowledgeBase(tmp, connectors)


@contextmanager
def bot_server(
    kb: KnowledgeBase,
    env: dict[str, str] | None = None,
    rate_limits: dict[str, Any] | None = None,
    **teams_config: Any,
):
    """kbot's app over the synced index, with this Teams config and MICROSOFT_APP_* env."""
    cfg = {
        "channels": {SRE_CHANNEL: ["sre"]},
        "escalation_channel": "#ask-sre",
        "working_after_s": 10,
        **teams_config,
    }
    limits = {"rate_limits": rate_limits} if rate_limits is not None else {}
    rt = Runtime(make_config(kb.tmp, kb.connectors, teams=cfg, **limits))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in APP_ENV:
                mp.delenv(name, raising=False)
            for name, value in (env or {}).items():
                mp.setenv(name, value)
            app = create_app(rt)
        with serve(app) as url:
            yield Bot(url, rt)
    finally:
        rt.close()


@pytest.fixture(scope="module")
def bot(kb) -> Iterator[Bot]:
    """Emulator mode (no app id): requests are not authenticated."""
    with bot_server(kb) as b:
        yield b


@pytest.fixture
def connector() -> Iterator[teams.Connector]:
    with teams.connector() as fake:
        yield fake


def card_of(call: teams.Call) -> dict[str, Any]:
    [attachment] = call.body["attachments"]
    assert attachment["contentType"] == CARD
    return attachment["content"]


def card_text(card: dict[str, Any]) -> str:
    return "\n".join(b["text"] for b in card["body"] if b["type"] == "TextBlock")


# -- answering --------------------------------------------------------------------------


def test_a_channel_mention_is_answered_in_its_thread_with_a_cited_card(bot, connector):
    activity = teams.channel_mention(
        connector.url, QUEUE_QUESTION, channel=OTHER_CHANNEL, team=OTHER_TEAM, user="alice"
    )
    reply = bot.post(activity)
    assert reply.status == 200

    # The mention is gone from the question that was asked and logged.
    row = bot.query_of("alice")
    assert row.question == QUEUE_QUESTION
    assert row.platform == "teams"
    assert row.channel == OTHER_CHANNEL

    typing, answer = connector.calls
    assert typing.body["type"] == "typing"
    # Same conversation (the channel thread), as a reply to the question.
    assert answer.method == "POST"
    assert answer.conversation_id == activity["conversation"]["id"]
    assert answer.activity_id == activity["id"]
    assert answer.body["replyToId"] == activity["id"]
    assert answer.body["channelData"] == {"feedbackLoopEnabled": True}
    # The answer's first line as plain text ("Steps, from ..." for this how-to question).
    assert answer.body["summary"].startswith(f"Steps, from {ROTATE_TITLE} 1:")

    card = card_of(answer)
    assert card["type"] == "AdaptiveCard"
    assert float(card["version"]) <= 1.5
    text = card_text(card)
    assert "mq-admin passwd" in text
    assert f"**[1]** [{ROTATE_TITLE}]({URL_TEMPLATE.format(path=ROTATE_DOC)})" in text
    assert f"runbooks · {ROTATE_DOC}" in text
    assert "Extracted word for word from the sources above." in text
    # Teams' own feedback loop is on, so the card has no buttons of its own.
    assert "actions" not in card


def test_a_personal_chat_message_is_answered_without_a_mention(bot, connector):
    activity = teams.personal_message(
        connector.url, "Build agent says no space left on device", user="bob"
    )
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    assert answer.conversation_id == "a:1personal-bob"
    assert "docker system prune" in card_text(card_of(answer))
    row = bot.query_of("bob")
    assert row.question == "Build agent says no space left on device"
    assert row.channel == "a:1personal-bob"


def test_a_redelivered_activity_is_answered_once(bot, connector):
    activity = teams.personal_message(connector.url, QUEUE_QUESTION, user="rita")
    assert bot.post(activity).status == 200
    assert bot.post(activity).status == 200
    assert len(connector.messages()) == 1
    # The same text sent again as a new message is a new question.
    assert bot.post({**activity, "id": activity["id"] + "-2"}).status == 200
    assert len(connector.messages()) == 2


def test_a_group_chat_mention_is_answered(bot, connector):
    activity = teams.group_chat_mention(connector.url, QUEUE_QUESTION, user="gus")
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    assert answer.conversation_id == "19:groupchat-1@thread.v2"
    assert bot.query_of("gus").question == QUEUE_QUESTION


def test_an_abstention_says_so_lists_the_closest_sources_and_the_escalation_channel(bot, connector):
    activity = teams.personal_message(
        connector.url, "What flour to water ratio makes a good sourdough starter?", user="cat"
    )
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    text = card_text(card_of(answer))
    assert "couldn't find anything about `sourdough`" in text  # in no document
    assert "Closest sources" in text
    assert "**[1]** [" in text
    assert "Still stuck? Ask in #ask-sre." in text
    assert bot.query_of("cat").abstained is True


# -- audiences --------------------------------------------------------------------------


def test_a_mapped_channel_reads_its_restricted_connector(bot, connector):
    activity = teams.channel_mention(
        connector.url, VAULT_QUESTION, channel=SRE_CHANNEL, team=OTHER_TEAM, user="dana"
    )
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    text = card_text(card_of(answer))
    assert "vaultctl rotate-root" in text
    assert "security · vault.md" in text
    assert bot.query_of("dana").citations[0]["connector"] == "security"


@pytest.mark.parametrize(
    "place",
    ["other channel", "personal chat", "group chat", "channel of another team"],
)
def test_restricted_documents_never_reach_other_places(bot, connector, place):
    user = "eve" + place.replace(" ", "")
    if place == "personal chat":
        activity = teams.personal_message(connector.url, VAULT_QUESTION, user=user)
    elif place == "group chat":
        activity = teams.group_chat_mention(connector.url, VAULT_QUESTION, user=user)
    else:
        activity = teams.channel_mention(
            connector.url, VAULT_QUESTION, channel=OTHER_CHANNEL, team=OTHER_TEAM, user=user
        )
    assert bot.post(activity).status == 200
    [answer] = connector.messages()
    body = json.dumps(answer.body)
    assert "vaultctl" not in body and "quorum" not in body and "vault.md" not in body
    row = bot.query_of(user)
    assert "security" not in {r["connector"] for r in row.retrieved}


def test_a_team_mapping_covers_all_of_its_channels(kb, connector):
    with bot_server(kb, channels={SRE_GROUP: ["sre"]}) as b:
        activity = teams.channel_mention(
            connector.url,
            VAULT_QUESTION,
            channel=OTHER_CHANNEL,
            team=SRE_TEAM,
            group=SRE_GROUP,
            user="finn",
        )
        assert b.post(activity).status == 200
        [answer] = connector.messages()
        assert "vaultctl rotate-root" in card_text(card_of(answer))


def test_chat_audiences_apply_to_personal_chats(kb, connector):
    with bot_server(kb, chat_audiences=["sre"]) as b:
        assert b.post(teams.personal_message(connector.url, VAULT_QUESTION, user="hal")).status
        [answer] = connector.messages()
        assert "vaultctl rotate-root" in card_text(card_of(answer))


# -- feedback ---------------------------------------------------------------------------


def test_the_feedback_loop_vote_is_stored_against_the_answer_and_sends_nothing(bot, connector):
    question = teams.channel_mention(
        connector.url, QUEUE_QUESTION, channel=OTHER_CHANNEL, team=OTHER_TEAM, user="ivy"
    )
    assert bot.post(question).status == 200
    [answer] = connector.messages()
    sent_id = answer_id(connector)
    calls_before = len(connector.calls)

    vote = teams.feedback_invoke(
        connector.url,
        sent_id,
        "dislike",
        "outdated steps",
        user="ivy",
        conversation=question["conversation"],
    )
    reply = bot.post(vote)
    assert reply.status == 200
    assert reply.body == b""
    assert len(connector.calls) == calls_before  # no message sent

    query_id = bot.query_of("ivy").id
    [stored] = bot.rt.feedback.for_query(query_id)
    assert (stored.vote, stored.reason, stored.user_id) == ("down", "outdated steps", "aad-ivy")

    # Changing one's mind replaces the vote; a like without text has no reason.
    assert (
        bot.post(
            {
                **vote,
                "value": {
                    "actionName": "feedback",
                    "actionValue": {"reaction": "like", "feedback": ""},
                },
            }
        ).status
        == 200
    )
    [stored] = bot.rt.feedback.for_query(query_id)
    assert (stored.vote, stored.reason) == ("up", None)


def answer_id(connector: teams.Connector) -> str:
    """The id the Bot Connector gave the last delivered message (Teams' replyToId for votes)."""
    return connector.messages()[-1].returned_id


def test_a_feedback_loop_vote_after_a_restart_still_finds_its_answer(kb, connector):
    question = teams.personal_message(connector.url, QUEUE_QUESTION, user="uma")
    with bot_server(kb) as before:
        assert before.post(question).status == 200
        query_id = before.query_of("uma").id
    sent_id = answer_id(connector)
    vote = teams.feedback_invoke(
        connector.url, sent_id, "like", None, user="uma", conversation=question["conversation"]
    )
    with bot_server(kb) as after:
        assert after.post(vote).status == 200
        [stored] = after.rt.feedback.for_query(query_id)
    assert stored.vote == "up"


def test_a_vote_on_an_unknown_message_is_refused_not_crashed(bot, connector):
    vote = teams.feedback_invoke(
        connector.url,
        "1999999999999",
        "like",
        None,
        user="jo",
        conversation={"conversationType": "personal", "id": "a:1personal-jo"},
    )
    reply = bot.post(vote)
    assert reply.status == 404
    assert "not an answer of kbot's" in reply.json()["error"]
    assert connector.calls == []


def test_card_buttons_record_votes_where_the_feedback_loop_is_off(kb, connector):
    with bot_server(kb, feedback_loop=False) as b:
        question = teams.personal_message(connector.url, QUEUE_QUESTION, user="kim")
        assert b.post(question).status == 200
        [answer] = connector.messages()
        assert "channelData" not in answer.body or not answer.body["channelData"]
        up, down = card_of(answer)["actions"]
        assert up["type"] == down["type"] == "Action.Submit"
        query_id = b.query_of("kim").id
        assert down["data"]["query_id"] == query_id

        # Teams posts an Action.Submit as a message whose value is the button's data.
        click = teams.personal_message(
            connector.url, "", user="kim", value=down["data"], replyToId=answer_id(connector)
        )
        del click["text"]
        assert b.post(click).status == 200
        [stored] = b.rt.feedback.for_query(query_id)
        assert (stored.vote, stored.user_id) == ("down", "aad-kim")
        assert connector.messages()[-1].body["text"] == "Thanks, your 👎 is recorded."


# -- slow answers -----------------------------------------------------------------------


def test_a_slow_answer_is_preceded_by_a_working_message_then_updated_in_place(kb, connector):
    with bot_server(kb, working_after_s=0) as b:
        activity = teams.personal_message(connector.url, QUEUE_QUESTION, user="lee")
        assert b.post(activity).status == 200
        calls = connector.wait_for(lambda calls: any(c.method == "PUT" for c in calls))
        working = next(c for c in calls if c.body.get("text") == WORKING_TEXT)
        [update] = [c for c in calls if c.method == "PUT"]
        assert working.activity_id == activity["id"]
        assert update.conversation_id == "a:1personal-lee"
        assert update.activity_id == working.returned_id
        assert "mq-admin passwd" in card_text(card_of(update))

        # A vote on the updated message counts for its answer.
        vote = teams.feedback_invoke(
            connector.url,
            update.activity_id,
            "like",
            None,
            user="lee",
            conversation=activity["conversation"],
        )
        assert b.post(vote).status == 200
        [stored] = b.rt.feedback.for_query(b.query_of("lee").id)
        assert stored.vote == "up"


def test_a_throttled_update_is_retried(kb, connector):
    connector.failures = [(200, None), (429, "0")]  # the working message passes, the update not
    with bot_server(kb, working_after_s=0) as b:
        activity = teams.personal_message(connector.url, QUEUE_QUESTION, user="una")
        assert b.post(activity).status == 200
        connector.wait_for(lambda calls: any(c.method == "PUT" and c.status == 200 for c in calls))
        assert [c.status for c in connector.calls if c.method == "PUT"] == [429, 200]


# -- bad input --------------------------------------------------------------------------


def test_an_empty_mention_gets_a_hint_and_asks_nothing(bot, connector):
    activity = teams.channel_mention(
        connector.url, "", channel=OTHER_CHANNEL, team=OTHER_TEAM, user="max"
    )
    assert bot.post(activity).status == 200
    [hint] = connector.messages()
    assert hint.body["text"] == EMPTY_TEXT
    with bot.rt.db.session() as s:
        assert s.scalars(select(QueryRecord).where(QueryRecord.user_id == "aad-max")).all() == []


def test_an_attachment_without_text_is_explained(bot, connector):
    activity = teams.personal_message(
        connector.url,
        "",
        user="ned",
        attachments=[
            {"contentType": "image/*", "contentUrl": "https://example.test/screenshot.png"}
        ],
    )
    assert bot.post(activity).status == 200
    [reply] = connector.messages()
    assert reply.body["text"] == ATTACHMENTS_TEXT


def test_being_added_to_a_team_sends_a_short_welcome(bot, connector):
    activity = teams.bot_installed_in_team(
        connector.url, channel=SRE_CHANNEL, team=SRE_TEAM, user="olga"
    )
    assert bot.post(activity).status == 200
    [welcome] = connector.messages()
    assert welcome.body["text"] == WELCOME_TEXT
    assert welcome.conversation_id == SRE_TEAM

    # Someone else joining is not greeted (and not looked up).
    other = {**activity, "membersAdded": [{"id": "29:1newcomer"}]}
    assert bot.post(other).status == 200
    assert len(connector.calls) == 1


@pytest.mark.parametrize(
    "name, value",
    [
        ("composeExtension/queryLink", {"url": "https://x.test"}),
        ("kbot/somethingElse", {}),
        ("message/submitAction", {"actionName": "custom", "actionValue": {}}),
    ],
)
def test_unknown_invokes_get_an_error_status(bot, connector, name, value):
    activity = teams.feedback_invoke(
        connector.url,
        "1",
        "like",
        None,
        user="pat",
        conversation={"conversationType": "personal", "id": "a:1personal-pat"},
    )
    reply = bot.post({**activity, "name": name, "value": value})
    assert reply.status == 501
    assert connector.calls == []


def test_a_huge_message_is_refused_with_the_limit(bot, connector):
    words = "why does the message queue password rotation fail " * 1500  # ~75 KB, twice
    activity = teams.channel_mention(
        connector.url, words, channel=OTHER_CHANNEL, team=OTHER_TEAM, user="wes"
    )
    assert len(json.dumps(activity)) > 100_000
    assert bot.post(activity).status == 200
    [reply] = connector.messages()
    assert "the limit is 2000" in reply.body["text"]


def test_an_activity_larger_than_the_bot_connector_allows_is_a_413(bot):
    reply = bot.post(raw=b'{"type": "message", "text": "' + b"x" * 600_000 + b'"}')
    assert reply.status == 413


@pytest.mark.parametrize(
    "raw, content_type",
    [
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (b'{"text": "no type"}', "application/json"),
        (
            b'{"type": "message", "text": "hi", "channelId": "msteams",'
            b' "conversation": {"id": "a:1"}}',
            "application/json",
        ),
        (
            b'{"type": "message", "serviceUrl": "http://127.0.0.1:9/", "channelId": "msteams"}',
            "application/json",
        ),
        (b"type=message", "application/x-www-form-urlencoded"),
    ],
)
def test_a_malformed_activity_is_a_400(bot, raw, content_type):
    reply = bot.post(raw=raw, content_type=content_type)
    assert reply.status == 400
    assert reply.json()["error"]


def test_a_throttling_connector_is_retried(bot, connector):
    connector.failures = [(429, "0")]
    activity = teams.personal_message(connector.url, QUEUE_QUESTION, user="quin")
    assert bot.post(activity).status == 200
    statuses = [c.status for c in connector.calls if c.body["type"] == "message"]
    assert statuses == [429, 200]
    assert "mq-admin passwd" in card_text(card_of(connector.messages()[0]))


def test_a_failing_connector_is_given_up_on_and_the_question_still_logged(bot, connector):
    connector.failures = [(500, None)] * 10
    activity = teams.personal_message(connector.url, QUEUE_QUESTION, user="rex")
    assert bot.post(activity).status == 200
    attempts = [c for c in connector.calls if c.body["type"] == "message"]
    assert len(attempts) == DELIVERY_ATTEMPTS
    assert all(c.status == 500 for c in attempts)
    assert bot.query_of("rex").question == QUEUE_QUESTION
    # The server carries on.
    connector.failures = []
    assert bot.post(teams.personal_message(connector.url, QUEUE_QUESTION, user="rex2")).status
    assert connector.messages()


def test_an_unreachable_service_url_is_given_up_on(bot, connector):
    activity = teams.personal_message("http://127.0.0.1:9/", QUEUE_QUESTION, user="ray")
    assert bot.post(activity).status == 200
    assert bot.query_of("ray").question == QUEUE_QUESTION


# -- authentication ---------------------------------------------------------------------

APP_ID = "00000000-0000-0000-0000-00000000cafe"
SECURED = {"MICROSOFT_APP_ID": APP_ID, "MICROSOFT_APP_PASSWORD": "not-a-real-secret"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[teams.TokenIssuer]:
    with teams.token_issuer() as t:
        yield t


@pytest.fixture(scope="module")
def secured(kb, issuer) -> Iterator[Bot]:
    with bot_server(kb, env=SECURED, openid_metadata_url=issuer.metadata_url) as b:
        yield b


def _welcome_someone_else(service_url: str) -> dict:
    # Handling it makes no outbound call, so it needs no token from Entra ID.
    activity = teams.bot_installed_in_team(
        service_url, channel=SRE_CHANNEL, team=SRE_TEAM, user="sam"
    )
    return {**activity, "membersAdded": [{"id": "29:1someone"}]}


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer not.a.jwt", "Bearer", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 40],
)
def test_with_an_app_id_requests_without_a_valid_token_are_401(secured, connector, header):
    reply = secured.post(_welcome_someone_else(connector.url), token=header)
    assert reply.status == 401
    assert connector.calls == []


def test_a_token_signed_by_the_bot_framework_key_is_accepted(secured, issuer, connector):
    token = issuer.token(APP_ID, connector.url)
    reply = secured.post(_welcome_someone_else(connector.url), token=f"Bearer {token}")
    assert reply.status == 200


@pytest.mark.parametrize(
    "problem",
    [
        "another app",
        "another service url",
        "expired",
        "another key",
        "unknown key id",
        "another issuer",
    ],
)
def test_tokens_that_are_not_for_this_bot_are_401(secured, issuer, connector, problem):
    claims: dict[str, Any] = {}
    app_id, service_url = APP_ID, connector.url
    if problem == "another app":
        app_id = "11111111-2222-3333-4444-555555555555"
    elif problem == "another service url":
        service_url = "https://smba.trafficmanager.net/emea/"
    elif problem == "expired":
        claims = {"exp": 1_000_000_000, "nbf": 999_999_000}
    elif problem == "another issuer":
        claims = {"iss": "https://evil.example.test"}
    if problem in ("another key", "unknown key id"):
        kid = issuer.kid if problem == "another key" else "not-a-published-key"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = teams.TokenIssuer(issuer.metadata_url, kid, key).token(app_id, service_url)
    else:
        token = issuer.token(app_id, service_url, **claims)
    reply = secured.post(_welcome_someone_else(connector.url), token=f"Bearer {token}")
    assert reply.status == 401


def test_unreachable_signing_keys_are_a_503_not_a_pass(kb, issuer, connector):
    dead = "http://127.0.0.1:9/openidconfiguration"
    with bot_server(kb, env=SECURED, openid_metadata_url=dead) as b:
        token = issuer.token(APP_ID, connector.url)
        reply = b.post(_welcome_someone_else(connector.url), token=f"Bearer {token}")
        assert reply.status == 503
        assert b.post(_welcome_someone_else(connector.url)).status == 401


def test_emulator_mode_accepts_requests_without_a_token_but_not_garbage(bot, connector):
    assert bot.post(_welcome_someone_else(connector.url)).status == 200
    assert bot.post(_welcome_someone_else(connector.url), token="Bearer not.a.jwt").status == 401


# -- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, missing",
    [
        ({"MICROSOFT_APP_ID": APP_ID}, "MICROSOFT_APP_PASSWORD"),
        ({"MICROSOFT_APP_PASSWORD": "s3cret"}, "MICROSOFT_APP_ID"),
        ({**SECURED, "MICROSOFT_APP_TYPE": "SingleTenant"}, "MICROSOFT_APP_TENANT_ID"),
        (
            {"MICROSOFT_APP_ID": APP_ID, "MICROSOFT_APP_TYPE": "UserAssignedMSI"},
            "MICROSOFT_APP_TENANT_ID",
        ),
        ({**SECURED, "MICROSOFT_APP_TYPE": "Personal"}, "MICROSOFT_APP_TYPE='Personal'"),
    ],
)
def test_incomplete_credentials_stop_the_server_with_a_message(env, missing):
    with pytest.raises(ConfigError) as e:
        TeamsCredentials.from_env(env)
    assert missing in str(e.value)
    assert "not-a-real-secret" not in str(e.value) and "s3cret" not in str(e.value)


def test_the_app_is_not_built_with_incomplete_credentials(kb, monkeypatch):
    for name in APP_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MICROSOFT_APP_ID", APP_ID)
    rt = Runtime(make_config(kb.tmp, kb.connectors))
    try:
        with pytest.raises(ConfigError, match="MICROSOFT_APP_PASSWORD"):
            create_app(rt)
    finally:
        rt.close()


def test_teams_audiences_in_config_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"teams\.channels\.19:x@thread\.tacv2"):
        make_config(tmp_path, teams={"channels": {"19:x@thread.tacv2": ["sre team"]}})
    with pytest.raises(ConfigError, match="working_after_s"):
        make_config(tmp_path, teams={"working_after_s": 20})


def test_credentials_are_read_from_the_environment():
    env = {**SECURED, "MICROSOFT_APP_TYPE": "singletenant", "MICROSOFT_APP_TENANT_ID": "t-1"}
    creds = TeamsCredentials.from_env(env)
    assert (creds.app_id, creds.app_type, creds.tenant_id) == (APP_ID, "SingleTenant", "t-1")
    assert not creds.emulator_mode
    assert "not-a-real-secret" not in repr(creds)
    assert TeamsCredentials.from_env({}).emulator_mode


# -- the card's Markdown ----------------------------------------------------------------


def test_markdown_teams_cannot_render_is_rewritten_for_the_card():
    text = (
        "From **Runbook** [1]:\n\n## Steps\n\n> The queue password is kept\n> in the vault.\n\n"
        "Run this:\n\n```sh\nmq-admin passwd --user orders\nsystemctl restart x\n```\n\n"
        "- first item\n- second item that\n  wraps"
    )
    blocks = markdown_blocks(text)
    assert [b.get("fontType") for b in blocks] == [None, "Monospace", None]
    assert blocks[0]["text"] == (
        "From **Runbook** [1]:\n\n**Steps**\n\n"
        "The queue password is kept in the vault.\n\nRun this:"
    )
    assert blocks[1]["text"] == "mq-admin passwd --user orders\nsystemctl restart x"
    assert blocks[2]["text"] == "- first item\n- second item that wraps"
    assert all(b["wrap"] for b in blocks)


def test_citation_titles_and_urls_cannot_break_their_links():
    answer = Answer(
        query_id="q1",
        question="q",
        text="x [1] [2]",
        abstained=False,
        citations=[
            Citation(1, "Deploys [beta]", "https://wiki.test/a page (old)", "wiki", "a.md"),
            Citation(2, "Local notes", "file:///srv/notes/b.md", "notes", "b.md", "Setup"),
        ],
    )
    text = card_text(answer_card(answer))
    assert "**[1]** [Deploys (beta)](https://wiki.test/a%20page%20%28old%29)" in text
    assert "**[2]** Local notes" in text and "file://" not in text
    assert "notes · b.md · Setup" in text


@pytest.mark.parametrize(
    "mode, error, line",
    [
        ("generated", None, "Generated by a language model from the sources above"),
        ("extractive", "The knowledge index is unavailable", "a service kbot depends on failed"),
    ],
)
def test_the_card_says_how_the_answer_was_made(mode, error, line):
    answer = Answer("q2", "q", "text", False, [], mode=mode, error=error)
    assert line in card_text(answer_card(answer))


def test_other_mentions_keep_their_names_in_the_question(bot, connector):
    activity = teams.channel_mention(
        connector.url, "", channel=OTHER_CHANNEL, team=OTHER_TEAM, user="vic"
    )
    activity["text"] = "<at>kbot</at> how does <at>Ann Lee</at> rotate the message queue password?"
    activity["entities"].append(
        {
            "type": "mention",
            "mentioned": {"id": "29:1ann", "name": "Ann Lee"},
            "text": "<at>Ann Lee</at>",
        }
    )
    assert bot.post(activity).status == 200
    assert bot.query_of("vic").question == "how does Ann Lee rotate the message queue password?"


# -- packaging --------------------------------------------------------------------------

TEAMS_PACKAGE = Path(__file__).resolve().parents[3] / "config" / "teams"


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """Width, height and RGBA pixels of an 8-bit RGBA PNG without filters, as written here."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    assert (depth, color_type) == (8, 6)
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 4 * width
    pixels = []
    for y in range(height):
        row = raw[y * stride : (y + 1) * stride]
        assert row[0] == 0  # no filter
        pixels += [tuple(row[1 + 4 * x : 5 + 4 * x]) for x in range(width)]
    return width, height, pixels


def test_the_teams_app_package_template_is_complete():
    manifest = json.loads((TEAMS_PACKAGE / "manifest.json").read_text())
    assert float(manifest["manifestVersion"]) >= 1.16
    assert manifest["id"] == "${{MICROSOFT_APP_ID}}"
    [bot] = manifest["bots"]
    assert bot["botId"] == "${{MICROSOFT_APP_ID}}"
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    assert bot["supportsFiles"] is False
    for command_list in bot["commandLists"]:
        for command in command_list["commands"]:
            assert len(command["title"]) <= 32 and len(command["description"]) <= 128
    # Follow-ups without a new mention need the channel's messages (resource-specific consent).
    rsc = manifest["authorization"]["permissions"]["resourceSpecific"]
    assert {"name": "ChannelMessage.Read.Group", "type": "Application"} in rsc
    assert manifest["webApplicationInfo"]["id"] == "${{MICROSOFT_APP_ID}}"
    assert len(manifest["name"]["short"]) <= 30
    assert len(manifest["description"]["short"]) <= 80
    assert len(manifest["description"]["full"]) <= 4000

    width, height, pixels = png_pixels(TEAMS_PACKAGE / manifest["icons"]["color"])
    assert (width, height) == (192, 192)
    assert all(a == 255 for *_, a in pixels)
    width, height, pixels = png_pixels(TEAMS_PACKAGE / manifest["icons"]["outline"])
    assert (width, height) == (32, 32)
    # White on transparent: every visible pixel is white, and the background is clear.
    assert all((r, g, b) == (255, 255, 255) for r, g, b, a in pixels if a)
    assert pixels[0][3] == 0 and any(a == 255 for *_, a in pixels)


# -- follow-ups ---------------------------------------------------------------------------

# Alone this finds nothing confident in the test runbooks; in the reply chain of
# QUEUE_QUESTION it asks where the new queue password goes (secret/orders/mq).
FOLLOW_UP = "where do I store it afterwards?"


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_a_reply_in_the_chain_of_an_answer_is_a_follow_up(
    bot, kb, connector, restart: bool
) -> None:
    root = f"17000000{int(restart)}1111"
    first = teams.channel_mention(
        connector.url,
        QUEUE_QUESTION,
        channel=OTHER_CHANNEL,
        team=OTHER_TEAM,
        user=f"fu-ann{int(restart)}",
        root=root,
    )
    assert bot.post(first).status == 200
    first_row = bot.query_of(f"fu-ann{int(restart)}")
    reply = teams.channel_reply(
        connector.url,
        FOLLOW_UP,
        channel=OTHER_CHANNEL,
        team=OTHER_TEAM,
        root=root,
        user=f"fu-ben{int(restart)}",
    )
    if restart:  # a new process over the same database and index
        with bot_server(kb) as other:
            assert other.post(reply).status == 200
    else:
        assert bot.post(reply).status == 200

    answers = [c for c in connector.calls if c.body.get("type") == "message"]
    assert len(answers) == 2
    follow = answers[1]
    # In the same reply chain, from the earlier question's runbook.
    assert follow.conversation_id == reply["conversation"]["id"]
    text = card_text(card_of(follow))
    assert ROTATE_TITLE in text and "secret/orders/mq" in text
    row = bot.query_of(f"fu-ben{int(restart)}")
    assert row.follows == first_row.id and row.question == FOLLOW_UP
    assert row.thread_key == first_row.thread_key is not None


def test_a_channel_reply_in_a_chain_kbot_never_answered_is_ignored(bot, connector) -> None:
    reply = teams.channel_reply(
        connector.url,
        FOLLOW_UP,
        channel=OTHER_CHANNEL,
        team=OTHER_TEAM,
        root="1699999999999",
        user="fu-cat",
    )
    assert bot.post(reply).status == 200
    assert connector.calls == []
    with bot.rt.db.session() as s:
        assert s.scalars(select(QueryRecord).where(QueryRecord.user_id == "aad-fu-cat")).all() == []


def test_a_personal_chat_is_one_thread(bot, connector) -> None:
    first = teams.personal_message(connector.url, QUEUE_QUESTION, user="fu-dan")
    later = teams.personal_message(connector.url, FOLLOW_UP, user="fu-dan")
    for activity in (first, later):
        assert bot.post(activity).status == 200
    answers = [c for c in connector.calls if c.body.get("type") == "message"]
    assert "secret/orders/mq" in card_text(card_of(answers[1]))
    with bot.rt.db.session() as s:
        rows = s.scalars(
            select(QueryRecord)
            .where(QueryRecord.user_id == "aad-fu-dan")
            .order_by(QueryRecord.created_at)
        ).all()
        assert [r.question for r in rows] == [QUEUE_QUESTION, FOLLOW_UP]
        assert rows[1].follows == rows[0].id


def test_a_user_over_the_rate_limit_is_told_in_the_chat_when_to_try_again(kb, connector):
    with bot_server(kb, rate_limits={"per_user": 1, "per_channel": None}) as limited:
        first = teams.personal_message(connector.url, QUEUE_QUESTION, user="quinn")
        again = teams.personal_message(connector.url, QUEUE_QUESTION, user="quinn")
        assert limited.post(first).status == 200
        assert limited.post(again).status == 200
        answer, note = connector.messages()
        assert limited.query_of("quinn").question == QUEUE_QUESTION
    assert note.conversation_id == answer.conversation_id
    assert note.body["text"].startswith("You've asked 1 question in the last minute")
    assert "try again in" in note.body["text"]
    assert not note.body.get("attachments")  # a plain note, not an answer card
