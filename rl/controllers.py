"""Controllers: what decides the mesh's configuration at every step of a scenario.

The held-out evaluation (:func:`rl.evaluation.closed_loop.run_scenario`) drives each through
the same scenarios, seeds and observation. The protocol (:class:`Controller`):
``reset(scenario, start) -> initial configuration`` (``start`` is the scenario's own starting
configuration, which ``MeshEnv`` would begin from) and ``act(obs, config, info) -> new
configuration`` after every run.

* :class:`StaticController` — one configuration deployed unchanged: Istio's defaults (empty),
  the TPE-201 static configuration (:func:`tuned_static`);
* :class:`KeepStart` — the scenario's own starting configuration, never changed: what the
  policy would get by doing nothing (the reference that separates what its actions did from
  what its start gave it);
* :class:`GatewayThrottle` — admission control at the gateway: the front-end's pool cut to
  what the shop serves (:func:`gateway_throttle_config`; sizes measured, see there);
* :class:`RuleBasedController` — hand-written rules on the observation's destination blocks
  (AIMD of a destination's binding limit, connect timeout on connect failures, tighter limits on
  a slowed callee), parameters :class:`RuleParams`, tuned values :data:`TUNED_RULE_PARAMS`;
* :class:`PolicyController` — a trained RLModule acting greedily through the action catalogue;
* :class:`AdaptiveConcurrencyController` — Envoy's adaptive concurrency filter on the callees'
  inbound listeners (a mesh-level option of the ``local`` backend) with Istio's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from envs.actions import ActionCatalogue, MeshConfig, istio_default_config, make_catalogue
from envs.istio import ConnectionPool, resolve
from envs.knobs import Knob, effective_value, knob_range, with_knob
from envs.observation import DEST_CHANNELS, LATENCY_CEILING_MS, ObservationEncoder
from envs.scenarios import Scenario
from envs.settings import DEFAULT_ENV_CONFIG, TUNED_STATIC_PATH, tuned_config_from
from envs.sockshop import ENTRY_SERVICE


class Controller(Protocol):
    """Decides the configuration at every step (module docstring)."""

    name: str

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The configuration of the scenario's reset run; ``start`` is the scenario's own."""
        ...

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The configuration of the next run, from the observation of the last one and the
        configuration in force (``info``: ``t``, ``report``, ``rate_rps``,
        ``episode_len``; nothing about the runs to come)."""
        ...


class StaticController:
    """One configuration (service → pool) deployed at the start and never changed; the
    scenario's own start is ignored (an operator deploys the configuration they chose).

    Args:
        config: the configuration (empty: Istio's defaults).
        name: its name in tables.
    """

    def __init__(self, config: MeshConfig, name: str) -> None:
        self.config: MeshConfig = dict(config)
        self.name = name

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The static configuration."""
        return dict(self.config)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The static configuration, unchanged."""
        return dict(self.config)


class KeepStart:
    """The scenario's own start (Istio's defaults, the notebook's random draw or the tuned
    configuration — what ``MeshEnv`` begins from), kept unchanged: the do-nothing controller
    that starts where the policy starts.

    Args:
        name: its name in tables.
    """

    def __init__(self, name: str = "keep_start") -> None:
        self.name = name

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start."""
        return dict(start)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """No change."""
        return config


def istio_defaults() -> StaticController:
    """Istio's defaults: no DestinationRule."""
    return StaticController(istio_default_config(), "istio_default")


def tuned_static(path: str | None = None) -> StaticController:
    """The TPE-201 static configuration ``experiments/tune_static.py`` wrote (default
    :data:`envs.settings.TUNED_STATIC_PATH`)."""
    return StaticController(tuned_config_from(path or TUNED_STATIC_PATH), "tpe_201")


