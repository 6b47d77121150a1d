"""Per-key rate limits (a token bucket per key), set per role: in this process, or shared by
every API process through Redis (``HOMEWARD_REDIS_URL``)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

logger = logging.getLogger(__name__)

DEFAULT_PER_MINUTE = 60


class Limiter(Protocol):
    def take(self, key_id: str, roles: frozenset[str]) -> float:
        """0 if the request may go ahead, else the seconds until it may."""


class _Limits:
    def __init__(self, per_minute_by_role: dict[str, int]) -> None:
        self._limits = per_minute_by_role

    def limit_for(self, roles: frozenset[str]) -> int:
        """A key with several roles gets its most generous role's limit."""
        return max(
            (self._limits.get(r, DEFAULT_PER_MINUTE) for r in roles), default=DEFAULT_PER_MINUTE
        )


class RateLimiter(_Limits):
    """Buckets in this process: each API process limits on its own."""

    def __init__(self, per_minute_by_role: dict[str, int]) -> None:
        super().__init__(per_minute_by_role)
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, key_id: str, roles: frozenset[str]) -> float:
        rate = self.limit_for(roles) / 60.0  # tokens per second
        capacity = float(self.limit_for(roles))
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.get(key_id, (capacity, now))
            tokens = min(capacity, tokens + (now - updated) * rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / rate if rate > 0 else math.inf


# The same bucket, atomically in Redis, on the Redis server's clock (the API processes'
# clocks may differ). Returns the wait as a string: Redis truncates Lua numbers to integers.
TAKE_SCRIPT = """
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class RedisRateLimiter(_Limits):
    """Buckets in Redis, shared by every API process that uses the same server and prefix.
    While Redis cannot be reached, each process falls back to its own buckets (logged):
    limits then hold per process, rather than the API stopping or going unlimited."""

    def __init__(
        self, client: Any, per_minute_by_role: dict[str, int], prefix: str = "homeward:rate:"
    ) -> None:
        super().__init__(per_minute_by_role)
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._prefix = prefix
        self._fallback = RateLimiter(per_minute_by_role)
        self._reachable = True  # to log each change, not each request

    @classmethod
    def from_url(cls, url: str, per_minute_by_role: dict[str, int]) -> RedisRateLimiter:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, per_minute_by_role)

    def take(self, key_id: str, roles: frozenset[str]) -> float:
        per_minute = self.limit_for(roles)
        try:
            wait = self._script(keys=[self._prefix + key_id], args=[per_minute, per_minute / 60])
        except Exception as err:  # redis-py's connection and timeout errors
            if self._reachable:
                logger.error("rate limits: Redis unreachable (%s); limiting per process", err)
            self._reachable = False
            return self._fallback.take(key_id, roles)
        if not self._reachable:
            logger.warning("rate limits: Redis reachable again; limits shared again")
        self._reachable = True
        return float(wait)


def limiter_for(redis_url: str | None, per_minute_by_role: dict[str, int]) -> Limiter:
    if redis_url is None:
        return RateLimiter(per_minute_by_role)
    return RedisRateLimiter.from_url(redis_url, per_minute_by_role)
