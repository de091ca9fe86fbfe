"""Microsoft Teams: ``/api/messages`` on the kbot aiohttp server (botbuilder's CloudAdapter).

Teams posts Bot Framework activities here. A channel or group-chat @-mention, or a 1:1
message, becomes ``runtime.answering.ask()`` with the audiences of the place it was asked
in; the answer goes back into the same conversation as an Adaptive Card. A message in the
reply chain of one of kbot's answers (or later in the same chat) is a follow-up, asked in
that thread's context; where the app may read a channel, it needs no new @-mention. Votes come back
through Teams' feedback loop (the ``message/submitAction`` invoke) or, where it is off,
through 👍/👎 buttons on the card.

Credentials come from the environment (``MICROSOFT_APP_ID``, ``MICROSOFT_APP_PASSWORD``,
``MICROSOFT_APP_TYPE``, ``MICROSOFT_APP_TENANT_ID``). Without an app id the endpoint runs
in emulator mode: requests are not authenticated, for local use only.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, TypeVar

import requests
from aiohttp import web
from botbuilder.core import BotAdapter, InvokeResponse, TurnContext
from botbuilder.core.teams import (
    TeamsActivityHandler,
    teams_get_channel_id,
    teams_get_team_info,
)
from botbuilder.integration.aiohttp import (
    CloudAdapter,
    ConfigurationBotFrameworkAuthentication,
)
from botbuilder.schema import (
    Activity,
    ActivityTypes,
    CallerIdConstants,
    ChannelAccount,
)
from botframework.connector.auth import AuthenticateRequestResult, AuthenticationConstants
from msrest.exceptions import ClientRequestError, HttpOperationError

from bot.answer.feedback import FeedbackError, UnknownQuery
from bot.answer.prompts import suggested_prompts
from bot.answer.streaming import Delta, Final
from bot.answer.types import Answer, QuestionError, Requester
from bot.chat.deliveries import Deliveries
from bot.chat.streams import Items, stream_queue
from bot.chat.teams_cards import (
    ATTACHMENTS_TEXT,
    EMPTY_TEXT,
    FEEDBACK_ACTION,
    INTERNAL_ERROR_TEXT,
    WELCOME_TEXT,
    WORKING_TEXT,
    answer_activity,
    final_activity,
    informative_activity,
    stream_info,
    streaming_activity,
    welcome_activity,
)
from bot.runtime import Runtime
from config.loader import ConfigError
from config.models import TeamsConfig
from connectors.http import retry_after_seconds

log = logging.getLogger(__name__)
T = TypeVar("T")

ROUTE = "/api/messages"
PLATFORM = "teams"
APP_TYPES = {
    "multitenant": "MultiTenant",
    "singletenant": "SingleTenant",
    "userassignedmsi": "UserAssignedMSI",
}
# Delivery to the Bot Connector: attempts per message, and the longest wait between them.
# Teams ends a turn after 15 s, so retries stay short.
DELIVERY_ATTEMPTS = 3
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 3.0
CONNECTOR_TIMEOUT_S = 5
# Teams ends a stream two minutes after it began; updates stop a little before.
STREAM_MAX_S = 100
# The Bot Connector caps an activity at about 256 KB.
MAX_ACTIVITY_BYTES = 512 * 1024
_AT_TAG = re.compile(r"</?at[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def _message_key(activity: Activity, message_id: str) -> str:
    """A message id is unique within its conversation only."""
    conversation = activity.conversation.id if activity.conversation else ""
    return f"{conversation}:{message_id}"


@dataclass(frozen=True)
class TeamsCredentials:
    """The bot's Microsoft app registration, read from the environment."""

    app_id: str = ""
    password: str = field(default="", repr=False)
    app_type: str = "MultiTenant"
    tenant_id: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TeamsCredentials:
        """Read and check the ``MICROSOFT_APP_*`` variables; ConfigError says what is missing."""
        get = lambda name: (environ.get(name) or "").strip()  # noqa: E731
        raw_type = get("MICROSOFT_APP_TYPE") or "MultiTenant"
        app_type = APP_TYPES.get(raw_type.lower())
        if app_type is None:
            raise ConfigError(
                f"MICROSOFT_APP_TYPE={raw_type!r} is not one of {', '.join(APP_TYPES.values())}"
            )
        creds = cls(
            get("MICROSOFT_APP_ID"),
            get("MICROSOFT_APP_PASSWORD"),
            app_type,
            get("MICROSOFT_APP_TENANT_ID"),
        )
        needed = {
            "MICROSOFT_APP_ID": creds.app_id or not (creds.password or creds.tenant_id),
            "MICROSOFT_APP_PASSWORD": creds.password
            or app_type == "UserAssignedMSI"
            or not creds.app_id,
            "MICROSOFT_APP_TENANT_ID": creds.tenant_id or app_type == "MultiTenant",
        }
        missing = [name for name, ok in needed.items() if not ok]
        if missing:
            raise ConfigError(
                f"Teams credentials for a {app_type} bot need {', '.join(missing)} to be set "
                "(unset every MICROSOFT_APP_* variable for emulator mode)"
            )
        return creds

    @property
    def emulator_mode(self) -> bool:
        return not self.app_id


