"""Measure the per-hop costs of a local replica: the simulator's ``loopback`` platform.

The simulator charges every hop a connection set-up (TCP + mTLS) when it opens a connection
and four proxy passes (caller's sidecar and callee's sidecar, each way); how long these take is
a property of where the mesh runs (``envs.backends.sim.profile.Platform``). This module measures
them on a running replica of the ``local`` backend, under load, so the simulator can be run as
a model of *this* mesh (``SimMesh(platform="loopback")``).

Method (sequential HTTP/1.1 requests from this process, ``time.perf_counter``):

* ``direct``: ``GET`` :data:`PROBE_PATH` straight to a service's application port; no route
  answers it, so aiohttp replies 404 at once (no modelled work);
* ``via``: the same request through the caller's outbound sidecar listener (``Host: <dest>``):
  caller's sidecar → mTLS → callee's sidecar → application and back. Envoy does not retry a 404.
  Every connection is kept alive, so ``via - median(direct)`` is four proxy passes plus the
  loopback hops: the *hop overhead*;
* ``via`` again after applying ``maxRequestsPerConnection: 1`` to every HTTP service: each
  request now opens a new sidecar → sidecar connection (TCP + mTLS handshake) and a new
  sidecar → application one; ``via(1) - median(via) - median(plain TCP connect)`` is the
  sidecar → sidecar connection set-up;
* ``connectTimeout`` 1, 2 and 3 ms (with ``maxRequestsPerConnection: 1``) on the
  destinations whose failures never crash the front-end (:data:`TIMEOUT_DESTINATIONS`), while
  probing through them: the share of sidecar → sidecar connections Envoy timed out
  (``upstream_cx_connect_timeout`` / ``upstream_cx_total``) at each timeout;
* plain TCP connects to an application port (the sidecar → application connect) and to a
  closed port (a refused connect).

Pairs alternate direct / via request by request, and all of it runs while Locust drives the
reference load (:data:`BACKGROUND_LOAD`) through the same replica, so the Envoys and the
services host compete for the CPU as they do in a fidelity run.

Fitting: one proxy pass is the lognormal whose four i.i.d. copies added to the ``direct``
samples reproduce the median and p90 of ``via`` (:func:`fit_added_lognormal`, a seeded
Monte-Carlo deconvolution). The connection set-up is the lognormal that best explains Envoy's
own ``upstream_cx_connect_ms`` (:func:`fit_censored_lognormal`; Envoy records whole ms). The
shares of connects that actually timed out at 1, 2 and 3 ms are printed beside the shares
that lognormal predicts: they need not agree — Envoy's connect timer is a dispatcher event on
a busy thread (a slow handshake can finish before the late timer runs), and on a shared
2-core machine some connects stall for many ms whatever the timeout (measured: ~6 % at
each of 1, 2 and 3 ms, where the LOOPBACK lognormal says 20 %, 4 % and 1.4 %).

Usage: ``python -m envs.backends.local.platform_probe --replica 5 [--rounds 600] [--seed 0]
[--out results/platform/loopback_probe.json]`` (attaches to the replica if it is up, else starts
it; puts its rules back afterwards); ``--refit FILE`` fits saved samples again without a
replica. Prints the quantiles and the fitted ``Platform`` figures; saves the raw samples.

Connect stalls (issue 13): ``--stalls [--short]`` probes only the connect timeouts
(:data:`STALL_TIMEOUTS_MS`, :func:`measure_stalls`) on a replica it starts, saves the counts to
``--out`` and fits the body + stall mixture (:func:`fit_stall_mixture`); ``--fit-stalls FILE
...`` fits saved runs, pooled, and prints the measured shares beside the mixture's and the
``LOOPBACK`` body lognormal's (the numbers in ``profile.LOOPBACK``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.backends.base import LoadSpec
from envs.backends.local.ports import HOST, ReplicaPorts
from envs.istio import ConnectionPool, DestinationRule, HttpSettings, TcpSettings
from envs.sockshop import SERVICE_BY_NAME, Protocol

#: A path no SockShop service routes: the application answers 404 without modelled work.
PROBE_PATH = "/__meshtune_probe"
#: (caller, destination) pairs probed: every HTTP edge of the call graph.
PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    ("front-end", "catalogue"), ("front-end", "user"), ("front-end", "carts"),
    ("front-end", "orders"), ("orders", "payment"), ("orders", "shipping"),
    ("orders", "user"), ("orders", "carts"))
#: Destinations that get tiny ``connectTimeout``s in the timeout phase: their failed calls
#: never crash the front-end (carts and orders are called with ``json: true``; payment and
#: shipping only by orders), so the background load keeps running through the phase.
TIMEOUT_DESTINATIONS = ("carts", "orders", "payment", "shipping")
TIMEOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("front-end", "carts"), ("front-end", "orders"), ("orders", "payment"),
    ("orders", "shipping"), ("orders", "carts"))
#: The ``connectTimeout``s (ms) whose failure rates are measured.
CONNECT_TIMEOUTS_MS = (1, 2, 3)
#: The ``connectTimeout``s of the stall probe (``--stalls``; None: Istio's 10 s default, whose
#: set-up times place the mixture's body): far enough out to see where the stalls end.
STALL_TIMEOUTS_MS: tuple[int | None, ...] = (1, 2, 3, 5, 10, 30, None)
#: The shorter set for repeat runs (``--stalls --short``).
STALL_TIMEOUTS_SHORT_MS: tuple[int | None, ...] = (1, 2, 3, 5, 10)
#: The load Locust drives through the replica while probing (the fidelity runs' lighter load).
BACKGROUND_LOAD = LoadSpec(users=5, requests=3000)
#: Seconds from starting the background load until probing starts (hatch + Locust's pause).
BACKGROUND_WARMUP_S = 4.0


@dataclass(frozen=True)
class LoopbackMeasurement:
    """What one probe measured (ms) and the platform figures fitted to it."""

    rounds: int
    direct_ms: dict[str, float]
    via_ms: dict[str, float]
    via_new_connection_ms: dict[str, float]
    envoy_connect_counts: dict[int, int]
    connect_timeouts: dict[int, tuple[int, int]]
    timeout_pct_measured: dict[int, float]
    timeout_pct_of_fit: dict[int, float]
    app_connect_median_ms: float
    refused_median_ms: float
    sidecar_pass_median_ms: float
    sidecar_pass_sigma: float
    connect_median_ms: float
    connect_sigma: float


def _quantiles(samples: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=float)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (10, 50, 90, 99)}


def _get_ms(conn: http.client.HTTPConnection, host: str,
            allowed: tuple[int, ...] = (404,)) -> float:
    """One keep-alive ``GET PROBE_PATH``; its round trip in ms. Raises on a status not in
    ``allowed`` (404: the application answered)."""
    t0 = time.perf_counter()
    conn.request("GET", PROBE_PATH, headers={"Host": host})
    resp = conn.getresponse()
    resp.read()
    elapsed = (time.perf_counter() - t0) * 1000.0
    if resp.status not in allowed:
        raise RuntimeError(f"probe through {host!r} answered {resp.status}, expected "
                           f"{allowed} (is the replica healthy and the rule loose enough?)")
    return elapsed


def round_trips(ports: ReplicaPorts, rounds: int,
                pairs: Sequence[tuple[str, str]] = PROBE_PAIRS,
                allowed: tuple[int, ...] = (404,)) -> tuple[list[float], list[float]]:
    """``rounds`` × each pair: (direct round trips, round trips through the caller's sidecar),
    ms, alternating request by request; ``allowed``: the statuses accepted through the
    sidecar (503 too when connects are meant to fail)."""
    direct: list[float] = []
    via: list[float] = []
    conns = [(http.client.HTTPConnection(HOST, ports.app(dest), timeout=5),
              http.client.HTTPConnection(HOST, ports.outbound_http(caller), timeout=5), dest)
             for caller, dest in pairs]
    try:
        for _ in range(rounds):
            for d_conn, v_conn, dest in conns:
                direct.append(_get_ms(d_conn, dest))
                via.append(_get_ms(v_conn, dest, allowed))
    finally:
        for d_conn, v_conn, _ in conns:
            d_conn.close()
            v_conn.close()
    return direct, via


def tcp_connect_ms(port: int, n: int) -> list[float]:
    """``n`` plain TCP connects to ``port`` on loopback (connect, then close), ms."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((HOST, port), timeout=5):
            out.append((time.perf_counter() - t0) * 1000.0)
    return out


def refused_connect_ms(n: int) -> list[float]:
    """``n`` TCP connects to a closed loopback port until refused, ms."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            socket.create_connection((HOST, port), timeout=5).close()
        except ConnectionRefusedError:
            out.append((time.perf_counter() - t0) * 1000.0)
        else:
            raise RuntimeError(f"port {port} unexpectedly accepted a connection")
    return out


#: Monte-Carlo draws of the deconvolution fit (seeded: the same samples give the same fit).
FIT_DRAWS = 20_000
FIT_SEED = 0
_SIGMAS = np.linspace(0.05, 2.5, 50)


def fit_added_lognormal(base: Sequence[float], total: Sequence[float], terms: int,
                        upper_q: float) -> tuple[float, float]:
    """(median, sigma) of the lognormal X such that ``base + X_1 + ... + X_terms`` (i.i.d.
    copies, independent of ``base``) has the median and the ``upper_q`` quantile of
    ``total``: a deconvolution by Monte Carlo with common random numbers (``base`` resampled).
    For each sigma on a grid the median is found by bisection to match ``total``'s median; the
    sigma whose upper quantile comes closest (in log) wins. ValueError when ``total``'s median
    is not above ``base``'s."""
    base_arr, total_arr = np.asarray(base, float), np.asarray(total, float)
    want_mid = float(np.median(total_arr))
    want_hi = float(np.quantile(total_arr, upper_q))
    if not want_mid > float(np.median(base_arr)):
        raise ValueError(f"median of the total ({want_mid:.3f} ms) is not above the base's "
                         f"({float(np.median(base_arr)):.3f} ms): nothing to attribute")
    rng = np.random.default_rng(FIT_SEED)
    b = base_arr[rng.integers(0, len(base_arr), FIT_DRAWS)]
    z = rng.standard_normal((FIT_DRAWS, terms))
    best: tuple[float, float, float] | None = None
    for sigma in _SIGMAS:
        shape = np.exp(sigma * z).sum(axis=1)
        lo, hi = 1e-4, want_mid
        for _ in range(40):
            mid = math.sqrt(lo * hi)
            if float(np.median(b + mid * shape)) < want_mid:
                lo = mid
            else:
                hi = mid
        median = math.sqrt(lo * hi)
        err = abs(math.log(float(np.quantile(b + median * shape, upper_q)) / want_hi))
        if best is None or err < best[2]:
            best = (median, float(sigma), err)
    assert best is not None
    return best[0], best[1]


def fit(direct: Sequence[float], via: Sequence[float], via_new: Sequence[float],
        connect_counts: dict[int, int], connect_timeouts: dict[int, tuple[int, int]],
        app_connect: Sequence[float], refused: Sequence[float],
        rounds: int) -> LoopbackMeasurement:
    """The platform figures from the raw samples (see the module docstring)."""
    from scipy.stats import norm

    pass_median, pass_sigma = fit_added_lognormal(direct, via, terms=4, upper_q=0.9)
    conn_median, conn_sigma = fit_censored_lognormal(connect_counts)
    return LoopbackMeasurement(
        rounds=rounds, direct_ms=_quantiles(direct), via_ms=_quantiles(via),
        via_new_connection_ms=_quantiles(via_new), envoy_connect_counts=dict(connect_counts),
        connect_timeouts=dict(connect_timeouts),
        timeout_pct_measured={t: 100.0 * f / n for t, (n, f) in connect_timeouts.items() if n},
        timeout_pct_of_fit={t: 100.0 * float(norm.sf(math.log(t / conn_median) / conn_sigma))
                            for t in connect_timeouts},
        app_connect_median_ms=statistics.median(app_connect),
        refused_median_ms=statistics.median(refused), sidecar_pass_median_ms=pass_median,
        sidecar_pass_sigma=pass_sigma, connect_median_ms=conn_median, connect_sigma=conn_sigma)


def sidecar_stats(ports: ReplicaPorts, query: str) -> list[dict[str, Any]]:
    """Every sidecar's admin ``/stats?format=json&<query>`` document, one per proxy."""
    from envs.backends.local import envoy_config as ec

    docs = []
    for proxy in ec.PROXIES:
        url = f"http://{HOST}:{ec.admin_port(ports, proxy)}/stats?format=json&{query}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            docs.append(json.loads(resp.read()))
    return docs


def _outbound_destination(stat_name: str) -> str:
    """The destination service of an outbound cluster's statistic
    (``cluster.outbound|8080||carts.sock-shop.svc.cluster.local.upstream_cx_total`` → carts)."""
    return stat_name.split("||", 1)[1].split(".", 1)[0]


def envoy_connect_counts(ports: ReplicaPorts,
                         destinations: Sequence[str] | None = None) -> dict[int, int]:
    """Connections set up so far by every sidecar's outbound clusters (to ``destinations``
    only, if given), by whole ms: Envoy records ``upstream_cx_connect_ms`` as an integer count
    of milliseconds (truncated), so ``k`` means a set-up time in ``[k, k + 1)`` ms. Read from
    each admin's detailed histogram (cumulative since the Envoy started)."""
    counts: dict[int, int] = {}
    for doc in sidecar_stats(ports, "histogram_buckets=detailed&filter=upstream_cx_connect_ms$"):
        for entry in doc.get("stats", []):
            for hist in entry.get("histograms", {}).get("details", []):
                if not hist.get("name", "").startswith("cluster.outbound|"):
                    continue
                if destinations is not None and \
                        _outbound_destination(hist["name"]) not in destinations:
                    continue
                for bucket in hist.get("totals", []):
                    k = math.floor(float(bucket["lower_bound"]) + 1e-9)
                    counts[k] = counts.get(k, 0) + int(bucket["count"])
    return counts


def count_growth(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """``after - before`` per whole ms (zero and negative growth dropped)."""
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] > before.get(k, 0)}


