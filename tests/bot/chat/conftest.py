"""Fixtures the chat adapters' tests share: the event loop their test servers run on, and
the Slack Web API stand-in served on it, one of each per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bot.fake_slack import FakeSlack, Loop, serving


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def fake_slack(loop: Loop) -> Iterator[FakeSlack]:
    f = FakeSlack()
    with serving(loop, f.app()) as url:
        f.url = url
        yield f