class _Authentication(ConfigurationBotFrameworkAuthentication):
    """botbuilder's authentication, made to refuse every bad token with PermissionError
    (a 401): as released it lets a malformed token escape as ``jwt.DecodeError`` (a 500)."""

    async def authenticate_request(
        self, activity: Activity, auth_header: str
    ) -> AuthenticateRequestResult:
        try:
            # A missing header is None to every validator (some treat "" as a token).
            return await super().authenticate_request(activity, auth_header or None)
        except PermissionError:
            raise
        except requests.RequestException as e:
            raise _KeysUnavailable(str(e)) from None
        except Exception as e:
            raise PermissionError(f"the token is not valid ({type(e).__name__})") from None


class _KeysUnavailable(Exception):
    """The Bot Framework's token signing keys could not be fetched."""


def _auth_settings(creds: TeamsCredentials, config: TeamsConfig) -> SimpleNamespace:
    """The configuration object botbuilder's ConfigurationBotFrameworkAuthentication reads."""
    settings = SimpleNamespace(
        APP_ID=creds.app_id or None,
        APP_PASSWORD=creds.password or None,
        APP_TYPE=creds.app_type,
    )
    if creds.tenant_id:
        settings.APP_TENANTID = creds.tenant_id
    if config.openid_metadata_url:
        # Any of these switches botbuilder to its parameterized authentication, which needs
        # all of them: the public cloud's values, but keys from the configured place.
        settings.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = config.openid_metadata_url
        settings.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = (
            AuthenticationConstants.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
        )
        settings.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = (
            AuthenticationConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL
        )
        settings.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = (
            AuthenticationConstants.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE
        )
        # The credentials factory adds a single-tenant bot's tenant itself.
        settings.TO_CHANNEL_FROM_BOT_LOGIN_URL = (
            AuthenticationConstants.TO_CHANNEL_FROM_BOT_LOGIN_URL
        )
        settings.OAUTH_URL = AuthenticationConstants.OAUTH_URL
        settings.CALLER_ID = CallerIdConstants.public_azure_channel
    return settings