def fit_censored_lognormal(counts: dict[int, int]) -> tuple[float, float]:
    """(median, sigma) ms of the lognormal most likely to give ``counts`` of values truncated
    to whole ms (``k`` → a value in ``[k, k + 1)``): maximum likelihood over intervals.
    ValueError with fewer than 50 values or a single interval (nothing to fit a spread to)."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    if sum(counts.values()) < 50 or len(counts) < 2:
        raise ValueError(f"need at least 50 connections over 2+ whole-ms values, got {counts}")
    ks = np.array(sorted(counts), dtype=float)
    ns = np.array([counts[int(k)] for k in ks], dtype=float)
    lo = np.where(ks > 0, np.log(np.maximum(ks, 1e-300)), -np.inf)
    hi = np.log(ks + 1.0)

    def nll(theta: np.ndarray) -> float:
        mu, sigma = theta[0], math.exp(theta[1])
        p = norm.cdf((hi - mu) / sigma) - norm.cdf((lo - mu) / sigma)
        return float(-(ns * np.log(np.maximum(p, 1e-300))).sum())

    res = minimize(nll, x0=np.array([math.log(0.5), math.log(0.8)]), method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    return math.exp(float(res.x[0])), math.exp(float(res.x[1]))


def connect_timeout_counters(ports: ReplicaPorts,
                             destinations: Sequence[str]) -> tuple[int, int]:
    """(connections started, connect timeouts) so far of every sidecar's outbound clusters
    to ``destinations``: Envoy's ``upstream_cx_total`` and ``upstream_cx_connect_timeout``."""
    total = timeouts = 0
    for doc in sidecar_stats(ports, "filter=(upstream_cx_total|upstream_cx_connect_timeout)$"):
        for stat in doc.get("stats", []):
            name = stat.get("name", "")
            if not name.startswith("cluster.outbound|"):
                continue
            dest = _outbound_destination(name)
            if dest not in destinations:
                continue
            if name.endswith(".upstream_cx_total"):
                total += int(stat["value"])
            elif name.endswith(".upstream_cx_connect_timeout"):
                timeouts += int(stat["value"])
    return total, timeouts


