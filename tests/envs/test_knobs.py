"""Tests of envs.knobs: effective values, the ranges actions clamp to (floors, ceilings), unset
and zero fields, whole-second keepalive durations, and the input fields Istio would reject."""

from __future__ import annotations

import pytest

from envs import knobs
from envs.actions import CLASSIC_KNOBS, Action
from envs.istio import INT32_MAX, ConnectionPool, TcpSettings
from envs.knobs import Knob, knob_value
from tests.envs._support import (
    EXTENDED_TABLE,
    NOTEBOOK_TABLE,
    S,
    apply_one,
    full_pool,
    index_of,
    pool_of,
)

# --- floors, caps, unset fields ---------------------------------------------------------------

@pytest.mark.parametrize(("knob", "start", "expected"), [
    (Knob.MAX_CONNECTIONS, 3, 1),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, 10, 1),
    (Knob.MAX_REQUESTS_PER_CONNECTION, 2, 1),
    (Knob.CONNECT_TIMEOUT_MS, 30, 1),
    (Knob.HTTP2_MAX_REQUESTS, 50, 1),
    (Knob.MAX_RETRIES, 1, 1),
    (Knob.KEEPALIVE_PROBES, 1, 1),
    (Knob.KEEPALIVE_TIME_MS, 200 * S, 1 * S),
    (Knob.KEEPALIVE_INTERVAL_MS, 10 * S, 1 * S),
    (Knob.HTTP_IDLE_TIMEOUT_MS, 59 * S, 1),
])
def test_decrements_stop_at_the_floor(knob: Knob, start: int, expected: int) -> None:
    negative = next(d for k, d in EXTENDED_TABLE if k is knob and d is not None and d < 0)
    pool = apply_one("extended", index_of("extended", knob, negative), pool_of(knob, start))
    assert knob_value(pool, knob) == expected
    assert knobs._raw(pool, knob) == expected  # written explicitly


@pytest.mark.parametrize(("knob", "start", "expected"), [
    (Knob.MAX_CONNECTIONS, INT32_MAX - 5, INT32_MAX),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, INT32_MAX, INT32_MAX),
    (Knob.MAX_REQUESTS_PER_CONNECTION, INT32_MAX - 39, INT32_MAX),
    (Knob.CONNECT_TIMEOUT_MS, INT32_MAX - 1, INT32_MAX),
    (Knob.HTTP2_MAX_REQUESTS, INT32_MAX - 100, INT32_MAX),
    (Knob.MAX_RETRIES, INT32_MAX - 40, INT32_MAX),
    (Knob.KEEPALIVE_PROBES, 127, 127),
    (Knob.KEEPALIVE_TIME_MS, 32_700 * S, 32_767 * S),
    (Knob.KEEPALIVE_INTERVAL_MS, 32_760 * S, 32_767 * S),
    (Knob.HTTP_IDLE_TIMEOUT_MS, INT32_MAX - 1, INT32_MAX),
])
def test_increments_stop_at_the_ceiling(knob: Knob, start: int, expected: int) -> None:
    positive = next(d for k, d in EXTENDED_TABLE if k is knob and d is not None and d > 0)
    pool = apply_one("extended", index_of("extended", knob, positive), pool_of(knob, start))
    assert knobs._raw(pool, knob) == expected
    assert expected <= INT32_MAX


@pytest.mark.parametrize(("knob", "delta", "expected"), [
    (Knob.MAX_CONNECTIONS, 20, INT32_MAX),           # unlimited stays (capped) unlimited
    (Knob.MAX_CONNECTIONS, -5, INT32_MAX - 5),
    (Knob.HTTP1_MAX_PENDING_REQUESTS, -10, INT32_MAX - 10),
    (Knob.HTTP2_MAX_REQUESTS, -50, INT32_MAX - 50),
    (Knob.MAX_RETRIES, 40, INT32_MAX),
    (Knob.MAX_REQUESTS_PER_CONNECTION, -10, INT32_MAX - 10),
    (Knob.CONNECT_TIMEOUT_MS, 200, 10_200),          # Istio's 10 s default
    (Knob.CONNECT_TIMEOUT_MS, -50, 9_950),
    (Knob.KEEPALIVE_PROBES, 1, 10),                  # Linux: 9 probes
    (Knob.KEEPALIVE_TIME_MS, 300 * S, 7_500 * S),    # Linux: 7200 s
    (Knob.KEEPALIVE_INTERVAL_MS, -15 * S, 60 * S),   # Linux: 75 s
    (Knob.HTTP_IDLE_TIMEOUT_MS, -60 * S, 3_540 * S),  # Istio: 1 h
])
def test_unset_field_materialises_the_effective_default(knob: Knob, delta: int,
                                                        expected: int) -> None:
    act = index_of("extended", knob, delta)
    # no rule at all, and a rule that leaves this field unset
    for start in (None, pool_of(Knob.MAX_RETRIES if knob is not Knob.MAX_RETRIES
                                else Knob.MAX_CONNECTIONS, 7)):
        pool = apply_one("extended", act, start)
        assert knobs._raw(pool, knob) == expected
        if start is not None:  # the other field survives
            other = Knob.MAX_RETRIES if knob is not Knob.MAX_RETRIES else Knob.MAX_CONNECTIONS
            assert knobs._raw(pool, other) == 7


