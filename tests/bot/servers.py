"""Test helpers for the web chat: a small knowledge folder and the real aiohttp app served on
127.0.0.1 with a free port, in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

# Short runbooks written for these tests; each has one topic that questions can aim at.
RUNBOOKS = {
    "ops/rotate-queue-credentials.md": """\
# Rotating the message queue credentials

The order service reaches the message queue with a password kept in the vault.

## Steps

1. Generate a new password with `mq-admin passwd --user orders`.
2. Store it at the vault path `secret/orders/mq`.
3. Restart the order workers with `systemctl restart order-worker`.

Existing connections stay open for ten minutes, so the rotation causes **no outage**.
""",
    "ops/disk-full-on-build-agents.md": """\
# Build agent disk full

When a build agent reports *no space left on device*, the Docker layer cache is the usual
culprit.

- Run `docker system prune --filter until=72h` on the agent.
- If the agent is still above 90% usage, drain it and file a ticket with the infra team.
""",
    "onboarding/laptop-setup.md": """\
# Laptop setup for new engineers

Install the VPN client before anything else, then request access to the build cluster
through the access portal. Any editor works; the repository ships an `.editorconfig`.
""",
    "security/reporting-a-phishing-email.md": """\
# Reporting a phishing email

Do not click links in the suspicious message. Use the *Report phishing* button in the mail
client, which forwards the message to the security team with its headers intact.
""",
}
URL_TEMPLATE = "https://git.example.test/runbooks/blob/main/{path}"
# The runbook that questions about rotating the queue password must cite.
ROTATE_DOC = "ops/rotate-queue-credentials.md"
ROTATE_TITLE = "Rotating the message queue credentials"
ROTATE_QUESTION = "How do I rotate the password of the message queue?"
# A model's answer to it that passes validation, and the pieces a stream sends it in.
ROTATE_ANSWER = (
    "Generate a new password with `mq-admin passwd --user orders` [1], then restart [1]."
)
ROTATE_PIECES = [
    "Generate a new password ",
    "with `mq-admin passwd --user orders` [1]",
    ", then ",
    "restart [1].",
]


def write_runbooks(folder: Path) -> Path:
    """Write ``RUNBOOKS`` below ``folder`` and return it."""
    for rel, text in RUNBOOKS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def runbook_connector(folder: Path) -> dict:
    """The filesystem connector block for a folder made by ``write_runbooks``."""
    return {
        "name": "runbooks",
        "type": "filesystem",
        "path": str(folder),
        "url_template": URL_TEMPLATE,
    }


def synced_runbooks(base: Path) -> Path:
    """``RUNBOOKS`` written to ``base/kb`` and indexed once into ``base``'s data dir (a
    runtime made later over ``base`` reads that index); the folder."""
    from bot.runtime import Runtime
    from tests.conftest import make_config

    folder = write_runbooks(base / "kb")
    rt = Runtime(make_config(base, [runbook_connector(folder)]))
    try:
        assert all(r.ok for r in rt.indexer.sync())
    finally:
        rt.close()
    return folder


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 with a free port; yields the base URL (ending in ``/``)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kbot-test-web", daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        yield f"http://127.0.0.1:{port}/"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@dataclass
class Reply:
    """An HTTP response as a test reads it."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def send(req: urllib.request.Request) -> Reply:
    """Send ``req``; an error status is a reply to assert on, not an exception."""
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return Reply(r.status, r.headers.get_content_type(), r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        with e:
            return Reply(e.code, e.headers.get_content_type(), e.read(), dict(e.headers))