class TeamsBot(TeamsActivityHandler):
    """Turns Teams activities into questions and votes, and answers into Teams messages."""

    def __init__(self, runtime: Runtime, adapter: CloudAdapter):
        super().__init__()
        self.runtime = runtime
        self.config: TeamsConfig = runtime.config.teams
        self.adapter = adapter
        self.deliveries = Deliveries(runtime.db)
        # Answers finished after their turn ended; kept so they are not garbage-collected.
        self._later: set[asyncio.Task[None]] = set()

    async def on_turn(self, turn_context: TurnContext) -> None:
        _own_retries(turn_context)
        await super().on_turn(turn_context)

    # -- messages ---------------------------------------------------------------------

    async def on_message_activity(self, turn_context: TurnContext) -> None:
        activity = turn_context.activity
        if isinstance(activity.value, dict) and activity.value.get("action") == FEEDBACK_ACTION:
            await self._card_vote(turn_context, activity.value)
            return
        thread = thread_id(activity)
        if _conversation_type(activity) == "channel" and not _mentions_bot(activity):
            # Teams sends a channel message that does not mention kbot only where the app
            # may read the channel: a follow-up if it is in the reply chain of an answer.
            try:
                known = await asyncio.to_thread(
                    self.runtime.answering.answered_in, PLATFORM, thread
                )
            except Exception:
                log.exception("Teams: cannot tell whether kbot answered in %s", thread)
                return
            if not known:
                log.debug("Teams: message %s in %s is not addressed to kbot", activity.id, thread)
                return
        question = self._question(activity)
        if not question:
            has_files = any(a.content_type != "text/html" for a in activity.attachments or [])
            await self._reply(turn_context, ATTACHMENTS_TEXT if has_files else EMPTY_TEXT)
            return
        requester = Requester(
            platform=PLATFORM,
            channel=self._place(activity),
            user=_user_id(activity.from_property),
            audiences=self.audiences(activity),
            thread=thread,
            reply_to=reply_reference(activity),
        )
        try:
            question = self.runtime.answering.validate(question)
        except QuestionError as e:
            await self._reply(turn_context, str(e))
            return
        # The Bot Connector redelivers an activity it thinks was lost; answer it once.
        key = _message_key(activity, activity.id)
        if not await asyncio.to_thread(self.deliveries.claim, PLATFORM, key):
            log.info("Teams: activity %s was already answered; ignoring the redelivery", key)
            return
        if self._streams(activity):
            await self._stream_answer(turn_context, question, requester)
            return
        # Only a courtesy: not worth a retry's delay before the answer.
        await self._deliver(
            "typing indicator",
            lambda: turn_context.send_activity(Activity(type=ActivityTypes.typing)),
            attempts=1,
        )
        await self._answer(turn_context, question, requester)

    async def _answer(self, turn_context: TurnContext, question: str, requester: Requester) -> None:
        """Reply with the answer if it is ready within ``working_after_s``; otherwise reply that
        kbot is working on it, end the turn, and update that reply when the answer is ready."""
        job = asyncio.ensure_future(
            asyncio.to_thread(self.runtime.answering.ask, question, requester)
        )
        done, _ = await asyncio.wait({job}, timeout=self.config.working_after_s)
        if done:
            await self._send_answer(turn_context, job)
            return
        placeholder = await self._deliver(
            "working message", lambda: turn_context.send_activity(WORKING_TEXT)
        )
        reference = TurnContext.get_conversation_reference(turn_context.activity)
        claims = turn_context.turn_state.get(BotAdapter.BOT_IDENTITY_KEY)
        audience = turn_context.turn_state.get(BotAdapter.BOT_OAUTH_SCOPE_KEY)
        placeholder_id = placeholder.id if placeholder else None

        async def finish(context: TurnContext) -> None:
            _own_retries(context)
            await self._send_answer(context, job, update=placeholder_id)

        task = asyncio.create_task(
            self.adapter.continue_conversation_with_claims(claims, reference, audience, finish)
        )
        self._later.add(task)
        task.add_done_callback(self._finished_later)

    def _streams(self, activity: Activity) -> bool:
        """Whether the answer is streamed: a generated one, in a 1:1 chat (the only place
        Teams streams bot messages); elsewhere it is posted and updated."""
        return (
            self.config.streaming
            and self.runtime.answering.generator is not None
            and _conversation_type(activity) == "personal"
        )

    async def _stream_answer(
        self, turn_context: TurnContext, question: str, requester: Requester
    ) -> None:
        """Stream the answer with Teams' protocol: the informative update now (its id names
        the stream), then, after the turn has ended, the model's text so far at most once
        per ``stream_update_s``, and the final message with the card and citations."""
        started = time.monotonic()
        info = await self._deliver(
            "informative update",
            lambda: turn_context.send_activity(informative_activity(WORKING_TEXT)),
            attempts=1,
        )
        stream_id = info.id if info is not None and info.id else None
        reference = TurnContext.get_conversation_reference(turn_context.activity)
        claims = turn_context.turn_state.get(BotAdapter.BOT_IDENTITY_KEY)
        audience = turn_context.turn_state.get(BotAdapter.BOT_OAUTH_SCOPE_KEY)
        items = stream_queue(self.runtime.answering.stream, question, requester)

        async def finish(context: TurnContext) -> None:
            _own_retries(context)
            await self._send_stream(context, items, stream_id, started)

        task = asyncio.create_task(
            self.adapter.continue_conversation_with_claims(claims, reference, audience, finish)
        )
        self._later.add(task)
        task.add_done_callback(self._finished_later)

    async def _send_stream(
        self,
        context: TurnContext,
        items: Items,
        stream_id: str | None,
        started: float,
    ) -> None:
        """Send the stream's updates as ``items`` come, then its final message. An update
        Teams refuses (the user pressed Stop, or the stream is gone) ends the updates, and
        the answer comes as a message of its own: complete, never half-written."""
        text, sequence, pending, last_sent = "", 1, False, started
        interval = self.config.stream_update_s
        final: Final | None = None
        while final is None:
            wait = max(0.0, last_sent + interval - time.monotonic()) if pending else None
            if not items.empty():
                item = items.get_nowait()  # wait_for(..., 0) would time out on a ready item
            else:
                try:
                    item = await asyncio.wait_for(items.get(), wait)
                except TimeoutError:
                    item = None
            if isinstance(item, BaseException):
                await self._send_failure(context, item, stream_id)
                return
            if isinstance(item, Final):
                final = item
            elif isinstance(item, Delta):
                text += item.text
                pending = stream_id is not None and bool(text.strip())
            # At the end, the final message carries the text still pending.
            now = time.monotonic()
            if now - started > STREAM_MAX_S:
                pending = False  # past Teams' time for a stream: the rest comes in the final
            if final is None and pending and stream_id and now - last_sent >= interval:
                sequence += 1
                update = streaming_activity(text, stream_id, sequence)
                # One attempt: a throttled update is skipped, the next carries its text.
                sent = await self._deliver(
                    "stream update", lambda u=update: context.send_activity(u), attempts=1
                )
                if sent is None:
                    stream_id = None  # stopped by the user, or refused: end with a message
                last_sent, pending = time.monotonic(), False
        if stream_id:
            await asyncio.sleep(max(0.0, last_sent + interval - time.monotonic()))
        answer = final.answer
        reply = final_activity(
            answer,
            stream_id,
            note=final.note,
            escalation=self.config.escalation_channel,
            feedback_loop=self.config.feedback_loop,
        )
        if stream_id:
            # The streamed message becomes the final one: votes on it name the stream's id.
            await self._remember(context, stream_id, answer.query_id)
        sent = await self._deliver("answer", lambda: context.send_activity(reply))
        if sent is None and stream_id:
            # The stream could not be ended (Teams ended it): the answer as a message of its own.
            reply = final_activity(
                answer,
                None,
                note=final.note,
                escalation=self.config.escalation_channel,
                feedback_loop=self.config.feedback_loop,
            )
            sent = await self._deliver("answer", lambda: context.send_activity(reply))
        if sent is not None and sent.id and sent.id != stream_id:
            await self._remember(context, sent.id, answer.query_id)

    async def _send_failure(
        self, context: TurnContext, error: BaseException, stream_id: str | None
    ) -> None:
        if isinstance(error, QuestionError):
            text = str(error)
        else:
            log.error("Teams: answering failed", exc_info=error)
            text = INTERNAL_ERROR_TEXT
        reply = Activity(type=ActivityTypes.message, text=text)
        if stream_id:
            reply.entities = [stream_info("final", stream_id, None)]
        await self._deliver("answer", lambda: context.send_activity(reply))

    def _finished_later(self, task: asyncio.Task[None]) -> None:
        self._later.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Teams: a late answer could not be delivered", exc_info=task.exception())

    async def _send_answer(
        self, context: TurnContext, job: asyncio.Future[Answer], update: str | None = None
    ) -> None:
        answer: Answer | None = None
        try:
            answer = await job
        except QuestionError as e:
            reply = Activity(type=ActivityTypes.message, text=str(e))
        except Exception:
            log.exception("Teams: answering failed")
            reply = Activity(type=ActivityTypes.message, text=INTERNAL_ERROR_TEXT)
        else:
            reply = answer_activity(
                answer,
                escalation=self.config.escalation_channel,
                feedback_loop=self.config.feedback_loop,
            )
        if update:
            if answer is not None:
                # Remembered before it shows, so a vote cast the moment it appears is matched.
                await self._remember(context, update, answer.query_id)
            reply.id = update
            await self._deliver("answer", lambda: context.update_activity(reply))
            return
        sent = await self._deliver("answer", lambda: context.send_activity(reply))
        if sent is not None and sent.id and answer is not None:
            await self._remember(context, sent.id, answer.query_id)

    async def _remember(self, context: TurnContext, activity_id: str, query_id: str) -> None:
        """Link the posted message to its answer, for votes that name only the message."""
        key = _message_key(context.activity, activity_id)
        try:
            await asyncio.to_thread(self.runtime.feedback.link_message, PLATFORM, key, query_id)
        except Exception:
            log.exception("Teams: could not link message %s to its answer", key)

    def _question(self, activity: Activity) -> str:
        """The message text without the bot's @-mention or any markup."""
        try:
            text = TurnContext.remove_recipient_mention(activity) or ""
        except (AttributeError, KeyError, TypeError, re.error):
            # A mention entity botbuilder cannot read: drop every mention tag instead.
            text = activity.text or ""
        text = _TAG.sub("", _AT_TAG.sub("", text))
        return " ".join(html.unescape(text).split())

    def audiences(self, activity: Activity) -> frozenset[str]:
        """The audiences of the place ``activity`` was sent in: a channel's, by its own id or
        its team's, from ``teams.channels``; a 1:1 or group chat's from ``chat_audiences``."""
        if _conversation_type(activity) != "channel":
            return frozenset(self.config.chat_audiences)
        team = teams_get_team_info(activity)
        keys = [teams_get_channel_id(activity)]
        if team is not None:
            keys += [team.id, team.aad_group_id]
        found: set[str] = set()
        for key in filter(None, keys):
            found.update(self.config.channels.get(key, ()))
        return frozenset(found)

    @staticmethod
    def _place(activity: Activity) -> str | None:
        if _conversation_type(activity) == "channel":
            return teams_get_channel_id(activity) or activity.conversation.id
        return activity.conversation.id

    # -- feedback ---------------------------------------------------------------------

    async def on_invoke_activity(self, turn_context: TurnContext) -> InvokeResponse:
        if turn_context.activity.name == "message/submitAction":
            return await self._feedback_loop_vote(turn_context)
        return await super().on_invoke_activity(turn_context)

    async def _feedback_loop_vote(self, turn_context: TurnContext) -> InvokeResponse:
        """Teams' own 👍/👎 on an answer: ``{"actionName": "feedback", "actionValue":
        {"reaction": "like"|"dislike", "feedback": "{\\"feedbackText\\": ...}"}}``."""
        activity = turn_context.activity
        value = activity.value if isinstance(activity.value, dict) else {}
        if value.get("actionName") != "feedback":
            return _invoke(HTTPStatus.NOT_IMPLEMENTED, "kbot handles only the feedback action")
        action = value.get("actionValue") if isinstance(value.get("actionValue"), dict) else {}
        vote = {"like": "up", "dislike": "down"}.get(action.get("reaction"))
        if vote is None:
            return _invoke(HTTPStatus.BAD_REQUEST, "reaction must be 'like' or 'dislike'")
        query_id = await asyncio.to_thread(
            self.runtime.feedback.query_of_message,
            PLATFORM,
            _message_key(activity, activity.reply_to_id or ""),
        )
        if query_id is None:
            log.warning(
                "Teams: a vote on message %s, which is not an answer of kbot's, was not recorded",
                activity.reply_to_id,
            )
            return _invoke(HTTPStatus.NOT_FOUND, "that message is not an answer of kbot's")
        return await self._record(activity, query_id, vote, _feedback_text(action.get("feedback")))

    async def _card_vote(self, turn_context: TurnContext, value: dict[str, Any]) -> None:
        """A 👍/👎 button on the card (where the feedback loop is off) sends a message."""
        activity = turn_context.activity
        query_id, vote = value.get("query_id"), value.get("vote")
        if not isinstance(query_id, str) or not isinstance(vote, str):
            await self._reply(turn_context, "That button is not one kbot knows.")
            return
        result = await self._record(activity, query_id, vote, None)
        if result.status == HTTPStatus.OK:
            thumb = "👍" if vote == "up" else "👎"
            await self._reply(turn_context, f"Thanks, your {thumb} is recorded.")
        else:
            await self._reply(turn_context, str(result.body["error"]))

    async def _record(
        self, activity: Activity, query_id: str, vote: str, reason: str | None
    ) -> InvokeResponse:
        try:
            await asyncio.to_thread(
                self.runtime.feedback.record,
                query_id,
                vote,
                user=_user_id(activity.from_property),
                reason=reason,
            )
        except UnknownQuery as e:
            return _invoke(HTTPStatus.NOT_FOUND, str(e))
        except FeedbackError as e:
            return _invoke(HTTPStatus.BAD_REQUEST, str(e))
        return InvokeResponse(status=HTTPStatus.OK)

    # -- installation -----------------------------------------------------------------

    async def on_conversation_update_activity(self, turn_context: TurnContext) -> None:
        """Welcome a team, chat or user when kbot is added; other membership changes need no
        answer (botbuilder's default would look up every new member with the connector)."""
        activity = turn_context.activity
        bot_id = activity.recipient.id if activity.recipient else None
        if not (bot_id and any(m.id == bot_id for m in activity.members_added or [])):
            return
        if _conversation_type(activity) != "personal":
            await self._reply(turn_context, WELCOME_TEXT)
            return
        # In a 1:1 chat, Teams shows suggested actions: questions to ask with one tap.
        prompts = await asyncio.to_thread(
            suggested_prompts,
            self.runtime.db,
            self.config.suggested_prompts,
            audiences=self.config.chat_audiences,
        )
        welcome = welcome_activity(WELCOME_TEXT, prompts)
        await self._deliver("welcome", lambda: turn_context.send_activity(welcome))

    # -- delivery ---------------------------------------------------------------------

    async def _reply(self, turn_context: TurnContext, text: str) -> None:
        await self._deliver("reply", lambda: turn_context.send_activity(text))

    async def _deliver(
        self, what: str, send: Callable[[], Awaitable[T]], attempts: int = DELIVERY_ATTEMPTS
    ) -> T | None:
        """Send through the Bot Connector, retrying throttling (429, honouring Retry-After)
        and server errors a few times; on failure log it and carry on: the question is in
        the query log either way, and one lost message must not fail the whole turn."""
        for attempt in range(1, attempts + 1):
            try:
                return await send()
            except HttpOperationError as e:
                status = _status(e)
                retry = status == 429 or status >= 500
                problem = f"HTTP {status}"
                delay = _retry_after(e)
            except ClientRequestError as e:
                retry, problem, delay = True, f"unreachable ({type(e).__name__})", None
            except Exception as e:
                # E.g. no token from Entra ID for the bot's credentials: retrying won't help.
                log.exception("Teams: sending the %s failed", what)
                retry, problem, delay = False, type(e).__name__, None
            if not retry or attempt == attempts:
                log.error(
                    "Teams: gave up sending the %s to the Bot Connector after %d attempt(s): %s",
                    what,
                    attempt,
                    problem,
                )
                return None
            wait = min(
                delay if delay is not None else FIRST_BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S
            )
            log.warning(
                "Teams: sending the %s to the Bot Connector failed (%s); retrying in %.1f s",
                what,
                problem,
                wait,
            )
            await asyncio.sleep(wait)
        return None

    async def close(self) -> None:
        """Wait for late answers still being delivered (server shutdown)."""
        if self._later:
            await asyncio.gather(*self._later, return_exceptions=True)


