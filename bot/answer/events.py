"""What the answering service tells those who watch it, without knowing who they are.

Every ``AnsweringService.ask`` is an ``Asked`` event. Observers (metrics, request logs and
OpenTelemetry spans in ``bot.ops``) subscribe here; each is handed the event and the call
that answers it, and returns that call's answer. Wrapping the call, rather than hearing of
it afterwards, lets a span be live while the answer is made, so spans other
instrumentation starts inside it (an HTTP client's) are its children. The stages are timed
in ``Answer.latency_ms``.

An observer must return the answer it was given and let any exception through: it watches,
it never changes an answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.answer.types import Answer, Requester


@dataclass(frozen=True)
class Asked:
    """One question put to an answering service."""

    service: Any  # the AnsweringService asked (Any: this module is imported by it)
    question: str
    requester: Requester | None


Observer = Callable[[Asked, Callable[[], Answer]], Answer]

_observers: list[Observer] = []


def subscribe(observer: Observer) -> None:
    """Watch every question of this process; subscribing twice is subscribing once."""
    if observer not in _observers:
        _observers.append(observer)


def unsubscribe(observer: Observer) -> None:
    """Stop watching (an observer that is not subscribed is ignored)."""
    if observer in _observers:
        _observers.remove(observer)


def observed(event: Asked, answer: Callable[[], Answer]) -> Answer:
    """Run ``answer`` inside every observer (the first subscribed outermost)."""
    for observer in reversed(_observers):
        answer = functools.partial(observer, event, answer)
    return answer()
