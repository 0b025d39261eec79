"""Tests of envs.istio.durations: Go/protobuf duration strings ↔ whole milliseconds, and
the Istio and Envoy spellings."""

from __future__ import annotations

import pytest

from envs.istio.durations import envoy_duration, format_duration_ms, parse_duration_ms


@pytest.mark.parametrize(("text", "ms"), [
    ("10s", 10_000), ("200ms", 200), ("1.5s", 1_500), ("1m", 60_000), ("1h", 3_600_000),
    ("1m30s", 90_000), ("1000us", 1), ("2000000ns", 2), (".5s", 500), ("0.001s", 1),
])
def test_parse_duration_ms_valid(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(("text", "message"), [
    ("500us", "at least 1ms"), ("0s", "at least 1ms"), ("-1s", "at least 1ms"),
    ("1500us", "ms precision"), ("1.0005s", "ms precision"), ("ten", "not a duration"),
    ("10", "not a duration"), ("", "not a duration"), ("10 s", "not a duration"),
])
def test_parse_duration_ms_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(text)


def test_zero_duration_only_where_allowed() -> None:
    assert parse_duration_ms("0s", allow_zero=True) == 0
    with pytest.raises(ValueError):
        parse_duration_ms("0s")


@pytest.mark.parametrize(("ms", "yaml_text", "envoy_text"), [
    (10_000, "10s", "10s"), (1_500, "1500ms", "1.500s"), (1, "1ms", "0.001s"), (0, "0s", "0s"),
    (3_600_000, "3600s", "3600s"),
])
def test_duration_formats(ms: int, yaml_text: str, envoy_text: str) -> None:
    assert format_duration_ms(ms) == yaml_text
    assert envoy_duration(ms) == envoy_text
    if ms:
        assert parse_duration_ms(yaml_text) == ms