def _own_retries(turn_context: TurnContext) -> None:
    """Leave retrying to ``_deliver``, which keeps within Teams' 15 s: msrest's own policy
    (urllib3: connection errors, and 5xx on PUT, with seconds of backoff each) would
    multiply it, and its 100 s timeout would outlast the turn."""
    client = turn_context.turn_state.get(BotAdapter.BOT_CONNECTOR_CLIENT_KEY)
    if client is not None:
        client.config.retry_policy.retries = 0
        client.config.connection.timeout = CONNECTOR_TIMEOUT_S


def thread_id(activity: Activity) -> str:
    """The Teams thread a message belongs to: its conversation, whose id in a channel names
    the reply chain ("19:...@thread.tacv2;messageid=<root post>"); a 1:1 or group chat is
    one thread. Prefixed with the tenant, as conversation ids are only unique within one."""
    conversation = activity.conversation
    tenant = (conversation.tenant_id if conversation else None) or ""
    return f"{tenant}:{conversation.id if conversation else ''}"


def reply_reference(activity: Activity) -> dict[str, Any]:
    """What a later proactive reply to ``activity`` needs (a reviewer's correction): its
    conversation reference, serialized, without the user (the query log has who asked)."""
    reference = TurnContext.get_conversation_reference(activity)
    reference.user = None
    if reference.conversation is not None and not reference.conversation.tenant_id:
        # botbuilder reads the tenant from "tenantID"; Teams sends it in channelData too.
        data = activity.channel_data if isinstance(activity.channel_data, dict) else {}
        tenant = data.get("tenant") if isinstance(data.get("tenant"), dict) else {}
        tenant_id = tenant.get("id")
        reference.conversation.tenant_id = tenant_id if isinstance(tenant_id, str) else None
    return reference.serialize()


