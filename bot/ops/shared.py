"""State shared by web processes through Redis (``storage.redis_url``).

Without Redis each process keeps its own; with it, a generated answer cached by one web
process is served by the others, and the model's circuit breaker is one for all of them.
Redis is checked once at start-up (an unreachable Redis stops the process with one line); a
Redis that fails later degrades to the process's own cache and breaker, with a warning, and
never fails an answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

from bot.answer.generation import AnswerCache, CircuitBreaker, _Cached
from bot.answer.types import Citation
from config.models import LLMConfig
from db import redact_url

log = logging.getLogger(__name__)
PREFIX = "kbot:"
# A cached answer's key includes the index version, so old entries are never read again;
# they expire instead of piling up.
CACHE_TTL_S = 7 * 86400


class RedisUnavailable(Exception):
    """``storage.redis_url`` is set but Redis does not answer."""


def connect(url: str) -> Any:  # -> redis.Redis
    """A client for ``url`` that has answered a PING; RedisUnavailable when it does not."""
    try:
        import redis
    except ImportError:
        raise RedisUnavailable(
            "storage.redis_url is set but the redis package is missing: pip install 'kbot[redis]'"
        ) from None
    where = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
    except (redis.RedisError, ValueError, OSError) as e:
        raise RedisUnavailable(f"cannot reach Redis at {where} (storage.redis_url): {e}") from None
    return client


class RedisAnswerCache(AnswerCache):
    """Validated generated answers in Redis, shared by every web process; the process's own
    LRU (the parent class) serves when Redis fails."""

    def __init__(self, client: Any, ttl_s: int = CACHE_TTL_S):
        super().__init__()
        self.client = client
        self.ttl_s = ttl_s
        self._warned = False

    @staticmethod
    def redis_key(key: tuple[str, ...]) -> str:
        digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()
        return f"{PREFIX}answer:{digest}"

    def get(self, key: tuple[str, ...]) -> _Cached | None:
        try:
            raw = self.client.get(self.redis_key(key))
        except Exception as e:  # redis.RedisError, or a lost socket
            self._degraded(e)
            return super().get(key)
        self._warned = False
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return _Cached(data["text"], [Citation(**c) for c in data["citations"]])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable cached answer in Redis")
            return None

    def put(self, key: tuple[str, ...], item: _Cached) -> None:
        super().put(key, item)
        value = json.dumps({"text": item.text, "citations": [asdict(c) for c in item.citations]})
        try:
            self.client.set(self.redis_key(key), value, ex=self.ttl_s)
        except Exception as e:
            self._degraded(e)

    def _degraded(self, e: Exception) -> None:
        if not self._warned:
            log.warning("Redis failed (%s); answers are cached in this process meanwhile", e)
            self._warned = True


# Whether a call may be made, decided in one step so two processes cannot both take the
# trial: closed (never opened, or closed since) lets it through; open refuses; half-open
# (the cooldown key has expired) lets through whoever sets the trial token first.
_ALLOW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
# One failed call: count it; at the threshold, or while opened, (re)open for the cooldown
# and give the trial token back. 2 when this failure opened it, 1 when it was already open.
_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n < tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local opened = redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2])
if not opened then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
redis.call('SET', KEYS[2], '1')
redis.call('DEL', KEYS[4])
if opened then return 2 end
return 1
"""


class RedisCircuitBreaker(CircuitBreaker):
    """The model's circuit breaker in Redis, one for every web process: consecutive failures
    in any of them open it for all, and after the cooldown one trial call goes through,
    across processes. The cooldown is real time (Redis expiry). The process's own breaker
    (the parent class) decides when Redis fails.

    Keys: ``failures`` (consecutive, across processes), ``opened`` (set from the opening
    until a success closes it), ``open`` (expires when the cooldown ends) and ``trial``
    (the half-open call's token; it expires after ``trial_s`` should its process die)."""

    def __init__(self, client: Any, failures: int, cooldown_s: float, name: str, trial_s: float):
        super().__init__(failures, cooldown_s)
        self.client = client
        self.trial_s = trial_s
        base = f"{PREFIX}breaker:{name}:"
        self.keys = {part: base + part for part in ("failures", "opened", "open", "trial")}
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._warned = False

    @classmethod
    def for_llm(cls, client: Any, config: LLMConfig) -> RedisCircuitBreaker:
        """The breaker of ``config``'s model, shared by the processes that call the same
        model at the same address."""
        who = "\x1f".join((config.provider, config.base_url or "", config.model))
        # The trial token outlives the longest call: every attempt timing out, plus the
        # waits between retries.
        longest = config.timeout_s * (config.max_retries + 1)
        longest += config.retry_max_wait_s * config.max_retries
        return cls(
            client,
            config.breaker_failures,
            config.breaker_cooldown_s,
            name=hashlib.sha256(who.encode()).hexdigest()[:16],
            trial_s=longest,
        )

    @property
    def state(self) -> str:
        try:
            with self.client.pipeline() as pipe:
                opened, open_ = pipe.exists(self.keys["opened"]).exists(self.keys["open"]).execute()
        except Exception as e:
            self._degraded(e)
            return super().state
        self._warned = False
        return "closed" if not opened else "open" if open_ else "half_open"

    def allow(self) -> bool:
        k = self.keys
        try:
            allowed = self._allow(
                keys=[k["opened"], k["open"], k["trial"]],
                args=[_ms(self.trial_s)],
                client=self.client,
            )
        except Exception as e:
            self._degraded(e)
            return super().allow()
        self._warned = False
        return bool(allowed)

    def success(self) -> None:
        try:
            self.client.delete(*self.keys.values())
        except Exception as e:
            self._degraded(e)
            super().success()
            return
        self._warned = False

    def failure(self) -> None:
        k = self.keys
        try:
            outcome = self._failure(
                keys=[k["failures"], k["opened"], k["open"], k["trial"]],
                args=[self.failures, _ms(self.cooldown_s)],
                client=self.client,
            )
        except Exception as e:
            self._degraded(e)
            super().failure()
            return
        self._warned = False
        if outcome == 2:  # this process's failure opened it: one line per opening
            log.warning("model calls stopped for %.0f s after failures", self.cooldown_s)

    def _degraded(self, e: Exception) -> None:
        if not self._warned:
            log.warning("Redis failed (%s); this process's circuit breaker decides meanwhile", e)
            self._warned = True


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
