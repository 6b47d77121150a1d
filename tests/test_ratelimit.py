"""Rate limits shared by API processes through a real Redis (127.0.0.1:6379), and what
happens when Redis cannot be reached."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from service.api.ratelimit import RateLimiter, RedisRateLimiter, limiter_for
from service.settings import Settings

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("HOMEWARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
VOLUNTEER = frozenset({"volunteer"})


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError as err:
        pytest.fail(f"these tests need Redis at {REDIS_URL} (HOMEWARD_TEST_REDIS): {err}")
    yield connection
    connection.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A prefix of this test's own, its keys deleted afterwards."""
    name = f"homeward-test:{secrets.token_hex(4)}:"
    yield name
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)


def test_two_processes_share_one_bucket(client: redis.Redis, prefix: str) -> None:
    first, second = (RedisRateLimiter(client, {"volunteer": 5}, prefix) for _ in range(2))
    waits = [limiter.take("key-1", VOLUNTEER) for limiter in (first, second) * 3]
    assert waits[:5] == [0.0] * 5
    assert 11 < waits[5] <= 12  # 5 a minute: the next token in 12 s
    assert second.take("key-2", VOLUNTEER) == 0.0  # another key has its own bucket
    assert client.ttl(f"{prefix}key-1") > 0  # nothing is kept for ever


def test_the_bucket_refills_on_the_servers_clock(client: redis.Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(client, {"volunteer": 600}, prefix)  # 10 a second
    while limiter.take("key", VOLUNTEER) == 0.0:
        pass
    time.sleep(0.5)
    granted = 0
    while limiter.take("key", VOLUNTEER) == 0.0:
        granted += 1
    assert 4 <= granted <= 6  # 5 tokens in half a second, give or take the remainder


def test_unreachable_redis_falls_back_to_limits_per_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = limiter_for("redis://127.0.0.1:1/0", {"volunteer": 2})
    with caplog.at_level(logging.ERROR, logger="service.api.ratelimit"):
        waits = [limiter.take("key", VOLUNTEER) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1  # not per request
    assert isinstance(limiter_for(None, {}), RateLimiter)


def test_the_app_limits_through_redis(
    client: redis.Redis,
    make_settings: Callable[..., Settings],
    start_app: Callable[[Settings], TestClient],
) -> None:
    settings = make_settings(redis_url=REDIS_URL, rate_limits={"admin": 3})
    with start_app(settings) as admin:
        codes = [admin.get("/v1/cases").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        buckets = [k for k in client.scan_iter("homeward:rate:*") if client.ttl(k) > 0]
        assert buckets
        for key in buckets:
            client.delete(key)
