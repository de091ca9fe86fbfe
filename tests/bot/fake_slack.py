"""A local stand-in for Slack: its Web API (the methods kbot calls, in their real JSON shapes),
its Socket Mode WebSocket, and requests signed exactly as Slack signs them.

Used by tests/bot/test_slack.py and bench/slack.py. The fake and the kbot server share one
event loop in a background thread (``Loop``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-1-kbot-test"
APP_TOKEN = "xapp-1-kbot-test"
TEAM = "T0KBOT"
BOT_USER = "UKBOTBOT"
BOT_ID = "BKBOTBOT"
# How long a held call waits for the test to release it before answering anyway.
HOLD_LIMIT_S = 30.0


class Loop:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@contextmanager
def serving(loop: Loop, app: web.Application) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 with a free port on ``loop``; yields the base URL."""
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    port = loop.run(start())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        loop.run(runner.cleanup())


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    received: float  # time.perf_counter() when the request arrived
    answered: float = 0.0  # when the fake replied (after any hold)
    reply: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hold:
    """Keeps one Web API method's replies waiting until the test releases them."""

    method: str
    released: threading.Event = field(default_factory=threading.Event)
    released_by_test: bool = False
    waiting: int = 0

    def release(self) -> None:
        self.released_by_test = True
        self.released.set()