def timeout_rules(connect_timeout_ms: int | None) -> list[DestinationRule]:
    """``connectTimeout`` (None: Istio's default, 10 s) and ``maxRequestsPerConnection: 1`` on
    :data:`TIMEOUT_DESTINATIONS` (Istio's defaults elsewhere)."""
    return [DestinationRule(name=f"{d}-probe", host=d, connection_pool=ConnectionPool(
                tcp=TcpSettings(connect_timeout_ms=connect_timeout_ms),
                http=HttpSettings(max_requests_per_connection=1)))
            for d in TIMEOUT_DESTINATIONS]


def one_request_per_connection() -> list[DestinationRule]:
    """Istio's defaults everywhere except ``maxRequestsPerConnection: 1`` on every HTTP
    service: each request through a sidecar opens a new connection."""
    return [DestinationRule(name=f"{name}-probe", host=name, connection_pool=ConnectionPool(
                http=HttpSettings(max_requests_per_connection=1)))
            for name, svc in SERVICE_BY_NAME.items() if svc.protocol != Protocol.TCP]


def _under_load(mesh, seed: int, work):  # type: ignore[no-untyped-def]
    """Run ``work()`` while Locust drives :data:`BACKGROUND_LOAD` through ``mesh``. Raises
    RuntimeError if the load ended before the work did (the probe would have run idle)."""
    errors: list[BaseException] = []

    def load() -> None:
        try:
            mesh.run_load(BACKGROUND_LOAD, seed)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(BACKGROUND_WARMUP_S)
    try:
        out = work()
        if not thread.is_alive():
            raise RuntimeError("the background load ended before the probe did: lower "
                               "--rounds or raise BACKGROUND_LOAD.requests")
        return out
    finally:
        thread.join()
        if errors:
            raise errors[0]


