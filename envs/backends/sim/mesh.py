"""``SimMesh``: the request-level simulator of SockShop under Istio, as a mesh backend.

It implements :class:`envs.backends.base.Backend`: ``apply`` DestinationRules (kept as the
current configuration, never touching anything outside the process), ``run_load`` drives the
reference load test through the simulated mesh (``envs.backends.sim.core``) and returns a
:class:`~envs.backends.report.LoadReport`, ``healthy`` is the notebook's one ``GET /catalogue``
check, ``close`` restores the configuration found at construction.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from envs.backends.base import BackendError, LatencySpike, LoadSpec, ServiceDown
from envs.backends.report import EndpointStats, LoadReport, ServiceStats
from envs.backends.sim import core, kernel_layout, kernel_stats, profile
from envs.backends.sim.graph import GATEWAY, CompiledGraph, compile_graph
from envs.istio import DestinationRule, ResolvedPool, resolve
from envs.sockshop import SERVICE_BY_NAME, SERVICE_NAMES, Protocol, figures
from envs.sockshop.slo import slo_ms

#: Seed of the health check's single request (``SimMesh.healthy``): fixed, so that the same
#: configuration always gets the same verdict.
HEALTH_CHECK_SEED = 20_240_601
#: Stand-in for "no limit" in the core's int64 arrays (Istio's 2^32-1 fits; this is larger).
_NO_LIMIT = 2**40


#: Standard-normal quantiles at the midpoints of TABLE_SIZE equal-probability bins: the core
#: draws a lognormal as ``median * exp(sigma * Z[k])`` with a uniform random k (|z| <= 3.7).
_Z = np.array([NormalDist().inv_cdf((k + 0.5) / kernel_layout.TABLE_SIZE)
               for k in range(kernel_layout.TABLE_SIZE)])


def _lognormal_table(sigma: float, unit_mean: bool = False) -> np.ndarray:
    """``exp(sigma * Z)``: multiply by the median; with ``unit_mean`` scaled to mean 1."""
    tab = np.exp(sigma * _Z)
    return tab / tab.mean() if unit_mean else tab


def _two_pass_lognormal(median_ms: float, sigma: float) -> tuple[float, float]:
    """(median, sigma) of a lognormal with the mean and variance of the sum of two
    independent proxy passes (Fenton-Wilkinson), so one draw covers the caller's and the
    callee's sidecar."""
    mean = median_ms * np.exp(0.5 * sigma * sigma)
    var = mean * mean * (np.exp(sigma * sigma) - 1.0)
    two_sigma = float(np.sqrt(np.log(1.0 + 2.0 * var / (4.0 * mean * mean))))
    return float(2.0 * mean * np.exp(-0.5 * two_sigma * two_sigma)), two_sigma


@dataclass(frozen=True)
class _PlatformTables:
    """A :class:`~envs.backends.sim.profile.Platform` as the core's medians and tables."""

    platform: profile.Platform
    pass_median_ms: float
    tab_one: np.ndarray
    two_median_ms: float
    tab_two: np.ndarray
    tab_conn: np.ndarray

    @classmethod
    def of(cls, platform: profile.Platform) -> _PlatformTables:
        two_median, two_sigma = _two_pass_lognormal(platform.sidecar_pass_median_ms,
                                                    platform.sidecar_pass_sigma)
        return cls(platform, platform.sidecar_pass_median_ms,
                   _lognormal_table(platform.sidecar_pass_sigma), two_median,
                   _lognormal_table(two_sigma), _connect_table(platform))


