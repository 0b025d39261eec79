"""Retries of the k8s backend's calls: exponential backoff, and which errors are worth retrying.

:class:`RetryPolicy` runs a call until it succeeds; a *classifier* turns a client library's
exception into :class:`TransientError` (retried: 409, 429 with ``Retry-After`` honoured, 5xx, an
unreachable server, an empty Prometheus answer) or :class:`PermanentError` (400, 403, 404, 422:
fails at once). When the policy gives up, a :class:`~envs.backends.base.BackendError` names what
failed.

The kubernetes client, urllib3, requests and prometheus-api-client are imported inside the
classifiers only, so importing this module loads none of them.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from envs.backends.base import BackendError

T = TypeVar("T")

#: The longest server-requested ``Retry-After`` wait honoured, seconds.
MAX_RETRY_AFTER_S = 60.0


class TransientError(Exception):
    """An error worth retrying; ``retry_after_s`` is the server's wish (seconds), if it said one."""

    def __init__(self, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class PermanentError(Exception):
    """An error that retrying cannot fix (bad request, forbidden, not found, invalid)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: waits ``backoff_s``, 2·``backoff_s``, … seconds capped at
    ``max_backoff_s`` (or the server's ``Retry-After`` when longer), at most ``max_attempts``
    calls in all."""

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be non-negative")

    def run(self, what: str, call: Callable[[], T],
            classify: Callable[[Exception], Exception | None],
            sleep: Callable[[float], None]) -> T:
        """``call()`` until it succeeds; ``classify`` turns a client's exception into
        TransientError / PermanentError (None: not a client error, e.g. a bug — re-raised
        as it is). Raises BackendError naming ``what`` when it gives up. A ``Retry-After``
        longer than the backoff is honoured up to :data:`MAX_RETRY_AFTER_S`; ``sleep`` waits
        seconds."""
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except Exception as exc:  # classified right below; the rest is re-raised
                kind = exc if isinstance(exc, (TransientError, PermanentError)) else classify(exc)
                if kind is None:
                    raise
                if isinstance(kind, PermanentError):
                    raise BackendError(f"{what} failed: {kind}") from exc
                if attempt == self.max_attempts:
                    raise BackendError(f"{what} failed after {attempt} attempts: "
                                       f"{kind}") from exc
                wait = min(delay, self.max_backoff_s)
                retry_after = getattr(kind, "retry_after_s", None)
                if retry_after is not None:
                    wait = max(wait, min(retry_after, MAX_RETRY_AFTER_S))
                sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after_s(headers: Any) -> float | None:
    """The ``Retry-After`` header in seconds, if present and numeric."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify_kube(exc: Exception) -> Exception | None:
    """Kubernetes client errors: 409/429/5xx and connection errors are transient."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = exc.reason or ""
        with contextlib.suppress(ValueError, TypeError):
            message = json.loads(exc.body or "").get("message", message)
        detail = f"HTTP {status}: {message}"
        if status in (409, 429) or status >= 500 or status == 0:
            return TransientError(detail, _retry_after_s(exc.headers))
        return PermanentError(detail)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return TransientError(f"cannot reach the Kubernetes API: {exc}")
    return None


def classify_prometheus(exc: Exception) -> Exception | None:
    """Prometheus errors: 429/5xx, connection errors and empty answers are transient."""
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    if isinstance(exc, PrometheusApiClientException):
        match = re.search(r"HTTP Status Code (\d+)", str(exc))
        status = int(match.group(1)) if match else 0
        if status == 429 or status >= 500:
            return TransientError(str(exc))
        return PermanentError(str(exc))
    if isinstance(exc, requests.exceptions.RequestException):
        return TransientError(f"cannot reach Prometheus: {exc}")
    return None
