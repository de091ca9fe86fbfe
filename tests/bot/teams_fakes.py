"""Stand-ins for Microsoft's side of a Teams bot, speaking its wire format on 127.0.0.1: the
Bot Connector service (where a bot posts its replies) and the OpenID metadata and signing
keys the Bot Framework publishes for its tokens; plus activities as Teams posts them."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.bot.servers import serve

BOT_ID = "28:kbot-app-id"
TENANT = "72f988bf-0000-0000-0000-000000000001"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"


@dataclass
class Call:
    """One request the bot made to the Bot Connector."""

    method: str
    conversation_id: str
    activity_id: str | None  # the replyToId (POST) or the updated activity's id (PUT)
    body: dict[str, Any]
    status: int  # what the fake answered
    returned_id: str | None  # the id it gave the activity, as the real service does
    received: float = field(default_factory=time.perf_counter)  # for benchmarks


@dataclass
class Connector:
    """The Bot Connector service: records every call, answers ``{"id": ...}`` as the real one
    does, and can be told to fail the next message deliveries first."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    # Statuses (and Retry-After values) answered to the next message deliveries, in order.
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    # Statuses answered to the next streaming updates (403: the user stopped the stream).
    stream_failures: list[int] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _next: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/conversations/{conversation}/activities/{reply_to}", self._post)
        app.router.add_post("/v3/conversations/{conversation}/activities", self._post)
        app.router.add_put("/v3/conversations/{conversation}/activities/{activity}", self._put)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._cond:
            status, retry_after = self._outcome(body)
            self._next += 1
            new_id = f"1{self._next:012d}"
            self._record(request, body, request.match_info.get("reply_to"), status, new_id)
        if status != 200:
            return self._error(status, retry_after)
        return web.json_response({"id": new_id}, status=200)

    async def _put(self, request: web.Request) -> web.Response:
        body = await request.json()
        activity_id = request.match_info["activity"]
        with self._cond:
            status, retry_after = self._outcome(body)
            self._record(request, body, activity_id, status, activity_id)
        if status != 200:
            return self._error(status, retry_after)
        return web.json_response({"id": activity_id}, status=200)

    def _outcome(self, body: dict[str, Any]) -> tuple[int, str | None]:
        # Typing indicators always go through, so a failure is spent on a real message.
        if body.get("type") == "message" and self.failures:
            return self.failures.pop(0)
        streaming = any(e.get("streamType") == "streaming" for e in body.get("entities") or [])
        if streaming and self.stream_failures:
            return self.stream_failures.pop(0), None
        return 200, None

    def _record(
        self, request: web.Request, body: dict, activity_id: str | None, status: int, new_id: str
    ) -> None:
        conversation = request.match_info["conversation"]
        returned = new_id if status == 200 else None
        self.calls.append(Call(request.method, conversation, activity_id, body, status, returned))
        self._cond.notify_all()

    @staticmethod
    def _error(status: int, retry_after: str | None) -> web.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        error = {"error": {"code": "ServiceError", "message": f"fake failure {status}"}}
        return web.json_response(error, status=status, headers=headers)

    def messages(self) -> list[Call]:
        """Delivered messages and updates (not typing indicators), in order."""
        with self._cond:
            return [c for c in self.calls if c.body.get("type") == "message" and c.status == 200]

    def wait_for(self, predicate, timeout: float = 60) -> list[Call]:
        """Wait until ``predicate(calls)`` holds; the calls so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.calls):
                left = deadline - time.monotonic()
                assert left > 0, f"the bot never made the expected calls: {self.calls}"
                self._cond.wait(left)
            return list(self.calls)


@contextmanager
def connector() -> Iterator[Connector]:
    fake = Connector()
    with serve(fake.app()) as url:
        fake.url = url
        yield fake


@dataclass
class TokenIssuer:
    """The Bot Framework's token signing: an OpenID metadata document, its JWKS, and tokens
    signed with the matching private key, as the Bot Connector sends with each activity."""

    metadata_url: str
    kid: str
    key: rsa.RSAPrivateKey

    def token(self, app_id: str, service_url: str, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": BOT_FRAMEWORK_ISSUER,
            "aud": app_id,
            "serviceurl": service_url,
            "nbf": now - 60,
            "exp": now + 3600,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "n": b64(numbers.n),
        "e": b64(numbers.e),
        "endorsements": ["msteams"],
    }


@contextmanager
def token_issuer() -> Iterator[TokenIssuer]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = uuid.uuid4().hex
    app = web.Application()
    base: dict[str, str] = {}

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response({"issuer": BOT_FRAMEWORK_ISSUER, "jwks_uri": base["url"] + "keys"})

    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [_jwk(key, kid)]})

    app.router.add_get("/openidconfiguration", metadata)
    app.router.add_get("/keys", keys)
    with serve(app) as url:
        base["url"] = url
        yield TokenIssuer(url + "openidconfiguration", kid, key)


# -- activities as Teams posts them -------------------------------------------------------


def _base(kind: str, service_url: str, conversation: dict, user: str, **extra: Any) -> dict:
    return {
        "type": kind,
        "id": f"1{uuid.uuid4().int % 10**12:012d}",
        "timestamp": "2026-11-28T09:15:04.123Z",
        "localTimestamp": "2026-11-28T10:15:04.123+01:00",
        "serviceUrl": service_url,
        "channelId": "msteams",
        "from": {"id": f"29:1{user}", "name": user.title(), "aadObjectId": f"aad-{user}"},
        "conversation": conversation,
        "recipient": {"id": BOT_ID, "name": "kbot"},
        "locale": "en-US",
        **extra,
    }


def channel_conversation(channel: str, team: str, root: str = "1700000000000") -> dict:
    return {
        "isGroup": True,
        "conversationType": "channel",
        "tenantId": TENANT,
        "id": f"{channel};messageid={root}",
    }


def channel_data(channel: str, team: str, group: str | None = None) -> dict:
    data: dict[str, Any] = {
        "teamsChannelId": channel,
        "teamsTeamId": team,
        "channel": {"id": channel},
        "team": {"id": team},
        "tenant": {"id": TENANT},
    }
    if group:
        data["team"]["aadGroupId"] = group
    return data


def channel_mention(
    service_url: str,
    question: str,
    *,
    channel: str,
    team: str,
    user: str,
    group: str | None = None,
    root: str = "1700000000000",
) -> dict:
    """An @-mention of the bot in a Teams channel post (in the reply chain of ``root``)."""
    return _base(
        "message",
        service_url,
        channel_conversation(channel, team, root),
        user,
        textFormat="plain",
        text=f"<at>kbot</at> {question}",
        attachments=[
            {"contentType": "text/html", "content": f"<div><at>kbot</at> {question}</div>"}
        ],
        entities=[
            {
                "type": "mention",
                "mentioned": {"id": BOT_ID, "name": "kbot"},
                "text": "<at>kbot</at>",
            },
            {"type": "clientInfo", "locale": "en-US", "country": "US", "platform": "Web"},
        ],
        channelData=channel_data(channel, team, group),
    )


def personal_message(service_url: str, text: str, *, user: str, **extra: Any) -> dict:
    """A message in the 1:1 chat with the bot."""
    return _base(
        "message",
        service_url,
        personal_conversation(user),
        user,
        textFormat="plain",
        text=text,
        entities=[{"type": "clientInfo", "locale": "en-US", "platform": "Windows"}],
        channelData={"tenant": {"id": TENANT}},
        **extra,
    )


def group_chat_mention(service_url: str, question: str, *, user: str) -> dict:
    return _base(
        "message",
        service_url,
        {
            "isGroup": True,
            "conversationType": "groupChat",
            "tenantId": TENANT,
            "id": "19:groupchat-1@thread.v2",
        },
        user,
        textFormat="plain",
        text=f"<at>kbot</at> {question}",
        entities=[
            {
                "type": "mention",
                "mentioned": {"id": BOT_ID, "name": "kbot"},
                "text": "<at>kbot</at>",
            }
        ],
        channelData={"tenant": {"id": TENANT}},
    )


def feedback_invoke(
    service_url: str,
    reply_to: str,
    reaction: str,
    text: str | None,
    *,
    user: str,
    conversation: dict,
) -> dict:
    """Teams' feedback loop: the user pressed 👍/👎 under a bot message (and wrote a reason)."""
    # Teams sends the form as a JSON string inside the JSON activity.
    feedback = json.dumps({"feedbackText": text}) if text is not None else ""
    return _base(
        "invoke",
        service_url,
        conversation,
        user,
        name="message/submitAction",
        replyToId=reply_to,
        value={
            "actionName": "feedback",
            "actionValue": {"reaction": reaction, "feedback": feedback},
        },
        channelData={
            "tenant": {"id": TENANT},
            "source": {"name": "message"},
            "legacy": {"replyToId": reply_to},
        },
    )


