"""A fake OpenAI-compatible model server on 127.0.0.1: ``POST /v1/chat/completions`` speaks
the chat-completions wire format, replying with a per-test script of steps and recording
every request body. A request with ``"stream": true`` is answered as OpenAI streams:
Server-Sent Events of ``chat.completion.chunk``s (the usage in a last chunk when
``stream_options.include_usage`` asks for it), ending with ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.bot.servers import serve


@dataclass
class Step:
    """One scripted reply: an HTTP status, a body (JSON-encoded unless ``str``), headers, and
    a delay before replying."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    # Streamed: the content in these pieces (default: the completion's content word by
    # word), with a pause before piece ``pause_at`` (a model that stalls mid-stream).
    pieces: list[str] | None = None
    pause_at: int | None = None
    pause_s: float = 0.0


def completion(
    content: str,
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 900,
    completion_tokens: int = 60,
    cached_tokens: int = 0,
    model: str = "gpt-4o-mini-2024-07-18",
) -> Step:
    """A successful chat completion, as OpenAI returns it."""
    return Step(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            },
        }
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Step:
    """An API error in OpenAI's error format."""
    return Step(
        status=status,
        body={"error": {"message": message, "type": "server_error", "code": None}},
        headers=headers or {},
    )


class FakeOpenAI:
    """Replies with ``script`` in order; the last step repeats once the others are used."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if body.get("stream") and step.status == 200 and isinstance(step.body, dict):
            usage = (body.get("stream_options") or {}).get("include_usage", False)
            return await self._stream(request, step, usage)
        body = step.body if isinstance(step.body, str) else json.dumps(step.body)
        return web.Response(
            status=step.status, text=body, content_type="application/json", headers=step.headers
        )

    async def _stream(
        self, request: web.Request, step: Step, include_usage: bool
    ) -> web.StreamResponse:
        [choice] = step.body["choices"]
        content = choice["message"]["content"] or ""
        pieces = step.pieces if step.pieces is not None else re.findall(r"\S+\s*|\s+", content)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        def event(**data: Any) -> bytes:
            head = {k: step.body[k] for k in ("id", "created", "model")}
            payload = {**head, "object": "chat.completion.chunk", **data}
            return f"data: {json.dumps(payload)}\n\n".encode()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return event(
                choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            )

        try:
            await response.write(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if i == step.pause_at:
                    await asyncio.sleep(step.pause_s)
                await response.write(chunk({"content": piece}))
            await response.write(chunk({}, choice["finish_reason"]))
            if include_usage:
                # As OpenAI sends it: a last chunk with no choices and the whole call's usage.
                await response.write(event(choices=[], usage=step.body["usage"]))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # the client gave up (a timeout): nothing to finish
            pass
        return response

    def llm_section(self, **overrides: Any) -> dict[str, Any]:
        """An ``llm:`` config section that talks to this fake, without retries."""
        return {
            "provider": "openai_compatible",
            "model": "gpt-4o-mini",
            "base_url": self.url,
            "api_key": "sk-test-not-a-secret",
            "max_retries": 0,
            **overrides,
        }

    def prompt(self, i: int = -1) -> tuple[str, str]:
        """(system, user) message texts of request ``i``."""
        messages = self.requests[i]["messages"]
        return messages[0]["content"], messages[1]["content"]


@contextmanager
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running fake; its ``url`` is the OpenAI base URL (ending in ``/v1``)."""
    fake = FakeOpenAI()
    with serve(fake.app()) as url:
        fake.url = url + "v1"
        yield fake
