"""What the simulation itself assumes beyond SockShop: the platform the mesh runs on (per-hop
costs of the sidecars and connects: :class:`Platform`, ``CLUSTER``, ``LOOPBACK``), Envoy's retry
back-off and the load generator's client gap.

SockShop's own per-service figures (CPU cores, work per operation, DB drivers, the front-end's
crash and restart) live in :mod:`envs.sockshop.figures`, which the simulator (``graph.py``,
``mesh.py``) and the ``local`` backend both read.

Every number says where it came from. Three kinds of source:

* **measured** — the project's own measurements of real Envoy 1.40 on loopback
  (``envs/backends/local/platform_probe.py``; raw samples in
  ``envs/backends/local/measurements/``);
* **documented** — Istio and Envoy documentation
  (https://istio.io/v1.13/docs/ops/deployment/performance-and-scalability/,
  https://istio.io/latest/docs/reference/config/networking/destination-rule/,
  https://www.envoyproxy.io/docs; the simulator's rules: ``envs/backends/sim/README.md``);
* **estimated** — reasoned from the above where nothing measures it directly (each says so).

Units: durations in milliseconds, CPU in milliseconds of one full core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: The simulation's own figures (SockShop's own are in ``envs.sockshop.figures``).
__all__ = [
    "CLIENT_GAP_MS",
    "CLUSTER",
    "CONNECT_MEDIAN_MS",
    "CONNECT_REFUSED_MS",
    "CONNECT_SIGMA",
    "INBOUND_CONNECT_MS",
    "LOOPBACK",
    "PLATFORMS",
    "RETRY_ATTEMPTS",
    "RETRY_BASE_INTERVAL_MS",
    "SIDECAR_PASS_CPU_MS",
    "SIDECAR_PASS_P90_MS",
    "SIDECAR_PASS_SIGMA",
    "Platform",
    "platform_named",
]

# ---------------------------------------------------------------------------------------------
# Sidecar (Envoy) costs
# ---------------------------------------------------------------------------------------------

#: Latency one proxy pass adds (one direction through one sidecar), lognormal. Istio's
#: performance page quotes ~2.65 ms at p90 per proxy (documented, Istio 1.8-1.13:
#: https://istio.io/v1.13/docs/ops/deployment/performance-and-scalability/); with sigma 0.5 the
#: median is 2.65 / exp(1.2816 * 0.5) = 1.40 ms. A hop crosses the caller's and the callee's
#: sidecar on the way in and again on the way out.
SIDECAR_PASS_P90_MS = 2.65
SIDECAR_PASS_SIGMA = 0.5
#: CPU one proxy pass costs (~0.1-0.3 ms CPU per request per proxy pass, measured on real Envoy
#: 1.40 on this project's 2-core development machine; not recorded in the repository). Sidecars
#: run in their own container with their own CPU budget, so this is not charged to the
#: application's CPU limit; kept here for the ``local`` backend.
SIDECAR_PASS_CPU_MS = 0.2

#: Time to establish one new upstream connection between two sidecars: TCP handshake plus the
#: Istio mTLS (TLS 1.3, ECDSA P-256) handshake, lognormal. Estimate: 2-3 in-cluster round trips
#: of ~0.3 ms plus ~0.5-1 ms of handshake CPU on each proxy gives ~2 ms median; the long tail
#: (sigma 0.6: p90 4.3 ms, p99 8 ms) stands for CPU contention on a busy node. Envoy's
#: ``connect_timeout`` covers the TLS handshake too (Envoy raises ``Connected`` only after it),
#: so a ``connectTimeout`` of a few ms fails a share of connects with 503 UF.
CONNECT_MEDIAN_MS = 2.0
CONNECT_SIGMA = 0.6
#: A refused connection (service down: RST from the node) fails after about one round trip.
CONNECT_REFUSED_MS = 0.3
#: Inbound sidecar to the application over loopback (plain TCP): small and never near a
#: ``connectTimeout`` (Istio's minimum is 1 ms); added to the latency, no failure modelled.
INBOUND_CONNECT_MS = 0.1


# ---------------------------------------------------------------------------------------------
# The platform: per-hop costs of the network and the sidecars where the mesh runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """Where the mesh runs: what one hop costs outside the services' own work.

    These are properties of the network and the sidecars' machine, not of SockShop: the same
    services cost less per hop on loopback than across a cluster's nodes. All durations in ms;
    every lognormal is given by its median and sigma.

    Attributes:
        name: a label (``"cluster"``, ``"loopback"``).
        sidecar_pass_median_ms, sidecar_pass_sigma: latency one proxy pass adds (one direction
            through one sidecar; a hop crosses the caller's and the callee's sidecar on the way
            in and again on the way out), lognormal.
        connect_median_ms, connect_sigma: time to establish one new sidecar → sidecar
            connection (TCP + mTLS handshake; Envoy's ``connect_timeout`` covers both),
            lognormal.
        connect_refused_ms: time for a refused connection (service down) to fail.
        inbound_connect_ms: the callee's sidecar → application connect (plain TCP on the pod's
            loopback): added to the latency, never failing.
        source: where the numbers come from.
        connect_stall_p, connect_stall_median_ms, connect_stall_sigma: a *stall* component of
            the connect time (0, the default: none): with probability ``connect_stall_p`` a
            connect takes a draw of this second lognormal instead of the body's
            (``connect_median_ms``, ``connect_sigma``). Used where connects stall far beyond
            the body (scheduling stalls on a busy machine: :data:`LOOPBACK`).
    """

    name: str
    sidecar_pass_median_ms: float
    sidecar_pass_sigma: float
    connect_median_ms: float
    connect_sigma: float
    connect_refused_ms: float
    inbound_connect_ms: float
    source: str = ""
    connect_stall_p: float = 0.0
    connect_stall_median_ms: float = 0.0
    connect_stall_sigma: float = 0.0

    def __post_init__(self) -> None:
        p = self.connect_stall_p
        if not (isinstance(p, int | float) and 0.0 <= p < 1.0):
            raise ValueError(f"Platform.connect_stall_p must be a probability in [0, 1), got {p!r}")
        if p > 0:
            for field_name in ("connect_stall_median_ms", "connect_stall_sigma"):
                v = getattr(self, field_name)
                if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                    raise ValueError(f"Platform.{field_name} must be a positive number with a "
                                     f"stall component (connect_stall_p > 0), got {v!r}")
        for field_name in ("sidecar_pass_median_ms", "connect_median_ms"):
            v = getattr(self, field_name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"Platform.{field_name} must be a positive number of ms, "
                                 f"got {v!r}")
        for field_name in ("sidecar_pass_sigma", "connect_sigma", "connect_refused_ms",
                           "inbound_connect_ms"):
            v = getattr(self, field_name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"Platform.{field_name} must be a finite number >= 0, "
                                 f"got {v!r}")

    @property
    def has_connect_stalls(self) -> bool:
        """True when the connect time has a stall component."""
        return self.connect_stall_p > 0

    def connect_body_cdf(self, t_ms: float) -> float:
        """P(connect time <= ``t_ms``) of the body lognormal alone (the whole connect time of a
        platform without stalls)."""
        if t_ms <= 0:
            return 0.0
        if self.connect_sigma == 0:
            return float(t_ms >= self.connect_median_ms)
        return NormalDist().cdf(math.log(t_ms / self.connect_median_ms) / self.connect_sigma)

    def connect_cdf(self, t_ms: float) -> float:
        """P(connect time <= ``t_ms``): the body, mixed with the stall component if any. The
        simulator fails a connect with UF at ``connectTimeout`` T with probability
        ``1 - connect_cdf(T)``."""
        body = self.connect_body_cdf(t_ms)
        if not self.has_connect_stalls:
            return body
        stall = (0.0 if t_ms <= 0 else NormalDist().cdf(
            math.log(t_ms / self.connect_stall_median_ms) / self.connect_stall_sigma))
        return (1.0 - self.connect_stall_p) * body + self.connect_stall_p * stall

    def connect_quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the connect time (body and stalls), ms."""
        if not self.has_connect_stalls:
            return self.connect_median_ms * math.exp(NormalDist().inv_cdf(q)
                                                     * self.connect_sigma)
        # the mixture's inverse by bisection on log time (each component bounds it)
        lo = math.log(min(self.connect_median_ms, self.connect_stall_median_ms)) - 40.0
        hi = math.log(max(self.connect_median_ms, self.connect_stall_median_ms)) + 40.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if self.connect_cdf(math.exp(mid)) < q:
                lo = mid
            else:
                hi = mid
        return math.exp(0.5 * (lo + hi))

    def connect_quantiles_ms(self, probs: np.ndarray) -> np.ndarray:
        """The connect time's quantiles at ``probs`` (each in (0, 1)), ms, vectorised: the
        mixture's CDF on a log-time grid (1e-3 apart in log ms: the CDF is smooth, so linear
        interpolation errs by ~1e-7 in probability), inverted by linear interpolation."""
        probs = np.asarray(probs, np.float64)
        if not self.has_connect_stalls:
            return np.array([self.connect_quantile_ms(float(q)) for q in probs])
        parts = ((self.connect_median_ms, self.connect_sigma),
                 (self.connect_stall_median_ms, self.connect_stall_sigma))
        lo = min(math.log(m) - 8.5 * sg for m, sg in parts)
        hi = max(math.log(m) + 8.5 * sg for m, sg in parts)
        logx = np.linspace(lo, hi, int((hi - lo) / 1e-3) + 2)
        erfc = np.vectorize(math.erfc, otypes=[np.float64])

        def ncdf(z: np.ndarray) -> np.ndarray:
            return 0.5 * erfc(-z / math.sqrt(2.0))

        p = self.connect_stall_p
        cdf = ((1.0 - p) * ncdf((logx - math.log(parts[0][0])) / parts[0][1])
               + p * ncdf((logx - math.log(parts[1][0])) / parts[1][1]))
        return np.exp(np.interp(probs, cdf, logx))

    def sidecar_pass_quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of one proxy pass, ms."""
        return self.sidecar_pass_median_ms * math.exp(
            NormalDist().inv_cdf(q) * self.sidecar_pass_sigma)


#: The loopback platform's figures (:data:`LOOPBACK`), measured on 2026-11-27 23:03 UTC on a
#: 2-core machine (shared with other work) by ``python -m envs.backends.local.platform_probe
#: --replica 5 --rounds 600``; raw samples in
#: ``envs/backends/local/measurements/loopback_probe_2026-11-27.json``
#: (``--refit`` reproduces the fit from them). One proxy pass: fitted to 4 800 round trips
#: through a caller's and a callee's sidecar against 4 800 straight to the application (p50
#: 0.69 vs 0.24 ms, p90 1.58 vs 0.62 ms) → median 0.053 ms, sigma 1.35 (p90 0.30 ms): Envoy on
#: loopback is fast but, on 2 busy cores, has a long scheduling tail. Connect: Envoy's own
#: ``upstream_cx_connect_ms`` of 13 086 sidecar → sidecar connections (TCP + mTLS; Envoy
#: records whole ms: 80.6 % under 1 ms, 15.4 % 1–2 ms, 2.8 % 2–3 ms, 0.8 % 3–4 ms), interval
#: maximum likelihood → median 0.50 ms, sigma 0.81 (p99 3.3 ms). Refused connect and the
#: sidecar → application connect: plain loopback TCP, 0.016 and 0.019 ms (medians). Not held by
#: this lognormal: the shares of connects that actually time out (~6 % at each of 1, 2 and 3 ms,
#: ``loopback_probe_timeouts_2026-11-27.json`` beside the samples): see the stall mixture below,
#: which replaces this sigma (0.81, still the fit of the set-up times) in :data:`LOOPBACK`.
_LOOPBACK_PASS_MEDIAN_MS = 0.053
_LOOPBACK_PASS_SIGMA = 1.35
_LOOPBACK_CONNECT_MEDIAN_MS = 0.50
_LOOPBACK_CONNECT_SIGMA = 0.81
#: Connect stalls (issue 13): the body above does not hold the shares of connects that time out
#: under a tiny ``connectTimeout`` — they stay flat from 1 to 3 ms and fall between 3 and 5 ms
#: (scheduling stalls of the sidecars on 2 busy cores; Envoy's connect timer also runs late, so
#: set-up times Envoy records past a 1 ms timeout still succeed). Three runs of
#: ``python -m envs.backends.local.platform_probe --stalls`` (``connectTimeout`` with
#: ``maxRequestsPerConnection: 1`` on carts, orders, payment and shipping under the 5-user
#: background load), raw counts in ``envs/backends/local/measurements/``:
#: ``loopback_stalls_2026-12-03_run0.json`` (2 workers, ``--rounds 300``, T = 1/2/3/5/10/30 ms:
#: 16.8 / 15.6 / 13.7 / 2.9 / 0.7 / 0.2 % timed out), ``..._run1.json`` (2 workers,
#: ``--short --rounds 150``: 16.0 / 19.0 / 16.4 / 3.3 / 0.7 %) — both while the lead's training
#: kept the machine's load average at ~20 — and ``loopback_stalls_2026-11-27_converted.json``
#: (the 2026-11-27 probe's 1 / 2 / 3 ms counts, 1 worker, a lighter machine: 6.8 / 5.7 / 5.7 %).
#: Pooled maximum likelihood of the binomial counts (``--fit-stalls`` over the three files;
#: the body's median held at the set-up times' 0.50 ms): body sigma 0.088 (the body never
#: reaches 1 ms), stall probability 0.143, stall median 4.05 ms, sigma 0.525. Timed out,
#: pooled, measured / mixture / body lognormal alone: 1 ms 13.3 / 14.2 / 19.6 %, 2 ms 13.4 /
#: 13.0 / 4.4 %, 3 ms 11.8 / 10.2 / 1.4 %, 5 ms 3.1 / 4.9 / 0.2 %, 10 ms 0.67 / 0.61 / 0.01 %.
#: The stall share depends on how busy the machine is (6 % on 2026-11-27, 16 % under training):
#: the pooled figure is a middle, not a constant of Envoy. The body's sigma here (0.088) is the
#: connect time as the timer sees it; the simulator adds the drawn time to the request's
#: latency, so a successful connect costs ~0.5 ms where Envoy records 0.5-2 ms (a small
#: understatement next to the services' tens of ms).
_LOOPBACK_CONNECT_BODY_SIGMA = 0.088
_LOOPBACK_STALL_P = 0.143
_LOOPBACK_STALL_MEDIAN_MS = 4.05
_LOOPBACK_STALL_SIGMA = 0.525
_LOOPBACK_REFUSED_MS = 0.016
_LOOPBACK_INBOUND_CONNECT_MS = 0.019
_LOOPBACK_SOURCE = ("measured: python -m envs.backends.local.platform_probe (2026-11-27, "
                    "envs/backends/local/measurements/loopback_probe_2026-11-27.json)")

#: A Kubernetes cluster with Istio's sidecars and mTLS (the notebook's GKE setting): the constants
#: above. The simulator's default platform; ``calibrate_sim.py`` holds on it.
CLUSTER = Platform(
    name="cluster",
    sidecar_pass_median_ms=SIDECAR_PASS_P90_MS / math.exp(1.2815516 * SIDECAR_PASS_SIGMA),
    sidecar_pass_sigma=SIDECAR_PASS_SIGMA, connect_median_ms=CONNECT_MEDIAN_MS,
    connect_sigma=CONNECT_SIGMA, connect_refused_ms=CONNECT_REFUSED_MS,
    inbound_connect_ms=INBOUND_CONNECT_MS,
    source="documented (Istio's 2.65 ms p90 per proxy) and estimated (TCP + mTLS set-up)")

#: The ``local`` backend's mesh: every Envoy on one machine's loopback, mTLS between sidecars.
#: Measured with ``python -m envs.backends.local.platform_probe --replica 5`` (see that module:
#: zero-work requests straight to a service's application and through a caller's sidecar,
#: with every connection reused and with ``maxRequestsPerConnection: 1``, while Locust drives
#: the reference load with 5 users; lognormals fitted to the differences).
LOOPBACK = Platform(
    name="loopback",
    sidecar_pass_median_ms=_LOOPBACK_PASS_MEDIAN_MS, sidecar_pass_sigma=_LOOPBACK_PASS_SIGMA,
    connect_median_ms=_LOOPBACK_CONNECT_MEDIAN_MS, connect_sigma=_LOOPBACK_CONNECT_BODY_SIGMA,
    connect_refused_ms=_LOOPBACK_REFUSED_MS, inbound_connect_ms=_LOOPBACK_INBOUND_CONNECT_MS,
    source=_LOOPBACK_SOURCE, connect_stall_p=_LOOPBACK_STALL_P,
    connect_stall_median_ms=_LOOPBACK_STALL_MEDIAN_MS, connect_stall_sigma=_LOOPBACK_STALL_SIGMA)

#: The platforms by name (``SimMesh(platform="loopback")``).
PLATFORMS: dict[str, Platform] = {p.name: p for p in (CLUSTER, LOOPBACK)}


def platform_named(platform: Platform | str) -> Platform:
    """``platform`` itself, or the platform of that name; ValueError naming the known ones."""
    if isinstance(platform, Platform):
        return platform
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    return PLATFORMS[platform]


#: Envoy's retry back-off: base interval 25 ms, full jitter, doubling per retry (documented:
#: ``x-envoy-retry-on`` / router retry policy defaults). Istio's default route retries twice.
RETRY_BASE_INTERVAL_MS = 25.0
RETRY_ATTEMPTS = 2

# ---------------------------------------------------------------------------------------------
# The load generator
# ---------------------------------------------------------------------------------------------

#: Time a Locust user spends between one response and its next request (parsing the reply,
#: picking an item; no think time in the reference load test). Estimate for Locust's
#: Python client on a gevent loop.
CLIENT_GAP_MS = 1.0
