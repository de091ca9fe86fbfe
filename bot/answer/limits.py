"""Rate limits on questions, per user and per channel (``rate_limits`` in the config).

Counting is a fixed window of ``window_s`` seconds: simple to reason about, and the same
in memory and in Redis (``INCR`` and ``EXPIRE`` on one key per window). With
``storage.redis_url`` every web process counts in Redis, so a limit holds across them;
without it each process counts on its own. A Redis that fails is not a reason to refuse
questions: counting falls back to the process, with a warning.

Only chat questions are limited (a platform user or channel is known); the CLI, the
evaluation and the admin tools are not.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.answer.types import QuestionError, Requester
from config.models import RateLimitConfig

log = logging.getLogger(__name__)
PREFIX = "kbot:rate:"


class RateLimited(QuestionError):
    """Too many questions from one user or in one channel; ``retry_after_s`` says when the
    window ends. The text is what the asker is told."""

    def __init__(self, scope: str, limit: int, window_s: int, retry_after_s: int):
        self.scope = scope  # "user" or "channel"
        self.limit = limit
        self.retry_after_s = retry_after_s
        per = "minute" if window_s == 60 else _duration(window_s)
        wait = _duration(retry_after_s)
        questions = f"{limit} question{'' if limit == 1 else 's'}"
        if scope == "user":
            text = (
                f"You've asked {questions} in the last {per}, which is as many as I "
                f"answer for one person. Please try again in {wait}."
            )
        else:
            text = (
                f"This channel has asked {questions} in the last {per}, which is as "
                f"many as I answer in one place. Please try again in {wait}."
            )
        super().__init__(text)


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


def _window(now: float, window_s: int) -> tuple[int, int]:
    """The fixed window ``now`` falls in, and the whole seconds left in it (at least 1)."""
    window = int(now // window_s)
    return window, max(1, math.ceil((window + 1) * window_s - now))


class MemoryCounter:
    """Fixed-window counts in this process."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        """Count one question for ``key``: (count in this window, seconds left in it)."""
        window, left = _window(self.clock(), window_s)
        slot = f"{key}:{window}"
        with self._lock:
            if len(self._counts) > 10_000:  # drop the windows that are over
                self._counts = {k: v for k, v in self._counts.items() if k.endswith(f":{window}")}
            self._counts[slot] = self._counts.get(slot, 0) + 1
            count = self._counts[slot]
        return count, left


class RedisCounter:
    """Fixed-window counts in Redis, shared by every process; the process's own counts
    when Redis fails."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.time):
        self.client = client
        self.clock = clock
        self.local = MemoryCounter(clock)
        self._warned = False

    def hit(self, key: str, window_s: int) -> tuple[int, int]:
        window, left = _window(self.clock(), window_s)
        slot = f"{PREFIX}{key}:{window}"
        try:
            pipe = self.client.pipeline()
            pipe.incr(slot)
            pipe.expire(slot, window_s + 1)
            count, _ = pipe.execute()
        except Exception as e:  # redis.RedisError, or a lost socket
            if not self._warned:
                log.warning("Redis failed (%s); rate limits are counted per process", e)
                self._warned = True
            return self.local.hit(key, window_s)
        self._warned = False
        return int(count), left


class RateLimiter:
    def __init__(self, config: RateLimitConfig, counter: MemoryCounter | RedisCounter):
        self.config = config
        self.counter = counter

    def check(self, requester: Requester) -> None:
        """Count a question; raises RateLimited when it is over a limit."""
        if requester.platform == "cli":
            return
        window = self.config.window_s
        scopes = (
            ("user", requester.user, self.config.per_user),
            # The web chat's one "channel" is everyone on it: only its users are limited.
            ("channel", None if requester.platform == "web" else requester.channel,
             self.config.per_channel),
        )  # fmt: skip
        for scope, who, limit in scopes:
            if who is None or limit is None:
                continue
            count, left = self.counter.hit(f"{requester.platform}:{scope}:{who}", window)
            if count > limit:
                log.info(
                    "rate limit: %s %s on %s asked %d in %d s", scope, who, requester.platform,
                    count, window,
                )  # fmt: skip
                raise RateLimited(scope, limit, window, left)