def measure_raw(mesh, rounds: int, seed: int = 0) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The raw samples (ms) of probing ``mesh`` (a :class:`~envs.backends.local.LocalMesh`)
    under the background load; leaves Istio's defaults applied."""
    ports = mesh.ports
    mesh.apply([])
    direct, via = _under_load(mesh, seed, lambda: round_trips(ports, rounds))
    mesh.apply(one_request_per_connection())
    before = envoy_connect_counts(ports)
    _, via_new = _under_load(mesh, seed + 1, lambda: round_trips(ports, rounds))
    connects = count_growth(before, envoy_connect_counts(ports))
    timeouts: dict[int, tuple[int, int]] = {}
    for k, t in enumerate(CONNECT_TIMEOUTS_MS):
        mesh.apply(timeout_rules(t))
        total0, fails0 = connect_timeout_counters(ports, TIMEOUT_DESTINATIONS)
        _under_load(mesh, seed + 2 + k, lambda: round_trips(ports, rounds, TIMEOUT_PAIRS,
                                                            allowed=(404, 503)))
        total1, fails1 = connect_timeout_counters(ports, TIMEOUT_DESTINATIONS)
        timeouts[t] = (total1 - total0, fails1 - fails0)
    mesh.apply([])
    return {"direct": direct, "via": via, "via_new": via_new,
            "envoy_connect_counts": connects, "connect_timeouts": timeouts,
            "app_connect": tcp_connect_ms(ports.app("catalogue"), rounds),
            "refused": refused_connect_ms(rounds)}