class FakeSlack:
    """Slack's Web API on a local server, recording every call kbot makes."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.changed = threading.Condition()
        self.failures: dict[str, str] = {}  # channel -> Slack error code for any call there
        self.ratelimited: dict[str, int] = {}  # method -> 429 replies still to give
        self.holds: dict[str, Hold] = {}
        self.unknown: set[str] = set()  # methods this "workspace" does not have
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: list[dict[str, Any]] = []
        self._ts = itertools.count(1)
        self.url = ""
        # A streamed message's text as Slack shows it, by its ts (chat.startStream onwards).
        self.streams: dict[str, str] = {}
        self.stopped: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # read methods, as slack_sdk calls them
        app.router.add_post("/response/{hook}", self._response_url)
        app.router.add_get("/socket", self._socket)
        return app

    def response_url(self, hook: str) -> str:
        """A response URL (of a slash command, shortcut or button) that lands here."""
        return f"{self.url}response/{hook}"

    # -- what the test sees ------------------------------------------------------------

    def of(self, method: str, **match: Any) -> list[Call]:
        with self.changed:
            return [
                c
                for c in self.calls
                if c.method == method and all(c.params.get(k) == v for k, v in match.items())
            ]

    def wait(self, predicate: Callable[[], T], timeout: float = 60) -> T:
        """Wait until ``predicate()`` is truthy (re-checked whenever a call arrives)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (result := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting; calls so far: {self.summary()}")
                self.changed.wait(left)
            return result

    def summary(self) -> list[tuple[str, Any]]:
        return [(c.method, c.params.get("channel")) for c in self.calls]

    def hold(self, method: str) -> Hold:
        self.holds[method] = Hold(method)
        return self.holds[method]

    # -- the Web API -------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        auth = request.headers.get("Authorization", "")
        call = Call(method, params, auth.removeprefix("Bearer ") or None, time.perf_counter())
        with self.changed:
            self.calls.append(call)
            self.changed.notify_all()
        hold = self.holds.get(method)
        if hold is not None:
            hold.waiting += 1
            await asyncio.to_thread(hold.released.wait, HOLD_LIMIT_S)
        reply = self._reply(method, params, call.token)
        with self.changed:
            call.reply = json.loads(reply.body)
            call.answered = time.perf_counter()
            self.changed.notify_all()
        return reply

    def _reply(self, method: str, params: dict[str, Any], token: str | None) -> web.Response:
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        left = self.ratelimited.get(method, 0)
        if left:
            self.ratelimited[method] = left - 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        error = self.failures.get(params.get("channel", ""))
        if error:
            return web.json_response({"ok": False, "error": error})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None or method in self.unknown:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        try:
            return web.json_response({"ok": True, **handler(params)})
        except _Error as e:
            return web.json_response({"ok": False, "error": str(e)})

    def _auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://kbot-test.slack.com/",
            "team": "kbot test",
            "user": "kbot",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _message(self, p: dict[str, Any], ts: str) -> dict[str, Any]:
        msg = {
            "type": "message",
            "subtype": "bot_message",
            "text": p.get("text", ""),
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "ts": ts,
            "team": TEAM,
            "blocks": p.get("blocks", []),
        }
        if p.get("thread_ts"):
            msg["thread_ts"] = p["thread_ts"]
        return msg

    def _chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        return {"channel": p.get("channel"), "ts": ts, "message": self._message(p, ts)}

    # Message streaming: the text is markdown_text (or markdown_text chunks), appended.

    def _chat_startStream(self, p: dict[str, Any]) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        self.streams[ts] = _streamed_text(p)
        return {"channel": p.get("channel"), "ts": ts}

    def _chat_appendStream(self, p: dict[str, Any]) -> dict[str, Any]:
        ts = p.get("ts", "")
        if ts not in self.streams or ts in self.stopped:
            raise _Error("message_not_in_streaming_state")
        self.streams[ts] += _streamed_text(p)
        return {"channel": p.get("channel"), "ts": ts}

    def _chat_stopStream(self, p: dict[str, Any]) -> dict[str, Any]:
        ts = p.get("ts", "")
        if ts not in self.streams or ts in self.stopped:
            raise _Error("message_not_in_streaming_state")
        self.streams[ts] += _streamed_text(p)
        self.stopped.add(ts)
        message = self._message({"text": self.streams[ts], "blocks": p.get("blocks", [])}, ts)
        return {"channel": p.get("channel"), "ts": ts, "message": message}

    def _assistant_threads_setStatus(self, p: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _assistant_threads_setTitle(self, p: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _assistant_threads_setSuggestedPrompts(self, p: dict[str, Any]) -> dict[str, Any]:
        if not 1 <= len(p.get("prompts") or []) <= 4:
            raise _Error("invalid_arguments")
        return {}

    def _views_publish(self, p: dict[str, Any]) -> dict[str, Any]:
        view = p.get("view") or {}
        return {"view": {"id": "V" + uuid.uuid4().hex[:10].upper(), "team_id": TEAM, **view}}

    def _chat_getPermalink(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, ts = p.get("channel", ""), p.get("message_ts", "")
        url = f"https://kbot-test.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"channel": channel, "permalink": url}

    async def _response_url(self, request: web.Request) -> web.Response:
        """A response URL: Slack takes a JSON message and answers a plain ``ok``."""
        call = Call("response_url", await request.json(), None, time.perf_counter())
        call.params["hook"] = request.match_info["hook"]
        with self.changed:
            self.calls.append(call)
            call.answered = time.perf_counter()
            self.changed.notify_all()
        return web.Response(text="ok")

    def _chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"message_ts": f"{int(time.time())}.{next(self._ts):06d}"}

    def _chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "channel": p.get("channel"),
            "ts": p.get("ts"),
            "text": p.get("text", ""),
            "message": self._message(p, p.get("ts", "")),
        }

    def _views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        view = p.get("view") or {}
        if isinstance(view, str):
            view = json.loads(view)
        return {
            "view": {
                "id": "V" + uuid.uuid4().hex[:10].upper(),
                "team_id": TEAM,
                "state": {"values": {}},
                "hash": "1700000000.abcdef",
                **view,
            }
        }

    def _reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _reactions_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.url.replace("http://", "ws://") + "socket"}

    # -- Socket Mode -------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        with self.changed:
            self.sockets.append(ws)
            self.changed.notify_all()
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0KBOT"}}
        )
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                with self.changed:
                    self.acks.append(json.loads(msg.data))
                    self.changed.notify_all()
        return ws

    async def push(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Send an envelope over the Socket Mode connection; returns its envelope id."""
        envelope_id = str(uuid.uuid4())
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "accepts_response_payload": kind != "events_api",
                "payload": payload,
            }
        )
        return envelope_id


class _Error(Exception):
    """A Web API error reply (``{"ok": false, "error": ...}``)."""


def _streamed_text(p: dict[str, Any]) -> str:
    text = p.get("markdown_text") or ""
    for chunk in p.get("chunks") or []:
        if chunk.get("type") == "markdown_text":
            text += chunk.get("text", "")
    return text


async def _params(request: web.Request) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query)
    raw = await request.read()
    if request.content_type == "application/json":
        return json.loads(raw or b"{}")
    params = dict(urllib.parse.parse_qsl(raw.decode()))
    for key in ("blocks", "view", "prompts"):  # form-encoded calls carry these as JSON
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


# -- requests as Slack sends them --------------------------------------------------------


def signed_headers(
    body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None, form: bool = False
) -> dict[str, str]:
    """Slack's v0 signature: HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded" if form else "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


_seq = itertools.count(1)


def new_ts() -> str:
    """A unique Slack message timestamp."""
    return f"{int(time.time())}.{next(_seq):06d}"


def event_callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The Events API envelope around ``event``."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0KBOT",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM,
                "user_id": BOT_USER,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def mention(text: str, channel: str, *, user: str = "U0ALICE", ts: str | None = None) -> dict:
    """An ``app_mention`` event: ``text`` after the bot's mention."""
    ts = ts or new_ts()
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
    }


