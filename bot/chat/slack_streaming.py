"""Generated answers streamed into their Slack thread (``chat.startStream`` /
``chat.appendStream`` / ``chat.stopStream``).

The model's text is shown as it comes; the answer is validated on the complete text, so
when the stream stops the message becomes the answer as logged: the sources and votes
attached by ``stopStream``, and the whole message rewritten (``chat.update``) when the
final text differs from what was streamed (the extractive fallback and why, or
renumbered citations). A stream never stays half-written.

Appends are batched: while one is on its way the next pieces wait and go as one, and a
``ratelimited`` reply is waited out (its Retry-After) with nothing dropped. Where Slack
has no streaming (``unknown_method``, ``not_allowed``...), answers are posted as they
were before, for the rest of the process's life.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.answer.streaming import Delta, Final
from bot.answer.types import Requester
from bot.chat import slack_blocks as kit
from bot.chat.slack_text import INTERNAL_ERROR

if TYPE_CHECKING:
    from bot.chat.slack import SlackAdapter

log = logging.getLogger(__name__)

# Slack's answers when a workspace (or its plan) has no message streaming.
UNSUPPORTED = {"unknown_method", "not_allowed", "method_deprecated", "not_allowed_token_type"}
# How long to wait on a ratelimited append whose reply named no Retry-After.
DEFAULT_RETRY_AFTER_S = 1.0
# A stream's end waits out this many ratelimited calls, then rewrites the message whole.
MAX_RATE_LIMIT_WAITS = 5
# One append carries at most this much (Slack's limit on markdown_text is 12,000).
MAX_APPEND_CHARS = 10_000
_END = object()


class StreamedAnswers:
    """Streams generated answers for one ``SlackAdapter``."""

    def __init__(self, adapter: SlackAdapter):
        self.adapter = adapter
        # Its own client: a ratelimited append is waited out here, with the text that
        # arrives meanwhile batched into the next call, not retried as it was.
        self.client = AsyncWebClient(
            token=adapter.credentials.bot_token,
            base_url=adapter.config.api_base_url,
            logger=log,
            retry_handlers=[AsyncConnectionErrorRetryHandler()],
        )
        self.supported = True

    @property
    def enabled(self) -> bool:
        """Whether answers are streamed: with a model, where Slack streams."""
        return self.supported and self.adapter.runtime.answering.generator is not None

    async def answer(
        self,
        channel: str,
        thread_ts: str,
        question: str,
        requester: Requester,
        team: str,
        *,
        native_feedback: bool = False,
    ) -> bool:
        """Answer ``question`` in the thread, streaming the model's text; True when the
        answer was posted. Raises what ``AnsweringService.stream`` raises before its first
        piece (QuestionError, RateLimited)."""
        events = self.adapter.runtime.answering.stream(question, requester)
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        first = await asyncio.to_thread(next, events)  # raises a refusal here, unstarted
        pump = asyncio.create_task(_pump(first, events, pieces, asyncio.get_running_loop()))
        stream = _Stream(self, channel, thread_ts, requester.user or "", team)
        try:
            final = await stream.run(pieces)
        except Exception:
            pump.cancel()
            if stream.ts is None:
                raise  # nothing shown yet: the adapter apologises as for any answer
            log.exception("answering failed mid-stream for %s in %s", requester.user, channel)
            return await stream.abandon()
        await pump
        answer = final.answer
        if stream.ts is None:
            # Nothing was streamed (an abstention, no model call, no streaming in Slack).
            messages = kit.answer_messages(
                answer, self.adapter.config.escalation_channel, native_feedback=native_feedback
            )
            return await self._post(channel, thread_ts, answer.text, messages)
        return await stream.finish(final, native_feedback)

    async def _post(
        self, channel: str, thread_ts: str, text: str, messages: list[list[kit.Block]]
    ) -> bool:
        fallback = kit.fallback_text(text)
        for blocks in messages:
            if not await self.adapter.post(channel, thread_ts, fallback, blocks):
                return False
        return True


async def _pump(
    first: Delta | Final,
    events: Iterator[Delta | Final],
    pieces: asyncio.Queue[Any],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Hand the answer's events to ``pieces`` as the service yields them (on a thread:
    the service blocks between pieces)."""
    stop = threading.Event()

    def run() -> None:
        try:
            item: Any = first
            while True:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
                if isinstance(item, Final) or stop.is_set():
                    return
                item = next(events)
        except BaseException as e:  # raised on the event loop by the consumer
            loop.call_soon_threadsafe(pieces.put_nowait, e)

    try:
        await asyncio.to_thread(run)
    except asyncio.CancelledError:
        stop.set()
        raise


