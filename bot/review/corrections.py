"""A reviewer's corrected answer, posted into the conversation the question was asked in
(``feedback.post_corrections``, off by default): a reply in the question's Slack thread, or
a proactive reply to the question in its Teams conversation, attributed to the reviewer
("Correction from <reviewer>: ...") and citing the document they picked, if any.

The message is posted first and the review recorded only once the platform took it: when
Slack or Teams refuses it or cannot be reached, the reviewer is told why, it is logged, and
the question stays in the queue to be corrected again. Questions asked in the web chat, on
the command line, or answered privately in Slack (the shortcut, ``/kbot``) have no
conversation to post into, and are never offered the action.

The clients are made here from the environment's credentials (``SLACK_BOT_TOKEN``, the
``MICROSOFT_APP_*`` variables), so ``kbot review correct`` posts as the server would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError
from botbuilder.core import BotAdapter, CardFactory, TurnContext
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import Activity, ActivityTypes, ConversationReference
from msrest.exceptions import ClientRequestError, HttpOperationError
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.chat import slack_blocks as kit
from bot.chat.slack import SlackCredentials, thread_parts
from bot.chat.teams import TeamsCredentials, _auth_settings
from bot.chat.teams_cards import CARD_VERSION
from bot.review.queue import Reviewed, ReviewError, review_queue
from config import ConfigError
from db.models import IndexedDocument, QueryRecord

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

SETTING = "feedback.post_corrections"
OFF = (
    f"Posting corrections is off: set {SETTING}: true in the config to let reviewers post a "
    "corrected answer into the original Slack thread or Teams conversation."
)
# A Slack section holds 3,000 characters; the attribution takes a few of them.
MAX_TEXT = 2800
# One attempt, soon given up: the reviewer is waiting, and can simply try again.
TIMEOUT_S = 10
_SLACK_TS = re.compile(r"\d+\.\d+")
# What Slack's error codes mean to a reviewer.
SLACK_ERRORS = {
    "channel_not_found": "the channel is gone, or kbot can no longer see it",
    "not_in_channel": "kbot is no longer a member of the channel",
    "is_archived": "the channel is archived",
    "thread_not_found": "the thread is gone",
    "invalid_auth": "SLACK_BOT_TOKEN is not valid",
    "account_inactive": "the bot token was revoked",
    "token_revoked": "the bot token was revoked",
    "ratelimited": "Slack is rate limiting kbot",
}
TEAMS_STATUSES = {
    401: "the Bot Connector did not accept kbot's credentials",
    403: "kbot may no longer post there (removed from the team or chat, or blocked)",
    404: "the conversation or the question's message is gone",
    429: "Teams is throttling kbot",
}


class CorrectionError(ReviewError):
    """The correction cannot be made as asked: posting is off, there is nowhere to post,
    the text or the document will not do."""


class NotPosted(CorrectionError):
    """Slack or Teams refused the message or could not be reached; nothing was recorded."""

    def __init__(self, platform: str, reason: str):
        self.platform, self.reason = platform, reason
        super().__init__(
            f"Not posted: {reason}. Nothing was recorded: the question stays in the review "
            "queue, so the correction can be posted again."
        )


class NotRecorded(CorrectionError):
    """The correction was posted, but its review could not be recorded."""


@dataclass(frozen=True)
class Destination:
    """The conversation a question was asked in, where its correction goes."""

    platform: str  # slack | teams
    where: str  # for the reviewer: "the Slack thread 1700000000.000100 in C0GENERAL"
    channel: str = ""
    thread_ts: str = ""
    reference: dict[str, Any] | None = None


@dataclass(frozen=True)
class Correction:
    """What is posted: the reviewer's text, attributed, and the document it cites."""

    reviewer: str
    text: str
    title: str | None = None
    url: str | None = None

    @property
    def plain(self) -> str:
        source = f"\nSource: {self.title} {self.url}" if self.url else ""
        return f"Correction from {self.reviewer}: {self.text}{source}"


@dataclass(frozen=True)
class Corrected:
    """A correction posted and recorded."""

    reviewed: Reviewed
    destination: Destination