def channel_message(
    text: str,
    channel: str,
    *,
    thread_ts: str | None = None,
    user: str = "U0ALICE",
    ts: str | None = None,
    channel_type: str = "channel",
    **extra: Any,
) -> dict:
    """A ``message.channels`` event (``message.groups`` with ``channel_type="group"``): a
    reply in thread ``thread_ts``, or a top-level post without it. A message that
    mentions the bot (``<@UKBOTBOT>`` in ``text``) comes as ``app_mention`` too."""
    ts = ts or new_ts()
    event = {
        "type": "message",
        "channel_type": channel_type,
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = user
    return event


def direct_message(text: str, channel: str, *, user: str = "U0ALICE", **extra: Any) -> dict:
    """A ``message.im`` event."""
    ts = new_ts()
    return {
        "type": "message",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
        **extra,
    }


def block_action(
    message: dict[str, Any], channel: str, action_id: str, value: str, user: str
) -> dict:
    """A ``block_actions`` payload: ``user`` clicked a button on ``message``."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0KBOT",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{next(_seq)}.{int(time.time())}.{uuid.uuid4().hex}",
        "team": {"id": TEAM, "domain": "kbot-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "questions"},
        "message": message,
        "state": {"values": {}},
        "response_url": "https://hooks.slack.invalid/actions/T0KBOT/1/x",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "kbot_feedback",
                "text": {"type": "plain_text", "text": "vote", "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def view_submission(view: dict[str, Any], user: str, values: dict[str, Any]) -> dict:
    """A ``view_submission`` payload for the modal ``view`` with the input ``values``."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "kbot-test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "api_app_id": "A0KBOT",
        "token": "legacy-verification-token",
        "trigger_id": f"{next(_seq)}.{int(time.time())}.{uuid.uuid4().hex}",
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def form_body(payload: dict[str, Any]) -> str:
    """Interactivity payloads arrive form-encoded as ``payload=<json>``."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def assistant_thread_started(channel: str, *, user: str = "U0ALICE", context_channel: str = ""):
    """An ``assistant_thread_started`` event: ``user`` opened kbot's assistant panel; the
    thread's ts is new."""
    ts = new_ts()
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": {"channel_id": context_channel, "team_id": TEAM, "enterprise_id": None}
            if context_channel
            else {},
            "channel_id": channel,
            "thread_ts": ts,
        },
        "event_ts": new_ts(),
    }


def assistant_message(text: str, channel: str, thread_ts: str, *, user: str = "U0ALICE"):
    """A person's message in an assistant thread (a ``message.im`` event in its thread)."""
    return direct_message(text, channel, user=user, thread_ts=thread_ts, parent_user_id=BOT_USER)


def message_shortcut(
    message: dict[str, Any], channel: str, response_url: str, *, user: str = "U0ALICE"
) -> dict:
    """A ``message_action`` payload: ``user`` chose "Ask kbot about this" on ``message``."""
    return {
        "type": "message_action",
        "token": "legacy-verification-token",
        "action_ts": f"{time.time():.6f}",
        "team": {"id": TEAM, "domain": "kbot-test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "channel": {"id": channel, "name": "questions"},
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": "ask_kbot",
        "trigger_id": f"{next(_seq)}.{int(time.time())}.{uuid.uuid4().hex}",
        "response_url": response_url,
        "message_ts": message["ts"],
        "message": message,
    }


def slash_command(text: str, channel: str, response_url: str, *, user: str = "U0ALICE") -> str:
    """A slash command's form body, as Slack posts it."""
    return urllib.parse.urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "team_domain": "kbot-test",
            "channel_id": channel,
            "channel_name": "questions",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/kbot",
            "text": text,
            "api_app_id": "A0KBOT",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": f"{next(_seq)}.{int(time.time())}.{uuid.uuid4().hex}",
        }
    )


def app_home_opened(user: str, *, tab: str = "home") -> dict:
    """An ``app_home_opened`` event."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0HOME" + user[-4:],
        "tab": tab,
        "event_ts": new_ts(),
    }
