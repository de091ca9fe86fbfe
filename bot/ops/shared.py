"""State shared by web processes through Redis (``storage.redis_url``).

Without Redis each process keeps its own; with it, a generated answer cached by one web
process is served by the others. Redis is checked once at start-up (an unreachable Redis
stops the process with one line); a Redis that fails later degrades to the process's own
cache, with a warning, and never fails an answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

from bot.answer.generation import AnswerCache, _Cached
from bot.answer.types import Citation
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
