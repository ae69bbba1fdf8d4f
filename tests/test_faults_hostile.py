"""Hardening, round two (issue 13): hostile servers, files, descriptors and environments.

Each class of fault is tried with generated inputs, not only the example the
issue names: Retry-After values, hung keyrings, deeply nested TOML, closed and
full standard streams for every command, loopback names and proxies, key
echoes at every offset, permissive umasks and foreign permissions, plaintext
keyrings, and racing `enable` processes.
"""

from __future__ import annotations

import email.utils
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from avsb_cli import segment as seg_mod
from avsb_cli.errors import NetworkError
from tests.conftest import KEY
from tests.support.fakesegment import FakeSegment

CLI = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# Retry-After --------------------------------------------------------------------------

def _past_date(seconds_ago: float) -> str:
    return email.utils.formatdate(time.time() - seconds_ago, usegmt=True)


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).filter(lambda s: s.strip() == s)
retry_afters = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 0).map(str),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-0", "0",
                     "0.0", "1e-300", "", "soon", "Wed, 21 Oct 2015 07:28:00 GMT",
                     "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 32 Foo 99999 99:99:99 GMT"]),
    st.floats(1, 10**9).map(_past_date),
    header_text,
)


def _minimum_backoff(policy: seg_mod.Policy, retry: int) -> float:
    return 0.5 * min(policy.backoff_cap, policy.backoff * 2 ** (retry - 1))


@pytest.fixture(scope="module")
def busy_server():
    with FakeSegment() as server:
        yield server


@settings(max_examples=60, **CLI)
@given(raw=retry_afters)
@example(raw="-5")
@example(raw="nan")
@example(raw="inf")
@example(raw=_past_date(3600))
def test_a_retry_after_asking_for_no_wait_gets_the_normal_backoff(busy_server, raw):
    """Whatever the header says, no wait is shorter than the backoff, and the
    attempts are spread over seconds (the fake clock), never a tight loop."""
    busy_server.down("/v1/batch", status=503, retry_after=raw)
    try:
        policy, ft = seg_mod.Policy(), FakeTime()
        with seg_mod.build_client(policy=policy) as client, pytest.raises(NetworkError) as info:
            seg_mod.request(client, "POST", f"{busy_server.url}/v1/batch", policy=policy,
                            key=KEY, content=b'{"batch":[]}', sleep=ft.sleep, clock=ft.clock)
    finally:
        busy_server.up()
    assert "\n" not in info.value.message
    assert all(math.isfinite(s) and s > 0 for s in ft.sleeps)
    for retry, slept in enumerate(ft.sleeps, 1):
        assert slept >= _minimum_backoff(policy, retry)
    if "asked to retry after" in info.value.message:  # only a real, long wait stops at once
        assert ft.sleeps == [] and float(raw) > policy.retry_after_cap
    else:
        assert len(ft.sleeps) == policy.attempts - 1
        assert sum(ft.sleeps) >= sum(_minimum_backoff(policy, r) for r in range(1, 6))


@pytest.mark.parametrize("raw,waited", [("3", 3.0), ("9.5", 9.5)])
def test_a_usable_retry_after_is_still_honoured(busy_server, raw, waited):
    busy_server.fault("/v1/batch", status=429, retry_after=raw)
    policy, ft = seg_mod.Policy(), FakeTime()
    with seg_mod.build_client(policy=policy) as client:
        d = seg_mod.request(client, "POST", f"{busy_server.url}/v1/batch", policy=policy,
                            key=KEY, content=b'{"batch":[]}', sleep=ft.sleep, clock=ft.clock)
    assert d.attempts == 2 and ft.sleeps == [waited]
