"""The model's circuit breaker shared through a real Redis: breakers built on one Redis stand
for web processes, and what one process's failures do must hold in all of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bot.answer.generation import CircuitBreaker
from bot.answer.types import Requester
from bot.ops.shared import RedisCircuitBreaker
from bot.runtime import Runtime
from config.models import LLMConfig
from tests.bot.fake_openai import completion, error, fake_openai
from tests.bot.servers import runbook_connector, write_runbooks
from tests.conftest import make_config

COOLDOWN_S = 0.3
STOPPED = "model calls stopped for"
DEGRADED = "this process's circuit breaker decides meanwhile"
NOTHING_LISTENS = "redis://127.0.0.1:9/0"


@pytest.fixture
def processes(redis_url: str) -> Iterator[Callable[[int], list[RedisCircuitBreaker]]]:
    """``n`` breakers on the test Redis, each with its own client as a web process has."""
    clients: list[redis.Redis] = []

    def make(n: int, failures: int = 3) -> list[RedisCircuitBreaker]:
        made = []
        for _ in range(n):
            client = redis.Redis.from_url(redis_url, socket_timeout=2)
            clients.append(client)
            made.append(RedisCircuitBreaker(client, failures, COOLDOWN_S, "test", trial_s=5))
        return made

    yield make
    for c in clients:
        c.close()


def open_them(a: CircuitBreaker, b: CircuitBreaker) -> None:
    """Three consecutive failures, split across the two."""
    a.failure()
    b.failure()
    assert (a.state, b.state) == ("closed", "closed")
    assert a.allow() and b.allow()
    a.failure()


def after_cooldown() -> None:
    time.sleep(COOLDOWN_S + 0.1)


def race_for_the_trial(breakers: list[RedisCircuitBreaker], threads: int = 8) -> list[bool]:
    """``allow()`` from ``threads`` threads at once, spread over ``breakers``."""
    start = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def ask(breaker: RedisCircuitBreaker) -> None:
        start.wait()
        allowed = breaker.allow()
        with lock:
            results.append(allowed)

    workers = [
        threading.Thread(target=ask, args=(breakers[i % len(breakers)],)) for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def test_failures_split_across_processes_open_the_breaker_for_all(processes, caplog) -> None:
    a, b = processes(2)
    with caplog.at_level("WARNING", logger="bot.ops.shared"):
        open_them(a, b)
    assert (a.state, b.state) == ("open", "open")
    assert not a.allow() and not b.allow()
    assert caplog.text.count(STOPPED) == 1  # one line for the opening, from one process


def test_after_the_cooldown_exactly_one_trial_goes_through_across_processes(
    processes,
) -> None:
    a, b = processes(2)
    open_them(a, b)
    assert race_for_the_trial([a, b]).count(True) == 0  # still cooling down
    after_cooldown()
    assert (a.state, b.state) == ("half_open", "half_open")
    assert sorted(race_for_the_trial([a, b])) == [False] * 7 + [True]
    assert not a.allow() and not b.allow()  # the trial is in flight


def test_the_trials_success_closes_it_for_all(processes) -> None:
    a, b = processes(2)
    open_them(a, b)
    after_cooldown()
    assert b.allow()
    b.success()
    assert (a.state, b.state) == ("closed", "closed")
    assert a.allow() and b.allow() and a.allow()
    # Closed means the count starts again: two more failures do not open it.
    a.failure()
    b.failure()
    assert a.state == "closed"


def test_the_trials_failure_opens_it_again_for_all(processes, caplog) -> None:
    a, b = processes(2)
    open_them(a, b)
    after_cooldown()
    assert a.allow()
    caplog.clear()  # the first opening's line
    with caplog.at_level("WARNING", logger="bot.ops.shared"):
        a.failure()
    assert (a.state, b.state) == ("open", "open")
    assert not a.allow() and not b.allow()
    assert caplog.text.count(STOPPED) == 1
    after_cooldown()  # a new cooldown, then a new single trial
    assert sorted(race_for_the_trial([a, b], threads=4)) == [False] * 3 + [True]


def test_a_late_failure_while_open_restarts_the_cooldown_without_a_second_line(
    processes, caplog
) -> None:
    a, b = processes(2)
    with caplog.at_level("WARNING", logger="bot.ops.shared"):
        open_them(a, b)
        time.sleep(COOLDOWN_S * 0.7)
        b.failure()  # a call that started before the opening fails now
        time.sleep(COOLDOWN_S * 0.7)
    assert (a.state, b.state) == ("open", "open")
    assert caplog.text.count(STOPPED) == 1


def test_a_redis_that_goes_away_degrades_to_the_process_breaker(processes, caplog) -> None:
    a, b = processes(2)
    real = a.client
    a.client = redis.Redis.from_url(NOTHING_LISTENS, socket_connect_timeout=0.5)
    with caplog.at_level("WARNING", logger="bot.ops.shared"):
        assert a.state == "closed" and a.allow()
        for _ in range(3):
            a.failure()  # counted in this process only
        assert a.state == "open" and not a.allow()
        assert b.state == "closed" and b.allow()  # Redis never heard of them
        after_cooldown()
        assert a.allow() and not a.allow()  # the process's own single trial
        a.success()
        assert a.state == "closed"
    assert caplog.text.count(DEGRADED) == 1
    assert caplog.text.count(STOPPED) == 1  # the local opening's line

    a.client = real  # Redis is back: shared again
    a.failure()
    b.failure()
    b.failure()
    assert (a.state, b.state) == ("open", "open")


def test_each_model_has_its_own_breaker(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        section = {"provider": "openai", "model": "gpt-4o-mini", "breaker_failures": 1}
        mini = RedisCircuitBreaker.for_llm(client, LLMConfig(**section))
        other = RedisCircuitBreaker.for_llm(client, LLMConfig(**{**section, "model": "gpt-4.1"}))
        assert all(k.startswith("kbot:breaker:") for k in mini.keys.values())
        assert mini.trial_s == 20 * 3 + 5 * 2  # every attempt timing out, and the waits
        mini.failure()
        assert (mini.state, other.state) == ("open", "closed")
    finally:
        client.close()


def test_failures_through_one_web_process_stop_the_others_model_calls(
    tmp_path: Path, runtime_factory, redis_url: str
) -> None:
    kb = write_runbooks(tmp_path / "kb")
    assert runtime_factory(make_config(tmp_path, [runbook_connector(kb)])).indexer.sync()[0].ok
    with fake_openai() as fake:

        def web_process() -> Runtime:
            llm = fake.llm_section(
                cache=False, timeout_s=10, breaker_failures=2, breaker_cooldown_s=COOLDOWN_S
            )
            storage = {"data_dir": str(tmp_path / "data"), "redis_url": redis_url}
            return runtime_factory(
                make_config(tmp_path, [runbook_connector(kb)], llm=llm, storage=storage)
            )

        def ask(rt: Runtime) -> str | None:
            question = "How do I rotate the password of the message queue?"
            return rt.answering.ask(question, Requester(platform="test")).fallback_reason

        first, second = web_process(), web_process()
        assert isinstance(second.answering.generator.breaker, RedisCircuitBreaker)
        fake.script = [error(500, "down")]
        assert [ask(first), ask(first)] == ["provider_error"] * 2
        assert ask(second) == "circuit_open"
        assert len(fake.requests) == 2  # the second process did not call the model

        after_cooldown()
        fake.script = [completion("Run `mq-admin passwd --user orders` [1].")]
        assert ask(second) is None  # its trial succeeded: closed for both
        assert ask(first) is None
        assert len(fake.requests) == 4