def bot_installed_in_team(service_url: str, *, channel: str, team: str, user: str) -> dict:
    """The conversationUpdate Teams sends when the app is added to a team."""
    return _base(
        "conversationUpdate",
        service_url,
        {"isGroup": True, "conversationType": "channel", "tenantId": TENANT, "id": team},
        user,
        membersAdded=[{"id": BOT_ID}],
        channelData={
            "team": {"id": team, "name": "SRE", "aadGroupId": "0b7a5e3c-group"},
            "eventType": "teamMemberAdded",
            "tenant": {"id": TENANT},
            "settings": {"selectedChannel": {"id": channel}},
        },
    )


def channel_reply(
    service_url: str, text: str, *, channel: str, team: str, root: str, user: str
) -> dict:
    """A reply without a mention in the reply chain of the channel post ``root`` (Teams
    sends it to an app that may read the channel)."""
    return _base(
        "message",
        service_url,
        channel_conversation(channel, team, root),
        user,
        textFormat="plain",
        text=text,
        entities=[{"type": "clientInfo", "locale": "en-US", "platform": "Web"}],
        channelData=channel_data(channel, team),
    )


def personal_conversation(user: str) -> dict:
    return {"conversationType": "personal", "tenantId": TENANT, "id": f"a:1personal-{user}"}


def bot_installed_personal(service_url: str, *, user: str) -> dict:
    """The conversationUpdate Teams sends when a user adds the app for a 1:1 chat."""
    return _base(
        "conversationUpdate",
        service_url,
        personal_conversation(user),
        user,
        membersAdded=[{"id": BOT_ID}],
        channelData={"tenant": {"id": TENANT}},
    )