#: The gateway throttle's front-end pool: ``maxConnections`` / ``http1MaxPendingRequests``.
#: Measured on the simulator (open load, 12 load seeds 100..111, 10 s of requests per run,
#: front-end maxConnections 1..32 × pending 1, 8, unlimited; mean evaluation score):
#: at 2× the nominal rate Istio's defaults score -38.0 (goodput 64 req/s), maxConnections 16 /
#: pending 1 -18.8 (97 req/s), 8 / 1 -26.3; at 3× -91.3 (9 req/s) against -44.4 (98 req/s) for
#: 16 / 1; at the nominal rate 16 / 1 scores -2.05 against the defaults' -1.78. 16 / 1 is the
#: best of the grid under overload: a pool of about the shop's concurrency at capacity
#: (~108 req/s × ~100 ms in flight) that fails fast what it cannot serve.
THROTTLE_MAX_CONNECTIONS = 16
THROTTLE_PENDING = 1


def gateway_throttle_config(max_connections: int = THROTTLE_MAX_CONNECTIONS,
                            pending: int | None = THROTTLE_PENDING,
                            carts_max_connections: int | None = None) -> MeshConfig:
    """The throttle's configuration: the front-end's pool (what the ingress gateway calls)
    limited to ``max_connections`` connections and ``pending`` queued requests (None: Istio's
    default queue); optionally carts' ``maxConnections`` too (the notebook-era throttle)."""
    pool = with_knob(None, Knob.MAX_CONNECTIONS, max_connections)
    if pending is not None:
        pool = with_knob(pool, Knob.HTTP1_MAX_PENDING_REQUESTS, pending)
    config: MeshConfig = {"front-end": pool}
    if carts_max_connections is not None:
        config["carts"] = with_knob(None, Knob.MAX_CONNECTIONS, carts_max_connections)
    return config


class GatewayThrottle(StaticController):
    """Admission control at the gateway: Istio's defaults everywhere but the front-end's pool,
    cut to what the shop can serve (:func:`gateway_throttle_config`), deployed unchanged. The
    control that shows whether a score can be won by serving less."""

    def __init__(self, max_connections: int = THROTTLE_MAX_CONNECTIONS,
                 pending: int | None = THROTTLE_PENDING,
                 carts_max_connections: int | None = None,
                 name: str = "gateway_throttle") -> None:
        super().__init__(gateway_throttle_config(max_connections, pending,
                                                 carts_max_connections), name)


@dataclass(frozen=True)
class RuleParams:
    """The rule-based controller's parameters (:class:`RuleBasedController`'s rules).

    Attributes:
        uo_threshold: share of a destination's attempts rejected by a pool limit (``UO``)
            above which its binding limit is raised.
        increase: additive raise of the binding limit (connections or requests).
        headroom: the raised limit is at least ``headroom ×`` the requests in flight per pool.
        uf_threshold: share of attempts whose connection failed (``UF``) above which
            ``connectTimeout`` is multiplied by ``timeout_factor``.
        timeout_factor: connect timeout multiplier on UF (> 1).
        slow_p99_ms: a destination whose p99 exceeds this is slow ...
        slow_demand: ... and queues its callers when a calling pool holds at least this many
            requests in flight (time-averaged); then
        decrease: its ``maxConnections`` becomes this share (< 1) of ``min(maxConnections,
            in flight)``, not below ``min_connections``, and its queue
            ``http1MaxPendingRequests`` = 1.
        min_connections: floor of a multiplicative decrease.
        retry_threshold: share of requests whose retries were skipped (budget) or exhausted
            (``URX``) above which ``maxRetries`` is raised by ``increase``.
        admit_p99_ms: the entry service's p99 (what the ingress gateway saw calling the
            front-end), ms, above which the shop counts as overloaded and the gateway admits
            fewer requests at once (the admission rule; 1e9: never caps on overload, while a cap
            already in place is still raised and lifted as below).
        admit_limit: the first cap on the entry service's concurrent requests
            (``http2MaxRequests``) when overload is seen without one — about the shop's
            concurrency at capacity, which an operator knows from a load test.
        admit_increase: additive raise of that cap while it rejects requests (``UO``) and the
            p99 is under :data:`ADMIT_PROBE_SHARE` × ``admit_p99_ms``.
        admit_release: the cap is removed when the requests in flight stay under this share of
            it with nothing rejected (the load has calmed).
    """

    uo_threshold: float = 0.01
    increase: int = 20
    headroom: float = 2.0
    uf_threshold: float = 0.01
    timeout_factor: float = 4.0
    slow_p99_ms: float = 2000.0
    slow_demand: float = 8.0
    decrease: float = 0.5
    min_connections: int = 4
    retry_threshold: float = 0.05
    admit_p99_ms: float = 1000.0
    admit_limit: int = 16
    admit_increase: int = 4
    admit_release: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.uo_threshold < 1 and 0 <= self.uf_threshold < 1
                and 0 <= self.retry_threshold < 1):
            raise ValueError(f"RuleParams thresholds must be in [0, 1): {self}")
        if self.increase < 1 or self.headroom < 1 or self.timeout_factor <= 1:
            raise ValueError(f"RuleParams increase >= 1, headroom >= 1, timeout_factor > 1: "
                             f"{self}")
        if not 0 < self.decrease < 1 or self.min_connections < 1 or self.slow_p99_ms <= 0 \
                or self.slow_demand <= 0:
            raise ValueError(f"RuleParams decrease in (0, 1), min_connections >= 1, "
                             f"slow_p99_ms > 0, slow_demand > 0: {self}")
        if self.admit_p99_ms <= 0 or self.admit_limit < 1 or self.admit_increase < 1 \
                or not 0 < self.admit_release < 1:
            raise ValueError(f"RuleParams admit_p99_ms > 0, admit_limit >= 1, "
                             f"admit_increase >= 1, admit_release in (0, 1): {self}")


