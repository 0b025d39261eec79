"""Durations as Istio and Envoy write them, held as whole milliseconds.

Read from any Go/protobuf duration string (``10s``, ``200ms``, ``1.5s``, ``1m``, ``1h``,
``500us``, ``1m30s``); they must be whole milliseconds, as istiod requires
(``pkg/config/validation/validation.go``, ``ValidateDuration``). Written back as ``Ns`` when
whole seconds, else ``Nms`` (``1.5s`` is written ``1500ms``); Envoy gets protobuf JSON
durations (``0.250s``).
"""

from __future__ import annotations

import re
from fractions import Fraction

_NS_PER_MS = 1_000_000
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": _NS_PER_MS,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration_ns(text: str) -> Fraction:
    """A Go/protobuf duration string (``10s``, ``1.5s``, ``200ms``, ``1m30s``) in nanoseconds.

    Raises:
        ValueError: ``text`` is not a duration string.
    """
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return Fraction(0)
    if not body:
        raise ValueError(f"not a duration: {text!r} (write e.g. '10s', '250ms', '1m30s')")
    total, pos = Fraction(0), 0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            raise ValueError(f"not a duration: {text!r} (write e.g. '10s', '250ms', '1m30s')")
        total += Fraction(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_duration_ms(text: str, *, allow_zero: bool = False) -> int:
    """A duration string as whole milliseconds, checked as istiod checks durations.

    Raises:
        ValueError: not a duration, below 1 ms (``0s`` allowed only with ``allow_zero``), or not
            a whole number of milliseconds.
    """
    ns = parse_duration_ns(text)
    if allow_zero and ns == 0:
        return 0
    if ns < _NS_PER_MS:
        raise ValueError("duration must be at least 1ms" + (" (or 0s to disable)"
                                                            if allow_zero else ""))
    if ns % _NS_PER_MS:
        raise ValueError("only durations to ms precision are supported")
    return int(ns / _NS_PER_MS)


def format_duration_ms(ms: int) -> str:
    """Whole milliseconds as Istio YAML: ``Ns`` for whole seconds, else ``Nms``."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def envoy_duration(ms: int) -> str:
    """Whole milliseconds as a protobuf JSON duration (``10s``, ``0.250s``) for Envoy."""
    seconds, millis = divmod(ms, 1000)
    return f"{seconds}s" if millis == 0 else f"{seconds}.{millis:03d}s"
