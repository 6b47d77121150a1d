"""Per-key rate limits (a token bucket per key, per process), set per role."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, per_minute_by_role: dict[str, int]) -> None:
        self._limits = per_minute_by_role
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, updated)
        self._lock = threading.Lock()

    def limit_for(self, roles: frozenset[str]) -> int:
        return max((self._limits.get(role, 60) for role in roles), default=60)

    def take(self, key_id: str, roles: frozenset[str]) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
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