def _mentions_bot(activity: Activity) -> bool:
    recipient = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        props = entity.additional_properties or {}
        if entity.type == "mention" and (props.get("mentioned") or {}).get("id") == recipient:
            return True
    return False


def _conversation_type(activity: Activity) -> str:
    return (activity.conversation.conversation_type or "") if activity.conversation else ""


def _user_id(account: ChannelAccount | None) -> str | None:
    """The user's Entra (AAD) object id, stable across Teams and Microsoft 365, else the
    Teams user id."""
    if account is None:
        return None
    return (account.aad_object_id or account.id or "")[:255] or None


def _feedback_text(raw: Any) -> str | None:
    """The free text of a feedback-loop vote: Teams sends it as a JSON string."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw.strip() or None
    if isinstance(raw, dict) and isinstance(raw.get("feedbackText"), str):
        return raw["feedbackText"].strip() or None
    return None


def _invoke(status: HTTPStatus, error: str) -> InvokeResponse:
    return InvokeResponse(status=int(status), body={"error": error})


def _status(e: HttpOperationError) -> int:
    return int(getattr(e.response, "status_code", None) or getattr(e.response, "status", 0) or 0)


def _retry_after(e: HttpOperationError) -> float | None:
    headers = getattr(e.response, "headers", None) or {}
    return retry_after_seconds(headers.get("Retry-After"))


# -- the HTTP endpoint --------------------------------------------------------------------

TEAMS = web.AppKey("teams", TeamsBot)


def mount_teams(
    app: web.Application, runtime: Runtime, credentials: TeamsCredentials | None = None
) -> TeamsBot:
    """Serve ``POST /api/messages`` on ``app``. Credentials default to the environment's."""
    creds = credentials or TeamsCredentials.from_env()
    auth = _Authentication(_auth_settings(creds, runtime.config.teams))
    adapter = CloudAdapter(auth)
    bot = TeamsBot(runtime, adapter)
    adapter.on_turn_error = _turn_failed
    app[TEAMS] = bot
    app.router.add_post(ROUTE, messages)

    async def finish_late_answers(_app: web.Application) -> None:
        await bot.close()

    app.on_shutdown.append(finish_late_answers)
    if creds.emulator_mode:
        log.warning(
            "Teams: no MICROSOFT_APP_ID set; %s accepts unauthenticated requests "
            "(emulator mode, for local use only)",
            ROUTE,
        )
    return bot