def measure_stalls(mesh, rounds: int, seed: int = 0,  # type: ignore[no-untyped-def]
                   timeouts_ms: Sequence[int | None] = STALL_TIMEOUTS_MS
                   ) -> dict[str, dict[str, Any]]:
    """Per ``connectTimeout`` (ms; None: Istio's 10 s default) applied with
    ``maxRequestsPerConnection: 1`` to :data:`TIMEOUT_DESTINATIONS`, while probing through
    them under the background load: the connections the callers' sidecars started to those
    destinations (``upstream_cx_total``), how many Envoy timed out
    (``upstream_cx_connect_timeout``) and the set-up times of the others by whole ms
    (``upstream_cx_connect_ms``). Keys: the timeout as a string (``"default"`` for None).
    Leaves Istio's defaults applied."""
    ports = mesh.ports
    out: dict[str, dict[str, Any]] = {}
    try:
        for k, t in enumerate(timeouts_ms):
            mesh.apply(timeout_rules(t))
            total0, fails0 = connect_timeout_counters(ports, TIMEOUT_DESTINATIONS)
            hist0 = envoy_connect_counts(ports, TIMEOUT_DESTINATIONS)
            _under_load(mesh, seed + 2 + k, lambda: round_trips(
                ports, rounds, TIMEOUT_PAIRS, allowed=(404, 503)))
            total1, fails1 = connect_timeout_counters(ports, TIMEOUT_DESTINATIONS)
            out["default" if t is None else str(t)] = {
                "connects": total1 - total0, "timeouts": fails1 - fails0,
                "connect_counts": count_growth(
                    hist0, envoy_connect_counts(ports, TIMEOUT_DESTINATIONS))}
    finally:
        mesh.apply([])
    return out