@functools.lru_cache(maxsize=8)
def _connect_table(platform: profile.Platform) -> np.ndarray:
    """The connect time's quantile table, in units of the body's median (the core draws
    ``connect_median_ms * table[k]``, k uniform): the body lognormal's ``exp(sigma * Z)``, or,
    for a platform with connect stalls, the body + stall mixture's quantiles at the same
    probabilities ``(k + 0.5) / TABLE_SIZE`` (inverse-CDF sampling: one draw per connect, as
    without stalls)."""
    if not platform.has_connect_stalls:
        return _lognormal_table(platform.connect_sigma)
    probs = (np.arange(kernel_layout.TABLE_SIZE) + 0.5) / kernel_layout.TABLE_SIZE
    return platform.connect_quantiles_ms(probs) / platform.connect_median_ms


_NO_FAULTS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64),
              np.zeros(0, np.float64), np.zeros(0, np.float64))


@dataclass(frozen=True)
class _Config:
    """The resolved pool per service (index = service index), the rules that produced it and
    the core's arrays built from them (built once per ``apply``, not per run)."""

    rules: tuple[DestinationRule, ...]
    pools: tuple[ResolvedPool, ...]
    arrays: dict[str, np.ndarray]


def _limit(value: int) -> int:
    """An Envoy limit as the core's integer: Istio's "unlimited" (2^32-1) is simply large."""
    return int(value)


#: Envoy worker threads per simulated sidecar by default: Istio's sidecars run 2
#: (``proxy.istio.io/config`` ``concurrency``, default 2), as does the ``local`` mesh
#: (``envs.backends.local.envoy_config.DEFAULT_ENVOY_WORKERS``).
DEFAULT_ENVOY_WORKERS = 2
#: Most worker threads a simulated sidecar may be given (a sanity bound, not a machine's).
MAX_ENVOY_WORKERS = 64