#: The tuned parameters, tuned with the main job's budget:
#: ``python experiments/tune_static.py --rules --candidates 320 --top-k 40`` (seed 0) — a seeded
#: random search over :data:`rl.baselines.RULE_PARAM_GRID`, 320 parameter sets (the defaults
#: first) × the same 16 TRAINING scenarios of 20 steps (common random numbers), the best 40
#: re-played on 32 other TRAINING scenarios: 6,400 episodes, as many as ``pg_sweep.py`` trains
#: on (2 trials × 200 iterations × 16 episodes); 449 s on the simulator (2 shared cores,
#: 2026-12-05), observed with ``MeshEnv``'s default catalogue (the front-end tuned too).
#: Result (mean summed score over the 32 selection scenarios): this set −241.1; the search's
#: own best −246.8 there (BENCHMARKS.md, Objective and baselines, 2026-12-05). The admission rule
#: is what pays: every finalist has it on. The earlier set (768 episodes, 2026-12-03, before the
#: ``overload`` training family) is in that section too.
TUNED_RULE_PARAMS = RuleParams(uo_threshold=0.01, increase=50, headroom=1.5, uf_threshold=0.05,
                               timeout_factor=4.0, slow_p99_ms=1000000000.0, slow_demand=4.0,
                               decrease=0.5, min_connections=4, retry_threshold=0.01,
                               admit_p99_ms=500.0, admit_limit=16, admit_increase=2,
                               admit_release=0.5)


#: The admission rule raises the gateway's cap only while the entry's p99 is under this share of
#: ``admit_p99_ms``: a capped shop at capacity keeps its p99 under the threshold (that is what
#: the cap is for) while still rejecting requests, so "rejecting and under the threshold" alone
#: would walk the cap back up into overload (seen on the simulator: 16 → 42 in 7 steps at 3×).
ADMIT_PROBE_SHARE = 0.5


def _inverse_ratio(x: float) -> float:
    """The ratio ``r`` of ``ratio_scale(r) = x``."""
    return x / (1.0 - x) if x < 1.0 else math.inf


def _inverse_latency(x: float) -> float:
    """The latency in ms of ``latency_scale(ms) = x``."""
    return math.expm1(x * math.log1p(LATENCY_CEILING_MS))