@pytest.mark.parametrize("knob", [Knob.MAX_CONNECTIONS, Knob.HTTP1_MAX_PENDING_REQUESTS,
                                  Knob.HTTP2_MAX_REQUESTS, Knob.MAX_REQUESTS_PER_CONNECTION,
                                  Knob.MAX_RETRIES])
def test_explicit_zero_limit_means_unlimited(knob: Knob) -> None:
    negative = next(d for k, d in NOTEBOOK_TABLE if k is knob and d < 0)
    pool = apply_one("classic", index_of("classic", knob, negative), pool_of(knob, 0))
    assert knobs._raw(pool, knob) == INT32_MAX + negative


def test_http_idle_timeout_falls_back_to_the_tcp_idle_timeout() -> None:
    down = index_of("extended", Knob.HTTP_IDLE_TIMEOUT_MS, -60 * S)
    up = index_of("extended", Knob.HTTP_IDLE_TIMEOUT_MS, 60 * S)
    tcp_idle = ConnectionPool(tcp=TcpSettings(idle_timeout_ms=120 * S))
    pool = apply_one("extended", down, tcp_idle)
    assert pool.http.idle_timeout_ms == 60 * S
    assert pool.tcp == tcp_idle.tcp
    disabled = ConnectionPool(tcp=TcpSettings(idle_timeout_ms=0))  # 0s: no idle timeout
    assert knob_value(disabled, Knob.HTTP_IDLE_TIMEOUT_MS) == float(INT32_MAX)
    assert apply_one("extended", up, disabled).http.idle_timeout_ms == INT32_MAX


# --- whole seconds, invalid inputs ------------------------------------------------------------

def test_keepalive_moves_in_whole_seconds() -> None:
    time_up = index_of("extended", Knob.KEEPALIVE_TIME_MS, 300 * S)
    interval_down = index_of("extended", Knob.KEEPALIVE_INTERVAL_MS, -15 * S)
    # Envoy receives whole seconds: 1.5 s is 1 s, 0.5 s is 0 s (then the 1 s floor)
    assert apply_one("extended", time_up, pool_of(Knob.KEEPALIVE_TIME_MS, 1_500)) \
        .tcp.tcp_keepalive.time_ms == 301 * S
    assert apply_one("extended", interval_down, pool_of(Knob.KEEPALIVE_INTERVAL_MS, 500)) \
        .tcp.tcp_keepalive.interval_ms == 1 * S
    with pytest.raises(ValueError, match="whole seconds"):
        Action("carts", Knob.KEEPALIVE_TIME_MS, 1_500)


@pytest.mark.parametrize(("knob", "bad"), [
    (Knob.MAX_CONNECTIONS, -1),
    (Knob.MAX_RETRIES, INT32_MAX + 1),
    (Knob.CONNECT_TIMEOUT_MS, 0),
    (Knob.HTTP_IDLE_TIMEOUT_MS, -5),
])
def test_invalid_input_field_is_an_error_naming_it(knob: Knob, bad: int) -> None:
    delta = next(d for k, d in EXTENDED_TABLE if k is knob)
    with pytest.raises(ValueError, match=rf"carts: {knob.value}"):
        apply_one("extended", index_of("extended", knob, delta), pool_of(knob, bad))


# --- knob_value -------------------------------------------------------------------------------

def test_knob_value_reads_effective_values() -> None:
    assert knob_value(None, Knob.MAX_CONNECTIONS) == float(INT32_MAX)
    assert knob_value(None, Knob.MAX_REQUESTS_PER_CONNECTION) == float(INT32_MAX)
    assert knob_value(None, Knob.CONNECT_TIMEOUT_MS) == 10_000.0
    assert knob_value(None, Knob.KEEPALIVE_PROBES) == 9.0
    assert knob_value(None, Knob.KEEPALIVE_TIME_MS) == 7_200_000.0
    assert knob_value(None, Knob.KEEPALIVE_INTERVAL_MS) == 75_000.0
    assert knob_value(None, Knob.HTTP_IDLE_TIMEOUT_MS) == 3_600_000.0
    assert knob_value(None, Knob.USE_CLIENT_PROTOCOL) == 0.0
    pool = full_pool(base=42)
    for knob in CLASSIC_KNOBS:
        assert knob_value(pool, knob) == 42.0
    assert knob_value(pool_of(Knob.KEEPALIVE_TIME_MS, 2_999), Knob.KEEPALIVE_TIME_MS) == 2_000.0
    assert knob_value(pool_of(Knob.USE_CLIENT_PROTOCOL, True), Knob.USE_CLIENT_PROTOCOL) == 1.0
    assert knob_value(pool_of(Knob.MAX_RETRIES, 0), Knob.MAX_RETRIES) == float(INT32_MAX)