async def _turn_failed(turn_context: TurnContext, error: Exception) -> None:
    log.error("Teams: handling a %s activity failed", turn_context.activity.type, exc_info=error)
    if turn_context.activity.type == ActivityTypes.invoke:
        await turn_context.send_activity(
            Activity(
                type=ActivityTypes.invoke_response,
                value=_invoke(HTTPStatus.INTERNAL_SERVER_ERROR, "kbot hit an internal error"),
            )
        )


async def messages(request: web.Request) -> web.Response:
    """``POST /api/messages``: one Bot Framework activity in, an invoke response (or 200) out."""
    bot = request.app[TEAMS]
    activity = await _activity(request)
    try:
        response = await bot.adapter.process_activity(
            request.headers.get("Authorization", ""), activity, bot.on_turn
        )
    except PermissionError as e:
        log.warning("Teams: refused an unauthenticated %s activity: %s", activity.type, e)
        return web.json_response({"error": "missing or invalid Bot Framework token"}, status=401)
    except _KeysUnavailable as e:
        log.error("Teams: cannot fetch the Bot Framework token signing keys: %s", e)
        return web.json_response({"error": "cannot verify the token right now"}, status=503)
    if response is None:
        return web.Response(status=200)
    if response.body is None:
        return web.Response(status=response.status)
    return web.json_response(response.body, status=response.status)


async def _activity(request: web.Request) -> Activity:
    """The posted activity, or a 400 that says what is wrong with it."""
    if request.content_type != "application/json":
        raise _bad_request("the body must be a Bot Framework activity (application/json)")
    # Read past the app's small limit for the web chat: a long Teams message carries its
    # text twice (plain and as an HTML attachment) and must still be answered or refused.
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw += chunk
        if len(raw) > MAX_ACTIVITY_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_ACTIVITY_BYTES,
                actual_size=request.content_length or len(raw),
                text=json.dumps({"error": "the activity is too large"}),
                content_type="application/json",
            )
    try:
        body = json.loads(raw)
    except ValueError:
        raise _bad_request("the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not body["type"]:
        raise _bad_request("the body must be an activity object with a 'type'")
    try:
        activity = Activity().deserialize(body)
    except Exception:
        raise _bad_request("the activity does not match the Bot Framework schema") from None
    conversation = activity.conversation
    if not (activity.service_url or "").startswith(("https://", "http://")):
        raise _bad_request("the activity has no http(s) 'serviceUrl' to reply to")
    if conversation is None or not conversation.id or not activity.channel_id:
        raise _bad_request("the activity has no 'conversation.id' or 'channelId'")
    return activity


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