class RuleBasedController:
    """Hand-written rules on the observation, one destination (tuned service) at a time.

    Reads, from each tuned service's destination block (:data:`envs.observation.DEST_CHANNELS`,
    what its callers' sidecars saw in the last run), only when the service got requests and the
    backend measured the causes; ``config`` is the configuration in force. Per service, in order
    (several rules may fire in one step; each changes the knob only within its range):

    0. **Admission at the gateway** (the entry service, :data:`envs.sockshop.ENTRY_SERVICE`,
       when the catalogue tunes it; AIMD on its ``http2MaxRequests``, what the ingress gateway
       may have in flight to it): p99 > ``admit_p99_ms`` (overloaded) → the cap becomes
       ``admit_limit`` if there was none, else ``decrease`` × the cap (not below
       ``min_connections``); not overloaded, with a cap: requests rejected by it (``uo_frac`` >
       0) and the p99 under :data:`ADMIT_PROBE_SHARE` × ``admit_p99_ms`` (room to admit more)
       → cap + ``admit_increase``; rejected but without that room → the cap holds; none
       rejected and fewer than ``admit_release`` × cap in
       flight → the cap is removed (unlimited). The excess fails fast at the gateway instead of
       queueing in the front-end until every request misses its SLO — what Envoy's adaptive
       concurrency filter and an operator's load-shedding rule do. Rules 1 and 2 do not act on
       ``http2MaxRequests`` of the entry service (they would undo the cap).
    1. **Slowed callee that queues its callers** (multiplicative decrease): p99 >
       ``slow_p99_ms`` and a calling pool holds ≥ ``slow_demand`` requests in flight, and no
       pool overflow yet (``uo_frac`` ≤ ``uo_threshold``) → ``maxConnections`` = ``decrease``
       × min(``maxConnections``, in flight) (not below ``min_connections``),
       ``http1MaxPendingRequests`` = 1: callers fail fast instead of holding their own
       connections while it is slow. Not for the entry service (rule 0 governs it).
    2. **Pool overflow** (additive increase): ``uo_frac`` > ``uo_threshold`` → the binding
       limit — the one the requests in flight fill most: ``maxConnections`` + queue
       (``http1MaxPendingRequests``; TCP destinations: ``maxConnections``) or
       ``http2MaxRequests`` — is raised to ``max(limit + increase, headroom × in flight)``;
       for the connection+queue limit both ``maxConnections`` and ``http1MaxPendingRequests``
       are raised so.
    3. **Connect failures**: ``uf_frac`` > ``uf_threshold`` → ``connectTimeout`` ×
       ``timeout_factor``.
    4. **Retries lost**: ``retry_overflow_frac`` + ``urx_frac`` > ``retry_threshold`` →
       ``maxRetries`` + ``increase``.

    Nothing fires on a healthy destination: from Istio's defaults on a calm load the controller
    leaves the configuration alone.

    Args:
        params: the rules' parameters.
        catalogue: the catalogue the observation was built with (its layout: which services
            have their own block) and whose services the rules tune; default: ``MeshEnv``'s
            default catalogue, what :func:`rl.evaluation.closed_loop.run_scenario` encodes with.
        name: the controller's name in tables.
    """

    def __init__(self, params: RuleParams = TUNED_RULE_PARAMS,
                 catalogue: ActionCatalogue | None = None, name: str = "rule_based") -> None:
        self.params = params
        self.name = name
        self.catalogue = catalogue or make_catalogue(DEFAULT_ENV_CONFIG["catalogue"])
        names = ObservationEncoder(self.catalogue, 1).names
        self._size = len(names)
        self._index = {n: i for i, n in enumerate(names)}

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start (the controller then adjusts it)."""
        return dict(start)

    def _block(self, obs: np.ndarray, service: str) -> dict[str, float]:
        return {c: float(obs[self._index[f"service/{service}/{c}"]]) for c in DEST_CHANNELS}

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """Apply the rules (class docstring) to every tuned service.

        Raises:
            ValueError: ``obs`` is not laid out for this controller's catalogue (its length
                differs): the rules would read the wrong channels.
        """
        if obs.shape != (self._size,):
            raise ValueError(f"{self.name}: an observation of shape {obs.shape} for a "
                             f"controller whose catalogue {self.catalogue.name!r} lays out "
                             f"{self._size} channels; build both with the same catalogue")
        new = dict(config)
        for service in self.catalogue.services:
            pool = self.rules(self._block(obs, service), new.get(service),
                              entry=service == ENTRY_SERVICE)
            if pool is not None:
                new[service] = pool
        return new

    def rules(self, b: Mapping[str, float], pool: ConnectionPool | None, entry: bool = False
              ) -> ConnectionPool | None:
        """The new pool of one destination from its block ``b`` (None: no change);
        ``entry``: the destination is the entry service (rule 0 applies)."""
        p = self.params
        if b["seen"] < 0.5 or b["causes_seen"] < 0.5:
            return None
        tcp = b["tcp"] >= 0.5
        entry = entry and not tcp
        conn = effective_value(pool, Knob.MAX_CONNECTIONS)
        # the demand channels divide by the limits as Envoy holds them (unlimited: 2^32-1)
        resolved = resolve(pool)
        in_flight = resolved.max_connections * _inverse_ratio(b["demand_conn"])
        out = pool
        changed = False

        def set_knob(knob: Knob, value: float) -> None:
            nonlocal out, changed
            lo, hi = knob_range(knob)
            v = int(min(max(round(value), lo), hi))
            if v != effective_value(out, knob):
                out = with_knob(out, knob, v)
                changed = True

        overflow = b["uo_frac"] > p.uo_threshold
        h2 = effective_value(pool, Knob.HTTP2_MAX_REQUESTS)
        capped = h2 < knob_range(Knob.HTTP2_MAX_REQUESTS)[1]
        if entry:
            p99_ms = _inverse_latency(b["p99"])
            requests_in_flight = resolved.http2_max_requests * _inverse_ratio(
                b["demand_requests"])
            if p99_ms > p.admit_p99_ms:
                set_knob(Knob.HTTP2_MAX_REQUESTS,
                         max(p.min_connections, math.floor(h2 * p.decrease)) if capped
                         else p.admit_limit)
            elif capped and b["uo_frac"] > 0.0 and p99_ms < ADMIT_PROBE_SHARE * p.admit_p99_ms:
                set_knob(Knob.HTTP2_MAX_REQUESTS, h2 + p.admit_increase)
            elif capped and requests_in_flight < p.admit_release * h2:
                set_knob(Knob.HTTP2_MAX_REQUESTS, knob_range(Knob.HTTP2_MAX_REQUESTS)[1])
        slow = (not tcp and not entry and _inverse_latency(b["p99"]) > p.slow_p99_ms
                and in_flight >= p.slow_demand)
        if slow and not overflow:
            set_knob(Knob.MAX_CONNECTIONS,
                     max(p.min_connections, math.floor(min(conn, in_flight) * p.decrease)))
            set_knob(Knob.HTTP1_MAX_PENDING_REQUESTS, 1)
        if overflow:
            target = p.headroom * in_flight
            queue_fill = b["demand_queue"] if not tcp else b["demand_conn"]
            if not tcp and b["demand_requests"] > queue_fill:
                if not entry:
                    set_knob(Knob.HTTP2_MAX_REQUESTS, max(h2 + p.increase, target))
            else:
                set_knob(Knob.MAX_CONNECTIONS, max(conn + p.increase, target))
                if not tcp:
                    pend = effective_value(pool, Knob.HTTP1_MAX_PENDING_REQUESTS)
                    set_knob(Knob.HTTP1_MAX_PENDING_REQUESTS, max(pend + p.increase, target))
        if b["uf_frac"] > p.uf_threshold:
            timeout = effective_value(pool, Knob.CONNECT_TIMEOUT_MS)
            set_knob(Knob.CONNECT_TIMEOUT_MS, timeout * p.timeout_factor)
        if not tcp and b["retry_overflow_frac"] + b["urx_frac"] > p.retry_threshold:
            retries = effective_value(pool, Knob.MAX_RETRIES)
            set_knob(Knob.MAX_RETRIES, retries + p.increase)
        return out if changed else None

    def describe(self) -> dict[str, Any]:
        """The parameters as plain data."""
        return asdict(self.params)


class PolicyController:
    """A trained RLModule acting greedily (argmax of its logits) through the action
    catalogue, from the scenario's own start — what ``MeshEnv`` does with the policy.

    Args:
        module: the RLModule (:func:`rl.evaluation.checkpoint.load_policy`'s ``module``).
        catalogue: the catalogue it was trained with (its action indices).
        name: its name in tables.

    Attributes:
        last_action: the catalogue action of the last :meth:`act` (None before).
    """

    def __init__(self, module: Any, catalogue: ActionCatalogue, name: str = "policy") -> None:
        from rl.evaluation.actors import module_actor

        self.catalogue = catalogue
        self.name = name
        self._actor = module_actor(module, greedy=True)
        self.last_action: int | None = None

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start."""
        self.last_action = None
        return dict(start)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The greedy action applied to ``config``."""
        self.last_action = int(self._actor(obs))
        return self.catalogue.apply(self.last_action, config)


class AdaptiveConcurrencyController(StaticController):
    """Envoy's adaptive concurrency filter (gradient controller) as a method: Istio's defaults
    (no DestinationRule), deployed unchanged, on a mesh whose sidecars run the filter on every
    HTTP service's inbound listener. The filter is not a DestinationRule but part of the mesh
    (a cluster user needs an EnvoyFilter, ``docs/cluster.md``), so this controller only
    declares it: the backend must be started with :meth:`backend_kwargs` (``local`` only — the
    simulator does not model the filter), and :meth:`check_backend` (called by
    :func:`rl.evaluation.closed_loop.run_scenario`) refuses any other backend.

    Args:
        params: the filter's parameters (an
            :class:`envs.backends.local.envoy_config.AdaptiveConcurrency` or a mapping of its
            fields; None: its defaults).
        name: its name in tables.
    """

    def __init__(self, params: Any = None, name: str = "adaptive_concurrency") -> None:
        from envs.backends.local.envoy_config import AdaptiveConcurrency

        super().__init__(istio_default_config(), name)
        self.params = AdaptiveConcurrency.from_value(True if params is None else params)

    def backend_kwargs(self) -> dict[str, Any]:
        """What the ``local`` backend needs (``make_backend("local", **these)`` or
        ``env_config['backend_kwargs']``): the filter's parameters as plain data."""
        assert self.params is not None
        return {"adaptive_concurrency": self.params.to_dict()}

    def check_backend(self, backend: Any) -> None:
        """ValueError (one line) unless ``backend`` is a local mesh running exactly this
        filter."""
        name = getattr(backend, "name", type(backend).__name__)
        if name != "local":
            raise ValueError(f"method {self.name!r} needs backend 'local' started with "
                             f"{self.backend_kwargs()}: backend {name!r} does not model "
                             "Envoy's adaptive concurrency filter")
        running = getattr(backend, "adaptive_concurrency", None)
        if running != self.params:
            raise ValueError(f"method {self.name!r}: local replica {backend.replica} runs "
                             f"adaptive concurrency {running!r}, not {self.params!r}; start it "
                             f"with LocalMesh(adaptive_concurrency=...)")


__all__ = ["THROTTLE_MAX_CONNECTIONS", "THROTTLE_PENDING", "TUNED_RULE_PARAMS",
           "AdaptiveConcurrencyController", "Controller", "GatewayThrottle", "KeepStart",
           "PolicyController", "RuleBasedController", "RuleParams", "StaticController",
           "gateway_throttle_config", "istio_defaults", "tuned_static"]
