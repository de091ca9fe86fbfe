"""Fixtures shared by the bot tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bot.fake_openai import FakeOpenAI, fake_openai


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server, shared by one module's tests."""
    with fake_openai() as fake:
        yield fake