class _Stream:
    """One streamed message: started at the first piece, appended in batches."""

    def __init__(self, owner: StreamedAnswers, channel: str, thread_ts: str, user: str, team: str):
        self.owner = owner
        self.channel, self.thread_ts, self.user, self.team = channel, thread_ts, user, team
        self.ts: str | None = None
        self.streamed = ""  # what Slack has been sent
        # Slack refused a call of the started stream: the rest is shown when it ends.
        self.broken = False

    async def run(self, pieces: asyncio.Queue[Any]) -> Final:
        """Stream the deltas from ``pieces``; returns the Final."""
        pending = ""
        while True:
            item = await pieces.get()
            # Take whatever else is already waiting: one call for all of it.
            batch = [item]
            while not pieces.empty() and not isinstance(batch[-1], Final | BaseException):
                batch.append(pieces.get_nowait())
            for got in batch:
                if isinstance(got, BaseException):
                    raise got
                if isinstance(got, Delta):
                    pending += got.text
            if isinstance(batch[-1], Final):
                if pending and self.ts is not None and not self.broken:
                    pending = await self._send(pending, final=True)
                return batch[-1]
            if pending and self.owner.supported and not self.broken:
                pending = await self._send(pending)
            elif not self.owner.supported or self.broken:
                pending = ""  # shown whole at the end instead

    async def _send(self, text: str, final: bool = False) -> str:
        """Send ``text`` (start the stream, or append); returns what is left to send:
        nothing, or all of it after a ratelimited call (waited out when ``final``)."""
        waits = 0
        while text:
            part, rest = text[:MAX_APPEND_CHARS], text[MAX_APPEND_CHARS:]
            if self.ts is None:
                error, retry = await self._api(
                    "chat.startStream",
                    channel=self.channel,
                    thread_ts=self.thread_ts,
                    recipient_user_id=self.user or None,
                    recipient_team_id=self.team or None,
                    markdown_text=part,
                )
            else:
                error, retry = await self._api(
                    "chat.appendStream", channel=self.channel, ts=self.ts, markdown_text=part
                )
            if error == "ratelimited" and waits < MAX_RATE_LIMIT_WAITS:
                await asyncio.sleep(retry)
                if not final:
                    return text  # sent with the pieces that arrive meanwhile
                waits += 1
                continue
            if error is not None:
                if self.ts is None and error in UNSUPPORTED:
                    log.info("Slack has no message streaming here (%s): posting answers", error)
                    self.owner.supported = False
                    return ""
                log.warning("Slack stream in %s broken: %s", self.channel, error)
                self.broken = True
                return ""
            self.streamed += part
            text = rest
        return ""

    async def _api(self, method: str, **params: Any) -> tuple[str | None, float]:
        """``(error code or None, Retry-After seconds)``; a started stream's ts is kept."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            reply = await self.owner.client.api_call(method, json=params)
        except SlackApiError as e:
            response = e.response
            error = str(response.get("error") or "unknown") if response is not None else "unknown"
            after = response.headers.get("Retry-After") if response is not None else None
            log.info("Slack %s failed: %s", method, error)
            try:
                wait = float(after) if after else DEFAULT_RETRY_AFTER_S
            except ValueError:
                wait = DEFAULT_RETRY_AFTER_S
            return error, wait
        except (SlackClientError, OSError, TimeoutError) as e:
            log.warning("Slack %s failed: %s", method, e)
            return "network", 0.0
        if method == "chat.startStream":
            self.ts = str(reply.get("ts"))
        return None, 0.0

    async def finish(self, final: Final, native_feedback: bool) -> bool:
        """Stop the stream with the sources and votes; rewrite it when the answer's text
        is not what was streamed."""
        adapter = self.owner.adapter
        answer = final.answer
        footer = kit.answer_footer(answer, native_feedback=native_feedback)
        error = await self._stop(footer)
        if error is not None:
            log.warning("Slack stream %s not stopped (%s); rewriting it", self.ts, error)
        intact = error is None and not self.broken
        if intact and not final.replaced and answer.text == self.streamed:
            return True
        messages = kit.answer_messages(
            answer,
            adapter.config.escalation_channel,
            native_feedback=native_feedback,
            note=final.note,
        )
        fallback = kit.fallback_text(answer.text)
        updated = await adapter.call(
            "chat.update", channel=self.channel, ts=self.ts, text=fallback, blocks=messages[0]
        )
        if updated is None:
            return False
        return await self.owner._post(self.channel, self.thread_ts, answer.text, messages[1:])

    async def _stop(self, blocks: list[kit.Block] | None) -> str | None:
        params: dict[str, Any] = {"channel": self.channel, "ts": self.ts}
        if blocks:
            params["blocks"] = blocks
        for _ in range(MAX_RATE_LIMIT_WAITS):
            error, retry = await self._api("chat.stopStream", **params)
            if error != "ratelimited":
                return error
            await asyncio.sleep(retry)
        return "ratelimited"

    async def abandon(self) -> bool:
        """An answer that failed mid-stream: the streamed text gives way to the apology.
        True when it did."""
        await self._stop(None)
        updated = await self.owner.adapter.call(
            "chat.update",
            channel=self.channel,
            ts=self.ts,
            text=INTERNAL_ERROR,
            blocks=kit.notice(INTERNAL_ERROR),
        )
        return updated is not None
