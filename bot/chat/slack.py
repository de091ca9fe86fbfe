"""Slack: answers @-mentions and DMs in their thread, with cited sources and 👍/👎, and
the follow-ups in a thread kbot has answered in without a new mention.

A thin adapter over slack-bolt's ``AsyncApp``: it turns a Slack event into
``runtime.answering.ask()`` and renders the ``Answer`` as Block Kit (``bot.chat.slack_blocks``).
It is served at ``/slack/events`` on the web chat's aiohttp server (HTTP mode), or over a
WebSocket (Socket Mode, ``kbot serve --slack-socket-mode``).

Every listener returns at once: bolt acknowledges the request when it does (Slack wants an
answer within 3 s), and the slow work (the answer, Slack API calls) runs in a background
task that the adapter keeps track of, so shutdown can let it finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.answer.feedback import FeedbackError
from bot.answer.limits import RateLimited
from bot.answer.request_ids import fresh_context
from bot.answer.types import Answer, QuestionError, Requester
from bot.chat import slack_blocks as kit
from bot.chat.deliveries import Deliveries
from bot.chat.slack_assistant import AssistantThreads
from bot.chat.slack_assistant import on_unknown_event as on_unknown_assistant_event
from bot.chat.slack_home import AppHome
from bot.chat.slack_private import PrivateAnswers
from bot.chat.slack_streaming import StreamedAnswers
from bot.chat.slack_text import INTERNAL_ERROR, question_text
from bot.runtime import Runtime
from config import ConfigError

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
# Slack's own events are far smaller; the web chat's 64 KiB limit is too tight for a long
# message, whose text Slack sends twice (as text and as rich-text blocks).
MAX_BODY = 1024 * 1024
# A ratelimited call is retried after the Retry-After Slack sends, this many times.
RATE_LIMIT_RETRIES = 2
WORKING_REACTION = "eyes"
# How long a stopping server waits for answers still being written.
DRAIN_SECONDS = 20.0
# Message subtypes that carry a person's new question; every other subtype (edits,
# deletions, joins, bot messages) is not a question.
QUESTION_SUBTYPES = {None, "file_share", "thread_broadcast"}


class SlackSetupError(ConfigError):
    """Slack cannot be served as asked (credentials missing from the environment)."""


@dataclass(frozen=True)
class SlackCredentials:
    """Slack's secrets, from the environment under Slack's conventional names."""

    signing_secret: str | None = None
    bot_token: str | None = None
    app_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackCredentials:
        env = os.environ if env is None else env
        return cls(
            env.get("SLACK_SIGNING_SECRET") or None,
            env.get("SLACK_BOT_TOKEN") or None,
            env.get("SLACK_APP_TOKEN") or None,
        )

    def missing(self, socket_mode: bool) -> list[str]:
        """The environment variables the chosen mode still needs."""
        needed = {"SLACK_BOT_TOKEN": self.bot_token}
        if socket_mode:
            needed["SLACK_APP_TOKEN"] = self.app_token
        else:
            needed["SLACK_SIGNING_SECRET"] = self.signing_secret
        return [name for name, value in needed.items() if not value]


class SlackAdapter:
    """The bolt app and its listeners, over one runtime's answering and feedback services."""

    def __init__(
        self, runtime: Runtime, credentials: SlackCredentials, *, socket_mode: bool = False
    ):
        self.runtime = runtime
        self.config = runtime.config.slack
        self.credentials = credentials
        self.socket_mode = socket_mode
        self.deliveries = Deliveries(runtime.db)
        self.client = AsyncWebClient(
            token=credentials.bot_token,
            base_url=self.config.api_base_url,
            logger=log,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ],
        )
        self.app = AsyncApp(
            name="kbot",
            logger=log,
            client=self.client,
            signing_secret=credentials.signing_secret or "",
            # Socket Mode messages arrive over an authenticated WebSocket and are not signed.
            request_verification_enabled=not socket_mode,
            # Listeners only start background work, so bolt may wait for them before it
            # acknowledges: by then every task is registered (see ``drain``).
            process_before_response=True,
        )
        # Socket Mode has no signing secret: nothing arrives at /slack/events to verify.
        self._verifier = (
            SignatureVerifier(credentials.signing_secret) if credentials.signing_secret else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._socket_handler: Any = None
        self._socket_task: asyncio.Task[None] | None = None
        # The assistant panel's events and messages go to its middleware first; every
        # other event passes on to the listeners below.
        self.assistant = AssistantThreads(self)
        self.app.assistant(self.assistant.middleware)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event(re.compile(r"^assistant_thread_"))(on_unknown_assistant_event)
        self.home = AppHome(self)
        self.private = PrivateAnswers(self)
        self.streaming = StreamedAnswers(self)
        self.app.action(kit.VOTE_UP)(self._on_vote)
        self.app.action(kit.VOTE_DOWN)(self._on_vote)
        self.app.action(kit.FEEDBACK_ACTION)(self._on_feedback_buttons)
        # Registered last: bolt runs the first listener that matches.
        self.app.action(re.compile(".*"))(self._on_unknown_action)
        self.app.view(kit.REASON_VIEW)(self._on_reason)

    # -- the HTTP endpoint and the Socket Mode connection -------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /slack/events``: events, interactivity and url_verification."""
        try:
            body = await _read_body(request, MAX_BODY)
        except _TooLarge:
            return web.json_response({"error": "request body too large"}, status=413)
        except UnicodeDecodeError:
            return web.json_response({"error": "the body is not UTF-8 text"}, status=400)
        if self._verifier is None or not self._verifier.is_valid_request(
            body, dict(request.headers)
        ):
            # bolt checks again; checked first here so a forged body is 401, whatever it is.
            return web.json_response({"error": "invalid request signature"}, status=401)
        if (problem := _unreadable(body, request.content_type)) is not None:
            # bolt assumes a JSON object; anything else would crash it into a 500.
            log.info("Slack request refused: %s", problem)
            return web.json_response({"error": problem}, status=400)
        try:
            bolt_request = AsyncBoltRequest(
                body=body, query=request.query_string, headers=dict(request.headers)
            )
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
            # bolt reads fields of the shapes Slack sends (event.channel, a user object...);
            # a body of another shape is not from Slack.
            log.info("Slack request refused: unexpected shape (%s: %s)", type(e).__name__, e)
            return web.json_response({"error": "not a request Slack sends"}, status=400)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    async def start_socket_mode(self, _app: web.Application | None = None) -> None:
        """Connect to Slack over Socket Mode with the app-level token."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(
            self.app, self.credentials.app_token, logger=log, web_client=self.client
        )
        self._socket_handler = handler
        # The client retries until Slack accepts the connection, logging each failure;
        # the web chat is served meanwhile instead of waiting for it.
        self._socket_task = asyncio.get_running_loop().create_task(handler.connect_async())

    async def close(self, _app: web.Application | None = None) -> None:
        """Let answers in flight finish (up to ``DRAIN_SECONDS``), then disconnect."""
        try:
            await asyncio.wait_for(self.drain(), DRAIN_SECONDS)
        except TimeoutError:
            log.warning("stopping with %d Slack answer(s) unfinished", len(self._tasks))
        if self._socket_task is not None:
            self._socket_task.cancel()
        if self._socket_handler is not None:
            await self._socket_handler.close_async()

    async def drain(self) -> None:
        """Wait until every background task started so far (and any they start) is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Each event is a request of its own: its logs and its answer share a request id.
        task = asyncio.get_running_loop().create_task(work, context=fresh_context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- questions ----------------------------------------------------------------------

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        self.spawn(self.answer(body, event, context.bot_user_id))

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        if event.get("subtype") not in QUESTION_SUBTYPES or event.get("bot_id"):
            # An edit is not answered again (the original was answered); other bots are
            # never answered, so two bots cannot talk to each other forever.
            log.debug(
                "Slack message %s ignored (subtype %s)", event.get("ts"), event.get("subtype")
            )
            return
        if event.get("channel_type") == "im":
            self.spawn(self.answer(body, event, context.bot_user_id, dm=True))
        elif event.get("thread_ts") and event.get("thread_ts") != event.get("ts"):
            # A reply in a channel thread: a follow-up if kbot has answered in that thread.
            self.spawn(self._follow_up(body, event, context.bot_user_id))
        # Any other channel message is not addressed to kbot; a mention of it comes as
        # app_mention too, and is answered from there.

    async def _follow_up(
        self, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None
    ) -> None:
        """Answer a channel thread reply when kbot has answered in that thread (the query
        log says so, also after a restart); ignore it otherwise. A reply that also
        mentions kbot arrives as app_mention as well: the delivery claim in ``answer``
        (one per message) lets only one of the two answer it."""
        thread = thread_id(body, event)
        try:
            known = await asyncio.to_thread(self.runtime.answering.answered_in, PLATFORM, thread)
        except Exception:
            log.exception("Slack: cannot tell whether kbot answered in thread %s", thread)
            return
        if not known:
            log.debug("Slack reply %s in thread %s is not kbot's; ignored", event.get("ts"), thread)
            return
        await self.answer(body, event, bot_user_id)

    def audiences(self, channel: str, dm: bool) -> frozenset[str]:
        """The audiences a Slack conversation may read (``public`` is added by retrieval)."""
        names = self.config.dm_audiences if dm else self.config.channels.get(channel, [])
        return frozenset(names)

    async def answer(
        self,
        body: dict[str, Any],
        event: dict[str, Any],
        bot_user_id: str | None,
        *,
        dm: bool = False,
        assistant: bool = False,
    ) -> None:
        """Answer a message in its thread: a mention, a DM, a follow-up, or a question in
        an assistant thread (``assistant``: its status instead of the 👀 reaction, and
        Slack's feedback buttons)."""
        channel, ts, user = event.get("channel", ""), event.get("ts", ""), event.get("user")
        try:
            # One question is one message: Slack's retries of its event (same event_id)
            # name the same message, and are dropped here, even after a restart.
            key = f"{body.get('team_id', '')}:{channel}:{ts}"
            if not await asyncio.to_thread(self.deliveries.claim, PLATFORM, key):
                log.info("Slack event %s for %s is a retry; already answered", _id(body), key)
                return
            thread_ts = event.get("thread_ts") or ts
            thread = thread_id(body, event)
            question = question_text(event.get("text") or "", bot_user_id)
            if assistant:
                first = not await asyncio.to_thread(
                    self.runtime.answering.answered_in, PLATFORM, thread
                )
                await self.assistant.working(channel, thread_ts, first, question)
            else:
                await self.call(
                    "reactions.add", channel=channel, timestamp=ts, name=WORKING_REACTION
                )
            requester = Requester(
                PLATFORM, channel, user, self.audiences(channel, dm or assistant), thread
            )
            posted = await self._reply(channel, thread_ts, question, requester, body, assistant)
            if assistant and not posted:
                await self.assistant.done(channel, thread_ts)
            if not assistant:
                await self.call(
                    "reactions.remove", channel=channel, timestamp=ts, name=WORKING_REACTION
                )
        except Exception:
            log.exception("Slack event %s in %s failed", _id(body), channel)

    async def _reply(
        self,
        channel: str,
        thread_ts: str,
        question: str,
        requester: Requester,
        body: dict[str, Any],
        assistant: bool,
    ) -> bool:
        """Answer ``question`` in the thread (streamed with a model); True when a message
        was posted there."""
        user = requester.user
        try:
            if self.streaming.enabled:
                team = body.get("team_id") or ""
                return await self.streaming.answer(
                    channel, thread_ts, question, requester, team, native_feedback=assistant
                )
            answer = await asyncio.to_thread(self.runtime.answering.ask, question, requester)
        except RateLimited as e:
            # Slack's way for a notice to one person: visible only to them, in the thread.
            log.info("Slack question from %s in %s refused: %s", user, channel, e)
            await self.call(
                "chat.postEphemeral",
                channel=channel,
                user=user,
                thread_ts=thread_ts,
                text=f":hourglass_flowing_sand: {e}",
            )
            return False
        except QuestionError as e:
            log.info("Slack question from %s in %s refused: %s", user, channel, e)
            return await self.post(channel, thread_ts, str(e))
        except Exception:
            # The server log keeps the question that could not be answered.
            log.exception("answering failed for %s in %s: %r", user, channel, question)
            return await self.post(channel, thread_ts, INTERNAL_ERROR)
        return await self.post_answer(channel, thread_ts, answer, native_feedback=assistant)

    async def post_answer(
        self, channel: str, thread_ts: str, answer: Answer, *, native_feedback: bool = False
    ) -> bool:
        """Post ``answer`` in the thread as one or more messages; True when all were."""
        fallback = kit.fallback_text(answer.text)
        messages = kit.answer_messages(
            answer, self.config.escalation_channel, native_feedback=native_feedback
        )
        for blocks in messages:
            if not await self.post(channel, thread_ts, fallback, blocks):
                log.warning("answer %s was not delivered to Slack", answer.query_id)
                return False
        return True

    async def post(
        self, channel: str, thread_ts: str, text: str, blocks: list[kit.Block] | None = None
    ) -> bool:
        reply = await self.call(
            "chat.postMessage",
            channel=channel,
            thread_ts=thread_ts,
            text=text,
            blocks=blocks
            or [{"type": "section", "text": {"type": "mrkdwn", "text": kit.escape(text)}}],
            unfurl_links=False,
            unfurl_media=False,
        )
        return reply is not None

    async def call(self, method: str, **params: Any) -> Any:
        """A Web API call; a Slack error is logged and gives None instead of raising."""
        reply, _ = await self.call_reply(method, **params)
        return reply

    async def call_error(self, method: str, **params: Any) -> str | None:
        """A Web API call; None when it succeeded, else Slack's error code (logged)."""
        reply, error = await self.call_reply(method, **params)
        return None if reply is not None else error

    async def call_reply(self, method: str, **params: Any) -> tuple[Any, str | None]:
        """A Web API call: ``(reply, None)``, or ``(None, error code)`` with the failure
        logged (a network failure's code is ``"network"``)."""
        try:
            return await self.client.api_call(method, json=params), None
        except SlackApiError as e:
            error = e.response.get("error") if e.response is not None else None
            retry_after = e.response.headers.get("Retry-After") if e.response is not None else None
            hint = f" (retry after {retry_after} s)" if retry_after else ""
            log.warning("Slack %s failed: %s%s", method, error or e, hint)
            return None, str(error or "unknown")
        except (SlackClientError, OSError, TimeoutError) as e:
            log.warning("Slack %s failed: %s", method, e)
            return None, "network"

    # -- feedback -----------------------------------------------------------------------

    async def _on_vote(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        vote = "up" if action.get("action_id") == kit.VOTE_UP else "down"
        self.spawn(self._vote(body, action.get("value") or "", vote))

    async def _on_feedback_buttons(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        parsed = kit.vote_of(action.get("value") or "")
        if parsed is None:
            log.warning("Slack feedback buttons sent %r; ignored", action.get("value"))
            return
        vote, query_id = parsed
        self.spawn(self._vote(body, query_id, vote))

    async def _vote(self, body: dict[str, Any], query_id: str, vote: str) -> None:
        user = body.get("user", {}).get("id", "")
        channel = body.get("channel", {}).get("id") or body.get("container", {}).get("channel_id")
        message = body.get("message") or {}
        try:
            if vote == "down" and body.get("trigger_id"):
                # The trigger expires 3 s after the click: open the modal before anything else.
                view = kit.reason_modal(query_id, channel or "", message.get("ts", ""))
                await self.call("views.open", trigger_id=body["trigger_id"], view=view)
            if await self._record(query_id, vote, user, None) and channel and message:
                await self.call(
                    "chat.update",
                    channel=channel,
                    ts=message.get("ts"),
                    text=message.get("text", ""),
                    blocks=kit.with_feedback_note(message.get("blocks", []), vote, user),
                )
        except Exception:
            log.exception("Slack vote on %s failed", query_id)

    async def _on_reason(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()  # closes the modal
        meta, reason = kit.reason_from_view(view)
        user = body.get("user", {}).get("id", "")
        self.spawn(self._reason(meta.get("query_id", ""), user, reason))

    async def _reason(self, query_id: str, user: str, reason: str | None) -> None:
        try:
            await self._record(query_id, "down", user, reason)
        except Exception:
            log.exception("Slack feedback reason on %s failed", query_id)

    async def _record(self, query_id: str, vote: str, user: str, reason: str | None) -> bool:
        try:
            await asyncio.to_thread(
                self.runtime.feedback.record, query_id, vote, user=user, reason=reason
            )
        except FeedbackError as e:
            log.warning("Slack feedback from %s not recorded: %s", user, e)
            return False
        return True

    async def _on_unknown_action(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        ids = [a.get("action_id") for a in body.get("actions", [])]
        log.warning("Slack action %s is not one of kbot's; ignored", ids)


def thread_id(body: dict[str, Any], event: dict[str, Any]) -> str:
    """The Slack thread a message belongs to, "<team>:<channel>:<thread ts>": a message
    that is not a reply starts the thread kbot answers it in (its own ts)."""
    thread_ts = event.get("thread_ts") or event.get("ts", "")
    return f"{body.get('team_id', '')}:{event.get('channel', '')}:{thread_ts}"


def thread_parts(key: str | None) -> tuple[str, str, str] | None:
    """``(team, channel, thread ts)`` of a query log's Slack thread key, the
    ``"slack:" + thread_id(...)`` of a question answered in a thread; None for any other
    key (a digest of a long one, or a private answer's)."""
    parts = (key or "").split(":")
    if len(parts) != 4 or parts[0] != "slack":
        return None
    return parts[1], parts[2], parts[3]


def _id(body: dict[str, Any]) -> str:
    return str(body.get("event_id", "?"))


class _TooLarge(Exception):
    pass


async def _read_body(request: web.Request, limit: int) -> str:
    """The raw body (bolt checks the signature over exactly these bytes), at most ``limit``."""
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise _TooLarge
    return data.decode("utf-8")


def mount(
    app: web.Application,
    runtime: Runtime,
    *,
    socket_mode: bool = False,
    env: Mapping[str, str] | None = None,
) -> SlackAdapter | None:
    """Serve Slack from ``app`` when its credentials are in the environment.

    HTTP mode adds ``POST /slack/events``; Socket Mode connects when the app starts.
    Without credentials Slack is off (one log line says why); with ``socket_mode`` that is
    an error, since it was asked for explicitly.
    """
    credentials = SlackCredentials.from_env(env)
    missing = credentials.missing(socket_mode)
    if missing:
        if socket_mode:
            raise SlackSetupError(
                f"--slack-socket-mode needs {' and '.join(missing)} in the environment "
                "(the app-level token xapp-... and the bot token xoxb-...)"
            )
        log.info("Slack is off: set %s to serve %s", " and ".join(missing), EVENTS_PATH)
        return None
    adapter = SlackAdapter(runtime, credentials, socket_mode=socket_mode)
    if socket_mode:
        app.on_startup.append(adapter.start_socket_mode)
        log.info("Slack: Socket Mode")
    else:
        app.router.add_post(EVENTS_PATH, adapter.handle)
        log.info("Slack: events at %s", EVENTS_PATH)
    app.on_shutdown.append(adapter.close)
    return adapter


def _unreadable(body: str, content_type: str | None) -> str | None:
    """Why a request body is not one Slack sends (a JSON object, or a form whose payload is
    one), read as bolt reads it; None when it is."""
    from slack_bolt.request.internals import parse_body

    try:
        parsed = parse_body(body, content_type)
    except ValueError as e:  # json.JSONDecodeError
        return f"the body is not valid JSON ({e})"
    if not isinstance(parsed, dict):
        return f"the body must be a JSON object, not {type(parsed).__name__}"
    return _shape_problem(parsed)


# Fields of Slack's envelopes and interaction payloads that bolt reads by their shape.
_OBJECTS = ("event", "user", "channel", "team", "container", "message", "view", "enterprise")
_LISTS_OF_OBJECTS = ("authorizations", "actions")
_STRINGS = ("type", "team_id", "api_app_id", "event_id", "token", "trigger_id", "enterprise_id")
_EVENT_STRINGS = ("type", "subtype", "user", "bot_id", "channel", "text", "ts", "thread_ts")


def _shape_problem(body: dict[str, Any]) -> str | None:
    if "event" in body and not isinstance(body["event"], dict):
        return "'event' must be an object"  # bolt reads event.bot_id of every request
    for key in _OBJECTS:
        allowed = dict if key == "event" else dict | str  # a user may be an id or an object
        if body.get(key) is not None and not isinstance(body[key], allowed):
            return f"'{key}' has the wrong type"
    for key in _LISTS_OF_OBJECTS:
        value = body.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            return f"'{key}' must be a list of objects"
    for key in _STRINGS:
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"'{key}' must be a string"
    event = body.get("event") or {}
    for key in _EVENT_STRINGS:
        if event.get(key) is not None and not isinstance(event[key], str):
            return f"'event.{key}' must be a string"
    return None