@dataclass(frozen=True)
class StallMixture:
    """A connect time as a body + stall mixture, ms: with probability ``1 - stall_p`` a draw
    of the lognormal body (``body_median_ms``, ``body_sigma``), else of the stall lognormal
    (``stall_median_ms``, ``stall_sigma``), far out."""

    body_median_ms: float
    body_sigma: float
    stall_p: float
    stall_median_ms: float
    stall_sigma: float

    def sf(self, t_ms: float) -> float:
        """P(connect time > ``t_ms``)."""
        from scipy.stats import norm

        body = float(norm.sf(math.log(t_ms / self.body_median_ms) / self.body_sigma))
        stall = float(norm.sf(math.log(t_ms / self.stall_median_ms) / self.stall_sigma))
        return (1.0 - self.stall_p) * body + self.stall_p * stall


def fit_stall_mixture(phases: Sequence[dict[str, dict[str, Any]]], body_median_ms: float,
                      ) -> tuple[StallMixture, dict[str, tuple[int, int]]]:
    """The :class:`StallMixture` most likely to give the timed-out shares of ``phases``
    (runs of :func:`measure_stalls`, pooled), under the simulator's rule: a connect times out
    at ``connectTimeout`` T iff its time exceeds T. Maximum likelihood over the binomial counts
    (timeouts of connects started) at each finite T; the body's median is ``body_median_ms``
    (the median of Envoy's ``upstream_cx_connect_ms``, :func:`fit_censored_lognormal`: a late
    timer moves the tail, not the median), its sigma and the stall's probability, median and
    sigma are fitted.

    Why only the timeouts: Envoy's connect timer runs late on a busy dispatcher, so connects
    whose recorded set-up time exceeds a 1 ms timeout still succeed (measured: ~40 % of the
    successes under a 1 ms timeout record >= 1 ms); the set-up times and the timed-out shares
    cannot come from one "fails iff longer than T" distribution, and the simulator needs the
    shares. Returns the mixture and the pooled (connects, timeouts) per timeout key.
    ValueError with fewer than 4 finite timeouts measured (4 parameters)."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    pooled: dict[str, tuple[int, int]] = {}
    for run in phases:
        for key, ph in run.items():
            n, f = pooled.get(key, (0, 0))
            pooled[key] = (n + int(ph["connects"]), f + int(ph["timeouts"]))
    finite = sorted((float(k), n, f) for k, (n, f) in pooled.items() if k != "default" and n)
    if len(finite) < 4:
        raise ValueError(f"need connects under at least 4 finite connectTimeouts to fit the "
                         f"stall mixture, got {sorted(pooled)}")
    log_t = np.log(np.array([t for t, _, _ in finite]))
    ns = np.array([n for _, n, _ in finite], dtype=float)
    fs = np.array([f for _, _, f in finite], dtype=float)

    def unpack(theta: np.ndarray) -> StallMixture:
        return StallMixture(body_median_ms, math.exp(theta[0]),
                            1.0 / (1.0 + math.exp(-theta[1])), math.exp(theta[2]),
                            math.exp(theta[3]))

    def nll(theta: np.ndarray) -> float:
        m = unpack(theta)
        if (m.stall_median_ms <= m.body_median_ms or not 0.05 <= m.stall_sigma <= 3.0
                or not 0.05 <= m.body_sigma <= 3.0):
            return 1e18
        sf = ((1.0 - m.stall_p) * norm.sf((log_t - math.log(body_median_ms)) / m.body_sigma)
              + m.stall_p * norm.sf((log_t - math.log(m.stall_median_ms)) / m.stall_sigma))
        sf = np.clip(sf, 1e-12, 1 - 1e-12)
        return float(-(fs * np.log(sf) + (ns - fs) * np.log(1.0 - sf)).sum())

    best = None
    for body_sigma in (0.3, 0.8):
        for stall_median in (3.0, 5.0, 10.0):
            x0 = np.array([math.log(body_sigma), math.log(0.1 / 0.9), math.log(stall_median),
                           math.log(0.5)])
            res = minimize(nll, x0=x0, method="Nelder-Mead",
                           options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20_000,
                                    "maxfev": 20_000})
            if best is None or res.fun < best.fun:
                best = res
    assert best is not None
    return unpack(best.x), pooled


def fit_raw(raw: dict[str, Any], rounds: int) -> LoopbackMeasurement:
    """:func:`fit` over the samples :func:`measure_raw` returned (or a saved copy)."""
    counts = {int(k): int(v) for k, v in raw["envoy_connect_counts"].items()}
    timeouts = {int(k): (int(v[0]), int(v[1]))
                for k, v in raw.get("connect_timeouts", {}).items()}  # older files lack it
    return fit(raw["direct"], raw["via"], raw["via_new"], counts, timeouts,
               raw["app_connect"], raw["refused"], rounds)


def main(argv: list[str] | None = None) -> int:
    """Probe a replica (or refit saved samples); print the measurement and the fitted
    platform figures; save the raw samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=600,
                        help="requests per probed pair and kind (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/platform/loopback_probe.json",
                        help="where the raw samples are written (default %(default)s)")
    parser.add_argument("--refit", default=None,
                        help="fit the samples saved in this file instead of probing")
    parser.add_argument("--stalls", action="store_true",
                        help="probe only the connect timeouts (STALL_TIMEOUTS_MS) and fit the "
                             "body + stall mixture")
    parser.add_argument("--short", action="store_true",
                        help="with --stalls: only STALL_TIMEOUTS_SHORT_MS")
    parser.add_argument("--envoy-workers", type=int, default=None,
                        help="worker threads per Envoy of a replica this starts (default: the "
                             "local mesh's)")
    parser.add_argument("--fit-stalls", nargs="+", default=None, metavar="FILE",
                        help="fit the body + stall mixture to these --stalls files, pooled")
    args = parser.parse_args(argv)
    t0 = time.time()
    if args.fit_stalls or args.stalls:
        return _stalls_main(args, t0)
    if args.refit:
        saved = json.loads(Path(args.refit).read_text())
        raw, rounds = saved["samples_ms"], int(saved["rounds"])
    else:
        if args.rounds < 100:
            parser.error("--rounds must be at least 100 for a p99")
        from envs.backends.local import LocalMesh

        rounds = args.rounds
        mesh = LocalMesh(replica=args.replica, seed=args.seed)
        try:
            raw = measure_raw(mesh, rounds, args.seed)
        finally:
            mesh.close()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "rounds": rounds, "replica": args.replica, "seed": args.seed,
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "samples_ms": {k: (vs if isinstance(vs, dict) else [round(v, 4) for v in vs])
                           for k, vs in raw.items()}}))
    m = fit_raw(raw, rounds)
    print(json.dumps(asdict(m), indent=1))
    print(f"# {time.time() - t0:.0f} s; loopback platform: sidecar pass median "
          f"{m.sidecar_pass_median_ms:.3f} ms sigma {m.sidecar_pass_sigma:.2f}; connect "
          f"median {m.connect_median_ms:.3f} ms sigma {m.connect_sigma:.2f} (connects timed "
          f"out, % by connectTimeout ms: measured {m.timeout_pct_measured}, the fit's "
          f"{m.timeout_pct_of_fit}); refused "
          f"{m.refused_median_ms:.3f} ms; sidecar → app connect "
          f"{m.app_connect_median_ms:.3f} ms")
    return 0


