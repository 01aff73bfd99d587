"""LeaderLease on real Redis: exclusivity, expiry, renewal and release by compare-and-set."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tickwork.keys import leader_key
from tickwork.scheduler.leader import LeaderLease, LocalLease

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str, namespace: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.delete(leader_key(namespace))
    c.close()


def test_one_holder_renewal_and_expiry(client: redis.Redis, namespace: str) -> None:
    key = leader_key(namespace)
    a = LeaderLease(client, key, node_id="a", ttl_ms=600)
    b = LeaderLease(client, key, node_id="b", ttl_ms=600)
    assert a.try_acquire() and a.is_held()
    assert not b.try_acquire() and not b.is_held()
    assert a.holder() == "a"
    for _ in range(4):  # renewals keep it past several TTLs
        time.sleep(0.25)
        assert a.try_acquire()
        assert not b.try_acquire()
    assert 400 < int(client.pttl(key)) <= 600
    # a stops renewing (a paused or killed process): the lease expires, b takes it.
    time.sleep(0.65)
    assert not a.is_held()  # a's local deadline passed before Redis expired the key
    assert b.try_acquire() and b.holder() == "b"
    # a comes back: its renewal is a compare-and-set and must not steal or extend b's lease.
    assert not a.try_acquire()
    assert client.get(key).decode().startswith("b ")


def test_standby_takes_the_lease_at_its_expiry(client: redis.Redis, namespace: str) -> None:
    """A standby with ``wait_ms`` that finds the lease expiring within it waits for the expiry and
    takes it in the same call; a lease further off, or one with no TTL, it leaves alone."""
    key = leader_key(namespace)
    a = LeaderLease(client, key, node_id="a", ttl_ms=10_000)
    b = LeaderLease(client, key, node_id="b", ttl_ms=10_000, wait_ms=700)
    assert a.try_acquire()
    assert not b.try_acquire()  # 10 s left: more than b waits for
    assert client.get(key) == a.value.encode()
    client.pexpire(key, 300)  # a stopped renewing: 300 ms left
    assert b.try_acquire() and b.is_held()
    assert b.holder() == "b"
    assert b.release()
    client.set(key, "c token-without-ttl")  # not a lease this code wrote: never taken over
    assert not b.try_acquire()
    assert client.get(key) == b"c token-without-ttl"


def test_release_by_non_owner_is_refused(client: redis.Redis, namespace: str) -> None:
    key = leader_key(namespace)
    a = LeaderLease(client, key, node_id="a", ttl_ms=5000)
    b = LeaderLease(client, key, node_id="b", ttl_ms=5000)
    assert a.try_acquire()
    assert not b.release()
    assert a.holder() == "a"
    assert a.release() and not a.is_held()
    assert client.get(key) is None
    assert b.try_acquire()  # released: the standby takes it at its next attempt


def test_local_lease(namespace: str) -> None:
    a = LocalLease(namespace, node_id="a", ttl_ms=300)
    b = LocalLease(namespace, node_id="b", ttl_ms=300)
    assert a.try_acquire() and not b.try_acquire()
    assert not b.release() and a.is_held()
    time.sleep(0.35)
    assert not a.is_held() and b.try_acquire()
    assert not a.try_acquire()
    assert b.release() and a.try_acquire()
    a.release()
