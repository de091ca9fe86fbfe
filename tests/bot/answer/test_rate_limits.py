"""Rate limits per user and per channel: in memory, and shared through the real Redis."""

from __future__ import annotations

import logging

import pytest
import redis

from bot.answer.limits import MemoryCounter, RateLimited, RateLimiter, RedisCounter
from bot.answer.types import Requester
from config.models import RateLimitConfig


class Clock:
    def __init__(self, now: float = 1_000_040.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def slack(user: str, channel: str = "C0OPS") -> Requester:
    return Requester(platform="slack", channel=channel, user=user)


def test_a_user_over_the_limit_is_told_when_the_window_ends() -> None:
    clock = Clock()  # 20 s into a 60 s window
    limiter = RateLimiter(RateLimitConfig(per_user=2, per_channel=None), MemoryCounter(clock))
    limiter.check(slack("U1"))
    limiter.check(slack("U1"))
    with pytest.raises(RateLimited) as info:
        limiter.check(slack("U1"))
    assert info.value.scope == "user" and info.value.retry_after_s == 40
    assert str(info.value) == (
        "You've asked 2 questions in the last minute, which is as many as I answer for one "
        "person. Please try again in 40 s."
    )
    limiter.check(slack("U2"))  # another person is not limited
    clock.now += 40  # the next window
    limiter.check(slack("U1"))


def test_a_channel_limit_counts_everyone_in_it_and_the_cli_is_never_limited() -> None:
    limiter = RateLimiter(RateLimitConfig(per_user=None, per_channel=3), MemoryCounter(Clock()))
    for user in ("U1", "U2", "U3"):
        limiter.check(slack(user))
    with pytest.raises(RateLimited) as info:
        limiter.check(slack("U4"))
    assert info.value.scope == "channel" and "This channel has asked 3" in str(info.value)
    limiter.check(slack("U4", channel="C0OTHER"))
    for _ in range(10):
        limiter.check(Requester(platform="cli", channel="C0OPS", user="U1"))
    # Everyone on the web chat shares its one "channel": only its users are counted.
    for user in ("w1", "w2", "w3", "w4", "w5"):
        limiter.check(Requester(platform="web", channel="web", user=user))


def test_with_redis_the_limit_holds_across_processes(redis_url: str) -> None:
    config = RateLimitConfig(per_user=2, per_channel=None, window_s=60)
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        a, b = (RateLimiter(config, RedisCounter(c)) for c in clients)
        a.check(slack("U0SHARED"))
        b.check(slack("U0SHARED"))
        with pytest.raises(RateLimited):
            a.check(slack("U0SHARED"))
        [key] = clients[0].keys("kbot:rate:slack:user:U0SHARED:*")
        assert 0 < clients[0].ttl(key) <= 61  # windows expire on their own
    finally:
        for c in clients:
            c.close()


def test_a_failing_redis_counts_in_the_process_and_warns_once(caplog) -> None:
    down = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    limiter = RateLimiter(RateLimitConfig(per_user=2, per_channel=None), RedisCounter(down))
    with caplog.at_level(logging.WARNING, logger="bot.answer.limits"):
        limiter.check(slack("U1"))
        limiter.check(slack("U1"))
        with pytest.raises(RateLimited):
            limiter.check(slack("U1"))
    assert caplog.text.count("rate limits are counted per process") == 1