def stall_table(mixture: StallMixture, pooled: dict[str, tuple[int, int]]) -> str:
    """Markdown: per ``connectTimeout``, the measured share of connects timed out against the
    mixture's and the ``LOOPBACK`` lognormal's (percent)."""
    from envs.backends.sim import profile

    lines = ["| connectTimeout ms | connects | timed out | measured % | mixture % | "
             "lognormal % |", "|---:|---:|---:|---:|---:|---:|"]
    for key in sorted((k for k in pooled if k != "default"), key=float):
        n, f = pooled[key]
        t = float(key)
        lognormal = 1.0 - profile.LOOPBACK.connect_body_cdf(t)
        lines.append(f"| {key} | {n} | {f} | {100.0 * f / n if n else float('nan'):.2f} | "
                     f"{100.0 * mixture.sf(t):.2f} | {100.0 * lognormal:.2f} |")
    return "\n".join(lines)


def _stalls_main(args: argparse.Namespace, t0: float) -> int:
    """``--stalls`` (probe, save, fit) or ``--fit-stalls FILE...`` (fit saved runs)."""
    if args.fit_stalls:
        runs = [json.loads(Path(f).read_text())["stalls"] for f in args.fit_stalls]
    else:
        from envs.backends.local import LocalMesh

        kwargs = {} if args.envoy_workers is None else {"envoy_workers": args.envoy_workers}
        mesh = LocalMesh(replica=args.replica, seed=args.seed, **kwargs)
        try:
            stalls = measure_stalls(mesh, args.rounds, args.seed,
                                    STALL_TIMEOUTS_SHORT_MS if args.short else STALL_TIMEOUTS_MS)
            workers = mesh.envoy_workers
        finally:
            mesh.close()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "rounds": args.rounds, "replica": args.replica, "seed": args.seed,
            "envoy_workers": workers,
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "stalls": stalls}))
        runs = [stalls]
    from envs.backends.sim import profile

    try:
        mixture, pooled = fit_stall_mixture(runs, profile.LOOPBACK.connect_median_ms)
    except ValueError as e:
        print(f"platform_probe: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"mixture": asdict(mixture), "pooled": pooled}, indent=1))
    print(stall_table(mixture, pooled))
    print(f"# {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
