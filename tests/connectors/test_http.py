"""The one retry policy every HTTP client of kbot uses (connectors.http.RetryPolicy)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.http import RetriesExhausted, Retry, RetryPolicy, WaitTooLong


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr("connectors.http.sleep", recorded.append)
    return recorded


def failing(times: int, asked: float | None = None, result: str = "ok"):
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise Retry(f"HTTP 503 (call {len(calls)})", asked)
        return result

    return attempt, calls


def test_backs_off_doubling_then_returns(waits: list[float]) -> None:
    attempt, calls = failing(3)
    assert RetryPolicy(3, 0.5, 60).call(attempt, what="t") == "ok"
    assert len(calls) == 4 and waits == [0.5, 1.0, 2.0]


def test_gives_up_after_max_retries_with_the_last_reason(waits: list[float]) -> None:
    attempt, calls = failing(10)
    with pytest.raises(RetriesExhausted) as e:
        RetryPolicy(2, 1.0, 60).call(attempt, what="t")
    assert len(calls) == 3 and e.value.attempts == 3
    assert str(e.value) == "HTTP 503 (call 3) (3 attempts)"
    assert waits == [1.0, 2.0]  # no wait after the last attempt


def test_retry_after_is_honoured_and_capped(waits: list[float]) -> None:
    attempt, _ = failing(2, asked=90)
    RetryPolicy(3, 1.0, 30).call(attempt, what="t")
    assert waits == [30, 30]


def test_a_policy_that_refuses_long_waits_fails_instead(waits: list[float]) -> None:
    attempt, calls = failing(2, asked=600)
    refused = r"asked to wait 600s, more than retry_max_wait_s \(60s\)"
    with pytest.raises(WaitTooLong, match=refused):
        RetryPolicy(3, 1.0, 60, over_max_wait="fail").call(attempt, what="t")
    assert len(calls) == 1 and waits == []


def test_other_errors_are_not_retried(waits: list[float]) -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        raise PermissionError("401")

    with pytest.raises(PermissionError):
        RetryPolicy(5, 1.0, 60).call(attempt, what="t")
    assert calls == [1] and waits == []


@given(
    retries=st.integers(0, 8),
    backoff=st.floats(0, 300),
    cap=st.floats(0, 3600),
    asked=st.none() | st.floats(0, 10_000),
    retry=st.integers(0, 20),
)
def test_a_wait_never_exceeds_the_cap_nor_goes_negative(
    retries: int, backoff: float, cap: float, asked: float | None, retry: int
) -> None:
    wait = RetryPolicy(retries, backoff, cap).wait_before(retry, asked)
    assert 0 <= wait <= cap
    if asked is not None:
        assert wait == min(asked, cap)