def check_envoy_workers(value: object) -> int:
    """``value`` as a number of Envoy worker threads per simulated sidecar
    (1..:data:`MAX_ENVOY_WORKERS`); ValueError in one line otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not 1 <= value <= MAX_ENVOY_WORKERS:
        raise ValueError(f"envoy_workers must be an int in 1..{MAX_ENVOY_WORKERS} (Envoy worker "
                         f"threads per sidecar; Istio runs 2), got {value!r}")
    return int(value)


def http_connection_cap(max_connections: int, envoy_workers: int) -> int:
    """The connections one HTTP pool (a calling sidecar's outbound cluster, or a callee's
    inbound cluster) may hold under ``maxConnections`` when its sidecar runs ``envoy_workers``
    worker threads: ``max(maxConnections, envoy_workers)``.

    Envoy keeps one connection pool per worker; the circuit breaker's count is shared, but a
    worker whose pool holds no connection to the host opens one even at the limit
    (``ConnPoolImplBase::tryCreateNewConnection``,
    https://github.com/envoyproxy/envoy/blob/main/source/common/conn_pool/conn_pool_base.cc:
    "always create one, to prevent pending streams being queued to this upstream with no way
    to be processed"). The simulator has one pool per calling sidecar, not one per worker, so it
    models the slack as this cap: exact where it matters most (``maxConnections`` 1 with 2
    workers holds 2, measured on real Envoy: BENCHMARKS.md, "Envoy worker threads"), a lower
    bound of Envoy's worst case ``maxConnections + workers - 1`` above that. TCP pools keep
    ``maxConnections`` exactly: Envoy's TCP proxy checks the shared circuit breaker before it
    asks its pool (``Filter::initializeUpstreamConnection``,
    https://github.com/envoyproxy/envoy/blob/main/source/common/tcp_proxy/tcp_proxy.cc)."""
    return max(int(max_connections), int(envoy_workers))


class SimMesh:
    """The simulated mesh: SockShop's 14 services, a sidecar per service, the ingress gateway.

    Args:
        rules: the DestinationRules in force at construction (default: none, i.e. Istio's
            defaults everywhere). ``close()`` puts these back.
        reset_stats_after_hatch: like the notebook's Locust (0.7, which resets its statistics
            once all users are hatched), count the requests only after the last user started;
            the run then covers hatching plus ``LoadSpec.requests`` counted requests. False
            counts from the first request.
        warm: compile (or load from Numba's cache) the core at construction, so that the first
            ``run_load`` is not slow. ``compile_s`` records how long that took.
        frontend_crashes: model the front-end's Node.js process crashing on an unparsable
            reply (``figures.FRONTEND_CRASH_ON``) and its restart (False: it answers 500).
        replica: the replica index ``MeshEnv`` leased. Every ``SimMesh`` is its own
            independent in-process mesh, so the index only labels it (``self.replica``).
        platform: where the simulated mesh runs — the per-hop network and sidecar costs
            (``profile.Platform`` or its name): ``"cluster"`` (default, the calibrated
            Kubernetes + Istio figures) or ``"loopback"`` (the ``local`` backend's Envoys on
            one machine, measured).
        envoy_workers: Envoy worker threads per sidecar (default 2, Istio's and the ``local``
            mesh's): an HTTP pool may hold ``max(maxConnections, envoy_workers)`` connections
            (:func:`http_connection_cap`); 1 applies ``maxConnections`` exactly (Envoy's
            ``--concurrency 1``, the simulator before issue 13). ValueError outside
            1..:data:`MAX_ENVOY_WORKERS`.
    """

    name = "sim"

    def __init__(self, rules: Sequence[DestinationRule] = (), *,
                 reset_stats_after_hatch: bool = True, warm: bool = True,
                 frontend_crashes: bool = True, replica: int = 0,
                 platform: profile.Platform | str = profile.CLUSTER,
                 envoy_workers: int = DEFAULT_ENVOY_WORKERS) -> None:
        self.replica = replica
        #: Envoy worker threads per sidecar (see ``http_connection_cap``).
        self.envoy_workers = check_envoy_workers(envoy_workers)
        #: The platform's per-hop costs (see ``profile.Platform``).
        self.platform = profile.platform_named(platform)
        self._platform_tables = _PlatformTables.of(self.platform)
        self.frontend_crashes = frontend_crashes
        self._graph: CompiledGraph = compile_graph()
        self._tab_work = np.stack([_lognormal_table(float(sg), unit_mean=True)
                                   for sg in self._graph.svc_work_sigma])
        self._svc_index = {n: i for i, n in enumerate(SERVICE_NAMES)}
        #: Latency objective per endpoint index (``envs.sockshop.slo``), ms.
        self._endpoint_slo_ms = np.array([slo_ms(n) for n in self._graph.endpoint_names],
                                         np.float64)
        self.reset_stats_after_hatch = reset_stats_after_hatch
        self._config = self._build_config(rules)
        self._initial = self._config
        self.compile_s = 0.0
        if warm:
            t0 = time.perf_counter()
            self.run_load(LoadSpec(users=1, requests=1), seed=0)
            self.compile_s = time.perf_counter() - t0

    # ----- configuration ---------------------------------------------------------------------

    @property
    def rules(self) -> tuple[DestinationRule, ...]:
        """The DestinationRules currently in force."""
        return self._config.rules

    def _build_config(self, rules: Sequence[DestinationRule]) -> _Config:
        unknown = sorted({r.service for r in rules if r.service not in self._svc_index})
        if unknown:
            raise ValueError("DestinationRule for unknown service(s): " + ", ".join(unknown)
                             + f"; SockShop's services are: {', '.join(SERVICE_NAMES)}")
        by_service: dict[str, DestinationRule] = {}
        for r in rules:
            if r.service in by_service:
                raise ValueError(f"two DestinationRules for service {r.service!r} "
                                 f"({by_service[r.service].name!r} and {r.name!r})")
            by_service[r.service] = r
        pools = tuple(resolve(by_service[n].connection_pool if n in by_service else None)
                      for n in SERVICE_NAMES)
        return _Config(rules=tuple(rules), pools=pools, arrays=self._arrays(pools))

    def apply(self, rules: Sequence[DestinationRule]) -> None:
        """Make ``rules`` the complete configuration; a service without a rule gets Istio's
        defaults. Raises ValueError (naming them) for rules of unknown services and keeps the
        previous configuration."""
        self._config = self._build_config(rules)

    def close(self) -> None:
        """Restore the configuration found at construction. Idempotent."""
        self._config = self._initial

    # ----- load ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """The notebook's check: one ``GET /catalogue`` through the current configuration answers
        200. Deterministic (seed :data:`HEALTH_CHECK_SEED`); a cold mesh, so with a tiny
        ``connectTimeout`` the first connections may fail."""
        out = self._run(LoadSpec(users=1, requests=1), seed=HEALTH_CHECK_SEED)
        return bool(out[0] == kernel_layout.OK and len(out[3]) == 1 and out[3][0] == 0)

    def run_load(self, load: LoadSpec, seed: int) -> LoadReport:
        """Drive ``load`` (with its faults) through the simulated mesh; same seed, same report."""
        out = self._run(load, seed)
        (status, rec_ep, rec_lat, rec_fail, t_start, t_end, st, srec_svc, srec_lat, extra,
         attempt_ms, in_flight_area) = out
        if status != kernel_layout.OK:
            raise BackendError(f"simulator stalled before {load.requests} requests completed "
                               f"(completed {len(rec_ep)})")
        return self._report(load, rec_ep, rec_lat, rec_fail, t_start, t_end, st, srec_svc,
                            srec_lat, extra, attempt_ms, in_flight_area)

    def _arrays(self, pools: tuple[ResolvedPool, ...]) -> dict[str, np.ndarray]:
        """``pools`` as the core's per-cluster and per-service arrays."""
        g = self._graph
        n_cl = g.cluster_dest.shape[0]
        drivers = figures.DRIVERS
        cl = {k: np.zeros(n_cl, dtype) for k, dtype in (
            ("max_conn", np.int64), ("max_pending", np.int64), ("max_req", np.int64),
            ("max_retries", np.int64), ("connect_timeout", np.float64), ("max_rpc", np.int64),
            ("idle_timeout", np.float64), ("driver_max", np.int64), ("mux", np.int64))}
        for c in range(n_cl):
            dest = int(g.cluster_dest[c])
            pool = pools[dest]
            name = SERVICE_NAMES[dest]
            cl["max_conn"][c] = _limit(pool.max_connections)   # HTTP: capped below
            cl["connect_timeout"][c] = float(pool.connect_timeout_ms)
            if SERVICE_BY_NAME[name].protocol == Protocol.TCP:
                # only tcp.* acts on a TCP destination
                cl["max_pending"][c] = _NO_LIMIT
                cl["max_req"][c] = _NO_LIMIT
                cl["max_retries"][c] = _NO_LIMIT
                cl["max_rpc"][c] = 0
                cl["idle_timeout"][c] = float(pool.tcp_idle_timeout_ms or 0)
                caller = SERVICE_NAMES[int(g.cluster_caller[c])]
                drv = drivers[(caller, name)]
                cl["driver_max"][c] = drv.max_connections
                cl["mux"][c] = int(drv.multiplexed)
            else:
                cl["max_conn"][c] = http_connection_cap(pool.max_connections,
                                                        self.envoy_workers)
                cl["max_pending"][c] = _limit(pool.http1_max_pending_requests)
                cl["max_req"][c] = _limit(pool.http2_max_requests)
                cl["max_retries"][c] = _limit(pool.max_retries)
                cl["max_rpc"][c] = int(pool.max_requests_per_connection or 0)
                cl["idle_timeout"][c] = float(pool.http_idle_timeout_ms)
                cl["driver_max"][c] = _NO_LIMIT
        inbound = {
            # a TCP destination's inbound cap is not applied (README, "Not modelled")
            "in_max_conn": np.array([
                _limit(p.max_connections) if SERVICE_BY_NAME[n].protocol == Protocol.TCP
                else http_connection_cap(p.max_connections, self.envoy_workers)
                for n, p in zip(SERVICE_NAMES, pools, strict=True)], np.int64),
            "in_max_pending": np.array([_limit(p.http1_max_pending_requests) for p in pools],
                                       np.int64),
            "in_max_req": np.array([_limit(p.http2_max_requests) for p in pools], np.int64),
        }
        return {**{"cl_" + k: v for k, v in cl.items()}, **inbound}

    def _faults(self, load: LoadSpec) -> tuple[np.ndarray, ...]:
        if not load.faults:
            return _NO_FAULTS
        svc, kind, start, end, factor = [], [], [], [], []
        for f in load.faults:
            if f.service not in self._svc_index:
                raise ValueError(f"fault names unknown service {f.service!r}")
            if not f.end_s > f.start_s >= 0:
                raise ValueError(f"fault window must satisfy 0 <= start_s < end_s, got {f}")
            if isinstance(f, ServiceDown):
                svc.append(self._svc_index[f.service])
                kind.append(0)
                factor.append(1.0)
            elif isinstance(f, LatencySpike):
                if f.factor <= 0:
                    raise ValueError(f"LatencySpike.factor must be positive, got {f.factor}")
                svc.append(self._svc_index[f.service])
                kind.append(1)
                factor.append(float(f.factor))
            else:
                raise ValueError(f"unsupported fault {f!r}")
            start.append(f.start_s * 1000.0)
            end.append(f.end_s * 1000.0)
        return (np.array(svc, np.int64), np.array(kind, np.int64), np.array(start, np.float64),
                np.array(end, np.float64), np.array(factor, np.float64))

    def _run(self, load: LoadSpec, seed: int) -> tuple:
        if load.mode == "closed" and load.users <= 0:
            raise ValueError(f"users must be positive, got {load.users}")
        g = self._graph
        arr = self._config.arrays
        f_svc, f_kind, f_start, f_end, f_factor = self._faults(load)
        open_loop = load.mode == "open"
        loop_len = len(g.loop_root)
        loop_gap_ms = (1000.0 * loop_len / load.arrival_rate_rps) if open_loop else 0.0
        # fixed-size pools keep the core fast; on overflow re-run (same seed) with larger ones
        job_cap = 64 * max(int(load.users), 4) if not open_loop else 4096
        user_cap = 1024
        timer_cap = 2048
        for _ in range(7):
            out = self._simulate(arr, f_svc, f_kind, f_start, f_end, f_factor, open_loop, load,
                                 loop_gap_ms, seed, job_cap, user_cap, timer_cap)
            if out[0] != kernel_layout.ERR_CAPACITY:
                return out
            job_cap, user_cap, timer_cap = 2 * job_cap, 2 * user_cap, 2 * timer_cap
        raise BackendError("simulator capacity exhausted: the load keeps too many requests in "
                           f"flight (more than {job_cap // 2} calls)")

    def _simulate(self, arr: dict[str, np.ndarray], f_svc: np.ndarray, f_kind: np.ndarray,
                  f_start: np.ndarray, f_end: np.ndarray, f_factor: np.ndarray,
                  open_loop: bool, load: LoadSpec, loop_gap_ms: float, seed: int,
                  job_cap: int, user_cap: int, timer_cap: int) -> tuple:
        g = self._graph
        pt = self._platform_tables
        return core.simulate(
            g.node_svc, g.node_cluster, g.node_kind, g.node_on_error, g.node_timeout_ms,
            g.node_ok_status, g.node_step_first, g.node_step_count, g.node_work_ms,
            g.node_cont_ms, g.step_call_first, g.step_call_count, g.step_calls,
            g.loop_root, g.loop_endpoint, g.detail_endpoint, g.item_price,
            g.svc_is_tcp, g.svc_cores, g.svc_workers, self._tab_work,
            arr["in_max_conn"], arr["in_max_pending"], arr["in_max_req"],
            g.cluster_dest, arr["cl_max_conn"], arr["cl_max_pending"], arr["cl_max_req"],
            arr["cl_max_retries"], arr["cl_connect_timeout"], arr["cl_max_rpc"],
            arr["cl_idle_timeout"], arr["cl_driver_max"], arr["cl_mux"],
            f_svc, f_kind, f_start, f_end, f_factor,
            open_loop, int(load.users if not open_loop else 0), int(load.requests),
            1000.0 / load.hatch_rate_per_s, loop_gap_ms,
            bool(self.reset_stats_after_hatch and not open_loop),
            pt.pass_median_ms, pt.tab_one, pt.two_median_ms, pt.tab_two,
            pt.platform.connect_median_ms, pt.tab_conn, pt.platform.connect_refused_ms,
            pt.platform.inbound_connect_ms,
            profile.RETRY_BASE_INTERVAL_MS, profile.RETRY_ATTEMPTS, profile.CLIENT_GAP_MS,
            figures.CART_FOUND_REREADS, g.payment_limit, g.shipping_cost, g.declined_status,
            bool(self.frontend_crashes), self._svc_index["front-end"], g.node_crash,
            figures.FRONTEND_RESTART_MS, figures.CRASH_BACKOFF_BASE_MS,
            figures.CRASH_BACKOFF_CAP_MS,
            int(seed) & 0xFFFFFFFF, job_cap, user_cap, timer_cap,
        )

    # ----- report ----------------------------------------------------------------------------

    def _report(self, load: LoadSpec, rec_ep: np.ndarray, rec_lat: np.ndarray,
                rec_fail: np.ndarray, t_start: float, t_end: float, st: np.ndarray,
                srec_svc: np.ndarray, srec_lat: np.ndarray, extra: np.ndarray,
                attempt_ms: np.ndarray, in_flight_area: np.ndarray) -> LoadReport:
        """The run's records and counters as a :class:`LoadReport`.

        Per destination service (what one *request* and one *attempt* are): an HTTP request is
        one call a caller's sidecar sends (its retries included); an attempt is one try of it
        through the caller's outbound pool (first try or retry), ending in a local failure (UO,
        UF, a refused connection), the callee's answer (a reset included) or the caller's
        timeout. A TCP destination's request is one database / broker **operation** of a
        caller's driver (Istio counts TCP connections instead: ``extra["connections_opened"]``),
        with exactly one attempt (TCP connections are not retried); its ``error_ratio`` is the
        share of operations that failed. Every cause is counted with its attempt (see
        ``core.simulate``), hence ``uo + uf + ut + reset <= num_attempts`` and
        ``retry_count <= num_attempts`` over the recorded window, and ``urx_count``,
        ``retry_overflow_count <= num_requests`` (each is counted when its request fails).
        ``mean_ms`` (HTTP only, like ``p99_ms``) is the mean attempt duration;
        ``in_flight_per_pool`` the largest, over the destination's calling pools, time-average
        of the attempts in flight (from the attempt's start to its end: pending + active) over
        the recorded window.
        """
        g = self._graph
        window_ms = max(t_end - t_start, 1e-9)
        duration_s = window_ms / 1000.0
        names = g.endpoint_names
        # Python lists: scalar access on them is much cheaper than on NumPy arrays
        ep_arr, lat_mean, lat_p99 = kernel_stats.endpoint_stats(
            rec_ep, rec_lat, rec_fail, self._endpoint_slo_ms, len(names))
        ep = ep_arr.tolist()
        sv = kernel_stats.group_p99(srec_svc, srec_lat, len(SERVICE_NAMES)).tolist()
        rows = st.tolist()
        is_tcp = g.svc_is_tcp.tolist()
        att_ms = attempt_ms.tolist()
        in_flight = (in_flight_area / window_ms).tolist()

        endpoints = {}
        for name, row in zip(names, ep, strict=True):
            cnt = int(row[0])
            stats = row[1:7] if cnt else [None] * 6
            endpoints[name] = EndpointStats(name, cnt, int(row[7]), *stats,
                                            rps=cnt / duration_s, num_good=int(row[8]))
        lay = kernel_layout
        services = {}
        for i, name in enumerate(SERVICE_NAMES):
            row = rows[i]
            n_req = row[lay.ST_REQ]
            err = row[lay.ST_FAIL] / n_req if n_req else 0.0
            n_att = row[lay.ST_ATTEMPTS]
            if is_tcp[i]:
                # Istio has no request durations for TCP
                p99 = mean = None
            else:
                p99 = sv[i][1] if sv[i][0] else None
                mean = att_ms[i] / n_att if n_att else None
            services[name] = ServiceStats(
                name, n_req, p99, float(err), row[lay.ST_UO], row[lay.ST_UF], row[lay.ST_RETRY],
                num_attempts=n_att, mean_ms=mean, ut_count=row[lay.ST_UT],
                reset_count=row[lay.ST_RESET], urx_count=row[lay.ST_URX],
                retry_overflow_count=row[lay.ST_RETRY_OVF], in_flight_per_pool=in_flight[i])

        def per_service(col: int, keep: list[bool] | None = None) -> dict[str, int]:
            return {n: rows[i][col] for i, n in enumerate(SERVICE_NAMES)
                    if (rows[i][col] if keep is None else keep[i])}

        x = extra.tolist()
        extra_out = {
            "task_errors": int(x[lay.X_TASK_ERRORS]),
            "cart_race_failures": int(x[lay.X_CART_RACE]),
            "payment_declines": int(x[lay.X_DECLINES]),
            "order_wait_timeouts": int(x[lay.X_TIMEOUTS]),
            "frontend_crashes": int(x[lay.X_CRASHES]),
            "frontend_down_ms": x[lay.X_DOWN_MS],
            "retry_overflows": per_service(lay.ST_RETRY_OVF),
            "connect_failures": per_service(lay.ST_CONN_FAIL),
            "connections_opened": per_service(lay.ST_CONN_OPEN),
            "db_operations": per_service(lay.ST_OPS, is_tcp),
            "peak_inbound_requests": per_service(lay.ST_PEAK_INBOUND, [not t for t in is_tcp]),
            # per destination, the most connections one calling sidecar's pool held at once
            # (open, idle or connecting; an idle one past idleTimeout counts until the pool
            # next looks at it), and (HTTP) the most the callee's inbound cluster held
            "peak_connections": per_service(lay.ST_PEAK_CONN),
            "peak_inbound_connections": per_service(lay.ST_PEAK_INCONN,
                                                    [not t for t in is_tcp]),
            "events": int(x[lay.X_EVENTS]),
            "simulated_ms": x[lay.X_SIM_END_MS],
            # of reset_count: attempts whose connection the down destination refused
            "resets_refused": per_service(lay.ST_REFUSED),
            # of the front-end's reset_count: requests lost inside its crashed process
            "frontend_crash_resets": rows[self._svc_index["front-end"]][lay.ST_CRASH_RESET],
        }
        if not len(rec_lat):
            lat_mean = lat_p99 = None
        return LoadReport(endpoints=endpoints, services=services, duration_s=duration_s,
                          users=load.users if load.mode == "closed" else 0, backend=self.name,
                          extra=extra_out, num_abandoned=int(x[lay.X_ABANDONED]),
                          latency_mean_ms=lat_mean, latency_p99_ms=lat_p99)


__all__ = ["DEFAULT_ENVOY_WORKERS", "GATEWAY", "HEALTH_CHECK_SEED", "MAX_ENVOY_WORKERS", "SimMesh",
           "check_envoy_workers", "http_connection_cap"]