def destination(q: QueryRecord) -> Destination | str:
    """Where a correction to ``q`` is posted, or why there is nowhere to post it."""
    if q.platform == "slack":
        parts = thread_parts(q.thread_key)
        if parts and q.channel and parts[1] == q.channel and _SLACK_TS.fullmatch(parts[2]):
            ts = parts[2]
            return Destination("slack", f"the Slack thread {ts} in {q.channel}", q.channel, ts)
        return (
            "it was answered privately in Slack (the message shortcut or /kbot): only the "
            "asker saw it, so there is no thread to post a correction into"
        )
    if q.platform == "teams":
        ref = q.reply_to or {}
        conversation = ref.get("conversation") or {}
        if ref.get("serviceUrl") and conversation.get("id") and ref.get("activityId"):
            kind = conversation.get("conversationType") or "conversation"
            return Destination("teams", f"the Teams {kind} {conversation['id']}", reference=ref)
        return (
            "it was asked in Teams before kbot kept the conversation to reply to "
            "(migration 0010), so there is nowhere to post a correction"
        )
    if q.platform == "web":
        return "it was asked in the web chat, which has no conversation to post a correction into"
    if q.platform == "cli":
        return "it was asked on the command line, which has no conversation to post into"
    return f"it was asked from {q.platform}, which kbot cannot post a correction into"


def slack_blocks(c: Correction) -> list[kit.Block]:
    """The correction as Block Kit: the attributed text, then the cited document."""
    blocks: list[kit.Block] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*Correction from {kit.escape(c.reviewer)}:*\n{kit.escape(c.text)}",
            },
        }
    ]
    if c.url:
        source = kit.link(c.url, c.title or c.url)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": source}]})
    return blocks


def teams_activity(c: Correction) -> Activity:
    """The correction as a Teams message: an Adaptive Card with the attributed text and a
    button to the cited document."""
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": [
            {"type": "TextBlock", "text": f"Correction from {c.reviewer}", "weight": "Bolder"},
            {"type": "TextBlock", "text": c.text, "wrap": True},
        ],
    }
    if c.url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": c.title or c.url, "url": c.url}]
    return Activity(
        type=ActivityTypes.message,
        summary=f"Correction from {c.reviewer}",
        attachments=[CardFactory.adaptive_card(card)],
    )


class Corrections:
    """Posting corrections for one runtime: where each question's goes, and the action."""

    def __init__(self, runtime: Runtime, env: Mapping[str, str] | None = None):
        self.runtime = runtime
        self.env = env

    @property
    def enabled(self) -> bool:
        return self.runtime.config.feedback.post_corrections

    def destinations(self, query_ids: list[str]) -> dict[str, Destination | str]:
        """Where a correction to each of ``query_ids`` would go, or why nowhere."""
        with self.runtime.db.session() as s:
            rows = s.scalars(select(QueryRecord).where(QueryRecord.id.in_(query_ids))).all()
            return {q.id: destination(q) for q in rows}

    async def correct(
        self,
        query_id: str,
        text: str,
        by: str,
        connector: str | None = None,
        path: str | None = None,
    ) -> Corrected:
        """Post ``text`` as ``by``'s correction into the conversation of ``query_id``, then
        record the review ("corrected", pinning ``connector``:``path`` when given). Raises
        ``CorrectionError`` (``NotPosted`` when the platform failed) with nothing recorded,
        or ``NotRecorded`` when it was posted but the review could not be recorded."""
        if not self.enabled:
            raise CorrectionError(OFF)
        text, by = (text or "").strip(), (by or "").strip()
        if not text:
            raise CorrectionError("a correction needs its text")
        if len(text) > MAX_TEXT:
            raise CorrectionError(f"a correction is at most {MAX_TEXT} characters ({len(text)})")
        if not by:
            raise CorrectionError("a correction needs who made it")
        queue = review_queue(self.runtime)
        await asyncio.to_thread(queue.get, query_id)  # queued, or a ReviewError saying why
        dest, doc = await asyncio.to_thread(self._where, query_id, connector, path)
        correction = Correction(by, text, doc.title if doc else None, doc.url if doc else None)
        try:
            await self.post(dest, correction)
        except NotPosted as e:
            log.warning(
                "correction of %s by %s not posted to %s: %s", query_id, by, dest.where, e.reason
            )
            raise
        try:
            done = await asyncio.to_thread(
                queue.correct,
                query_id,
                text,
                by,
                doc.connector if doc else None,
                doc.doc_id if doc else None,
            )
        except Exception as e:
            # Posted, so the reviewer must not post it again: say so, whatever went wrong.
            log.exception("correction of %s posted to %s but not recorded", query_id, dest.where)
            raise NotRecorded(
                f"The correction was posted into {dest.where}, but recording the review "
                f"failed ({e}); mark the question reviewed instead of posting it again."
            ) from e
        log.info("correction of %s by %s posted to %s", query_id, by, dest.where)
        return Corrected(done, dest)

    def _where(
        self, query_id: str, connector: str | None, path: str | None
    ) -> tuple[Destination, IndexedDocument | None]:
        with self.runtime.db.session() as s:
            q = s.get(QueryRecord, query_id)
            if q is None:
                raise CorrectionError(f"no answer with query id {query_id!r}")
            dest = destination(q)
            if isinstance(dest, str):
                raise CorrectionError(f"A correction cannot be posted: {dest}.")
            if not connector and not path:
                return dest, None
            if not (connector and path):
                raise CorrectionError("a cited document needs both its connector and its path")
            doc = s.get(IndexedDocument, (connector, path))
            if doc is None:
                raise CorrectionError(f"no indexed document {connector}:{path}")
            # The place's audiences, as the query log keeps them: a correction must not
            # link a document its readers may not see.
            readers = set((q.audiences or "public").split(",")) | {"public"}
            if doc.audience not in readers:
                raise CorrectionError(
                    f"{connector}:{path} is for the {doc.audience!r} audience, which may not "
                    f"read {dest.where}"
                )
            s.expunge(doc)
            return dest, doc

    async def post(self, dest: Destination, correction: Correction) -> None:
        """Post ``correction`` to ``dest``; ``NotPosted`` says why it was not."""
        if dest.platform == "slack":
            await self._slack(dest, correction)
        else:
            await self._teams(dest, correction)

    async def _slack(self, dest: Destination, c: Correction) -> None:
        token = SlackCredentials.from_env(self.env).bot_token
        if not token:
            raise NotPosted("slack", "SLACK_BOT_TOKEN is not set in this process's environment")
        client = AsyncWebClient(
            token=token, base_url=self.runtime.config.slack.api_base_url, timeout=TIMEOUT_S
        )
        try:
            await client.chat_postMessage(
                channel=dest.channel,
                thread_ts=dest.thread_ts,
                text=kit.escape(kit.fallback_text(c.plain)),  # notifications read it
                blocks=slack_blocks(c),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as e:
            code = str((e.response.get("error") if e.response is not None else None) or "unknown")
            raise NotPosted("slack", _slack_reason(code)) from None
        except (SlackClientError, ClientError, OSError, TimeoutError) as e:
            log.info("Slack chat.postMessage failed: %s: %s", type(e).__name__, e)
            raise NotPosted("slack", "Slack could not be reached") from None

    async def _teams(self, dest: Destination, c: Correction) -> None:
        try:
            creds = TeamsCredentials.from_env(self.env if self.env is not None else os.environ)
        except ConfigError as e:
            raise NotPosted("teams", f"the Teams credentials are incomplete ({e})") from None
        auth = ConfigurationBotFrameworkAuthentication(
            _auth_settings(creds, self.runtime.config.teams)
        )
        adapter = CloudAdapter(auth)
        reference = ConversationReference().deserialize(dest.reference)
        message = teams_activity(c)

        async def send(context: TurnContext) -> None:
            client = context.turn_state[BotAdapter.BOT_CONNECTOR_CLIENT_KEY]
            client.config.retry_policy.retries = 0
            client.config.connection.timeout = TIMEOUT_S
            # A reply to the question itself (its replyToId), in its reply chain: sent
            # through the connector, as TurnContext.send_activity would address it to the
            # continuation event's own made-up id instead.
            reply = TurnContext.apply_conversation_reference(message, reference)
            tenant = reference.conversation.tenant_id
            if tenant:
                reply.channel_data = {"tenant": {"id": tenant}}
            await client.conversations.reply_to_activity(
                reference.conversation.id, reference.activity_id, reply
            )

        try:
            await adapter.continue_conversation(reference, send, creds.app_id)
        except HttpOperationError as e:
            status = int(getattr(e.response, "status_code", 0) or 0)
            reason = TEAMS_STATUSES.get(status, "the Bot Connector failed")
            raise NotPosted("teams", f"Teams refused it (HTTP {status}): {reason}") from None
        except (ClientRequestError, ClientError, OSError, TimeoutError) as e:
            log.info("Teams: the Bot Connector is unreachable: %s: %s", type(e).__name__, e)
            raise NotPosted("teams", "the Teams Bot Connector could not be reached") from None
        except Exception as e:
            # E.g. no token from Entra ID for the bot's credentials.
            log.exception("Teams: posting a correction failed")
            raise NotPosted("teams", f"Teams could not be posted to ({type(e).__name__})") from None


def _slack_reason(code: str) -> str:
    meaning = SLACK_ERRORS.get(code)
    return f"Slack refused it ({code}: {meaning})" if meaning else f"Slack refused it ({code})"
