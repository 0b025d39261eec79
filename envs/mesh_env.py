"""``MeshEnv``: tune SockShop's Istio connection pools, one knob step at a time.

The environment drives one mesh replica through the :class:`~envs.backends.base.Backend`
interface only (``apply`` · ``healthy`` · ``run_load`` · ``close``); which backend it is
(``sim``, ``local``, ``k8s``) is a name in ``env_config``. Each env leases its replica
(:mod:`envs.backends.lease`), so no two envs — across runners, Tune trials and evaluation —
share one.

Each step applies one action of the catalogue (:mod:`envs.actions`) to the current
configuration, checks the front-end answers (the notebook's ``check_fail``), drives the episode's
load through the mesh and scores the report (:mod:`envs.reward`).

## Action space

``Discrete(len(catalogue))``; ``index = service_index × actions_per_service + act`` — the tables
of the ``classic`` (12 acts per service, 144 actions on the 12 default services) and ``extended``
(21 acts per service + a global no-op, 253 actions) catalogues are in :mod:`envs.actions`.

## Observation space

``Box(float32)`` of length ``3·18 + 2·14 + 8 + S·K + 2`` (S tunable services, K catalogue
knobs; 164 for the default ``classic`` catalogue: S=12, K=6). Channel names in order are
:attr:`MeshEnv.observation_names`. A statistic the run did not produce (an endpoint or service
that saw no request; every measurement on an unhealthy step, when no load ran) is encoded as
0 **with its ``seen`` channel 0**; nothing is invented.

| block | one group per | channel | unit / range |
|---|---|---|---|
| endpoints | Locust request name (18, ``ENDPOINTS``) | ``failure_frac`` | failed / requests, 0..1 |
| | | ``p99_s`` | p99 response time, s, ≥ 0 |
| | | ``seen`` | 1 if it saw ≥ 1 request |
| services | SockShop service (14, ``SERVICE_NAMES``) | ``error_ratio`` | callers' view, 0..1 |
| | HTTP service only (8) | ``p99_s`` | p99 request duration, s, ≥ 0 |
| | | ``seen`` | 1 if it saw ≥ 1 request (connection, for TCP) |
| configuration | tunable service × catalogue knob | value | ``log1p(v)/log1p(ceiling)``, 0..1 |
| load | — | ``users_frac`` | users / max of users_range |
| | — | ``requests_frac`` | requests / (max users × requests_per_user) |

TCP destinations (the databases, rabbitmq) have no p99 channel: Istio reports their traffic as
connections, without request durations.

Configuration channels: ``v`` is the knob's *effective* value (``actions.knob_value``: a count,
milliseconds, or 0/1; an unset field reads as Istio's default, unlimited as INT32_MAX) and
``ceiling`` the top of its range (``actions.knob_range``), so unlimited encodes as 1.0.

## Rewards

With ``score(report) = -18 · (failure % of all requests + latency_weight · traffic-weighted
mean endpoint p99 in latency_unit)`` (:func:`envs.reward.score`, which explains the form: the
notebook's sums over endpoints, made robust to endpoints the load never reached):

| reward_mode | healthy step *t* | unhealthy step *t* |
|---|---|---|
| ``delta`` (the notebook's) | ``score_t - score_{t-1}`` (``score_0``: the reset's run) | penalty |
| ``absolute`` | ``score_t`` | penalty × (episode_len - t + 1) |

(penalty = ``unhealthy_penalty``.)

An unhealthy step charges the penalty once in delta mode (the steps that will not run would
have had no change to report) and once per step that will not run in absolute mode (so ending
an episode early never beats staying healthy at a score above the penalty). The default
penalty, ``-18 × 100`` = -1800, is the failure term of a run where every request fails; it
is a reward, not a measurement: the step's ``info`` has no failure rate or latency.

## Starting state

``reset`` applies the initial configuration (``init``), checks health and runs the episode's
load once; the observation describes that run and ``info["initial_score"]`` its score.

| init | initial configuration |
|---|---|
| ``classic_fixed`` (the notebook's) | the notebook's draw, made once per env, restored at reset |
| ``classic_random`` | the same draw, made anew at each reset from the episode's generator |
| ``istio_default`` | no DestinationRules (Istio's defaults everywhere) |

The notebook's draw (``actions.classic_initial_config``): each of the six classic knobs of each
service uniform in 1..``init_upper``. For ``classic_fixed`` it comes from ``env_config["seed"]``
and the worker index (see Seeding).

A drawn configuration that fails the health check is drawn again (as the notebook did), at most
:data:`MAX_INIT_DRAWS` times; Istio's defaults failing it, or the fixed configuration failing at
a later reset, is a :class:`~envs.backends.base.BackendError`.

Load (``load_draw``): ``users`` uniform in ``users_range`` (inclusive), ``requests =
requests_per_user × users`` (the notebook: 10..20 users, 80 requests each); drawn once per env
(``per_env``, the notebook's) or at every reset (``per_episode``), constant within an episode.

Load seed (``load_seed``): the seed of the backend's load generator (the simulator's random
draws; Locust's user behaviour on ``local``). ``per_run`` (default): a new one for every run,
from the episode's generator. ``per_episode``: one per episode, drawn at reset, so the reset's
run and every step replay the same load — common random numbers: a step's reward is then what
its action changed rather than run-to-run noise (on the simulator an action that changes
nothing gets exactly 0, where ``per_run`` gives it ~±30 points and hundreds when the front-end
crashes). On a real mesh only the request sequence repeats, not the timing.

## Episode end

* terminated: the health check after an action failed (the mesh no longer serves);
* truncated: ``episode_len`` steps were taken (seed: 20).

## Info (``reset`` and every ``step``)

| key | meaning |
|---|---|
| ``healthy`` | the health check passed and the load ran (False only on a terminating step) |
| ``failure_pct`` | failed / all requests of the run, %, request-weighted over endpoints |
| ``p99_ms`` | the largest endpoint p99 of the run, ms |
| ``score`` / ``eval_score`` | the run's score: env's weights / ``reward.EVALUATION_WEIGHTS`` |
| ``initial_score`` / ``initial_eval_score`` | the same for the episode's reset run |
| ``users``, ``requests`` | the episode's load |
| ``action_desc`` | the action taken (``carts: tcp.maxConnections +20``) or the reset |
| ``step``, ``replica`` | steps taken in the episode (0 at reset), the leased replica |

On an unhealthy step no load ran: ``failure_pct``, ``p99_ms``, ``score`` and ``eval_score`` are
None.

## Configuration (``env_config``; defaults in :data:`DEFAULT_ENV_CONFIG`, other keys rejected)

| key | default | meaning |
|---|---|---|
| ``backend`` | ``"sim"`` | backend name (``envs.backends.BACKENDS``) |
| ``backend_kwargs`` | ``{}`` | keyword arguments of the backend (``replica`` is added by the env) |
| ``replica`` | None | replica index to lease; None leases the lowest free one |
| ``users_range`` | (10, 20) | concurrent users, drawn uniformly, inclusive |
| ``requests_per_user`` | 80 | requests of a run = this × users |
| ``load_draw`` | ``"per_env"`` | ``per_env`` or ``per_episode`` |
| ``load_seed`` | ``"per_run"`` | ``per_run`` or ``per_episode`` (see Load) |
| ``latency_weight`` | 0.1 | score points per ``latency_unit`` of one endpoint's p99 |
| ``latency_unit`` | ``"ms"`` | ``ms`` or ``s`` (the notebook: weight 10 000 per ``s``) |
| ``reward_mode`` | ``"delta"`` | ``delta`` or ``absolute`` |
| ``episode_len`` | 20 | steps before truncation |
| ``catalogue`` | ``"classic"`` | ``classic`` or ``extended`` (:mod:`envs.actions`) |
| ``services`` | None | tunable services; None: ``actions.TUNABLE_SERVICES`` |
| ``init`` | ``"classic_fixed"`` | ``classic_fixed``, ``classic_random`` or ``istio_default`` |
| ``init_upper`` | 100 | upper bound of the notebook's initial draw |
| ``seed`` | 0 | seeds the per-env draws (with the worker index) |
| ``unhealthy_penalty`` | -1800.0 | reward of an unhealthy step (see Rewards); <= 0 |

The default latency weight is the evaluation weight (:data:`envs.reward.EVALUATION_WEIGHTS`):
one failure percentage point of an endpoint is worth 10 ms of its p99.

## Seeding

``env_config["seed"]``, the RLlib worker index and the env's index among the envs built from
the same ``EnvContext`` (RLlib's vectorised runners; 0 for a plain dict) seed what is drawn once
per env, so sub-envs of one runner differ and every run builds the same envs.
``reset(seed=s)`` seeds the episode's generator, from which each run's load seed (and the
per-episode draws) come; the same ``s`` gives the same episode on the simulator. The first
``reset()`` without a seed uses one derived from the same three numbers.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.actions import (
    ActionCatalogue,
    MeshConfig,
    classic_initial_config,
    istio_default_config,
    knob_range,
    knob_value,
    make_catalogue,
)
from envs.backends import BACKENDS, make_backend
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.lease import ReplicaLease, acquire_replica
from envs.backends.report import LoadReport
from envs.istio import DestinationRule, rules_for
from envs.measure import apply_config, max_p99_ms, run_checked
from envs.reward import N_ENDPOINTS, RewardWeights, evaluation_score, score
from envs.sockshop import HATCH_RATE_PER_S, SERVICE_NAMES, SERVICES, Protocol, endpoint_names

#: The id the env is registered under, with RLlib and with gymnasium.
ENV_NAME = "meshtune/MeshEnv-v0"
#: How many random initial configurations are drawn before giving up on a healthy one.
MAX_INIT_DRAWS = 20
#: Locust request names, in observation order.
ENDPOINTS: tuple[str, ...] = endpoint_names()
#: Services whose traffic the mesh sees as HTTP: the only ones with a request-duration p99.
HTTP_SERVICES: frozenset[str] = frozenset(
    s.name for s in SERVICES if s.protocol is Protocol.HTTP)
#: The failure term of a run where every request fails (see module doc).
DEFAULT_UNHEALTHY_PENALTY = -100.0 * N_ENDPOINTS

REWARD_MODES = ("delta", "absolute")
LOAD_DRAWS = ("per_env", "per_episode")
LOAD_SEEDS = ("per_run", "per_episode")
INIT_MODES = ("classic_fixed", "classic_random", "istio_default")

#: Every env_config key and its default. Keys not listed here are rejected.
DEFAULT_ENV_CONFIG: dict[str, Any] = {
    "backend": "sim",
    "backend_kwargs": {},
    "replica": None,
    "users_range": (10, 20),
    "requests_per_user": 80,
    "load_draw": "per_env",
    "load_seed": "per_run",
    "latency_weight": 0.1,
    "latency_unit": "ms",
    "reward_mode": "delta",
    "episode_len": 20,
    "catalogue": "classic",
    "services": None,
    "init": "classic_fixed",
    "init_upper": 100,
    "seed": 0,
    "unhealthy_penalty": DEFAULT_UNHEALTHY_PENALTY,
}


def _int(config: Mapping[str, Any], key: str, low: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"env_config[{key!r}] must be an int >= {low}, got {value!r}")
    return int(value)


def _choice(config: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = config[key]
    if value not in choices:
        raise ValueError(f"env_config[{key!r}] must be one of {choices}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class EnvSettings:
    """``env_config`` after validation (see :data:`DEFAULT_ENV_CONFIG` and the module doc)."""

    backend: str
    backend_kwargs: dict[str, Any]
    replica: int | None
    users_range: tuple[int, int]
    requests_per_user: int
    load_draw: str
    load_seed: str
    weights: RewardWeights
    reward_mode: str
    episode_len: int
    catalogue: str
    services: tuple[str, ...] | None
    init: str
    init_upper: int
    seed: int
    unhealthy_penalty: float

    @classmethod
    def from_config(cls, env_config: Mapping[str, Any] | None) -> EnvSettings:
        """Validate ``env_config`` (unknown keys and bad values raise ValueError naming them)."""
        given = dict(env_config or {})
        unknown = sorted(set(given) - set(DEFAULT_ENV_CONFIG))
        if unknown:
            raise ValueError(f"unknown env_config key(s) {unknown}; "
                             f"known keys: {sorted(DEFAULT_ENV_CONFIG)}")
        c = {**DEFAULT_ENV_CONFIG, **given}
        if c["backend"] not in BACKENDS:
            raise ValueError(f"env_config['backend']: unknown backend {c['backend']!r}; "
                             f"known: {sorted(BACKENDS)}")
        if not isinstance(c["backend_kwargs"], Mapping):
            raise ValueError(f"env_config['backend_kwargs'] must be a mapping, "
                             f"got {c['backend_kwargs']!r}")
        if "replica" in c["backend_kwargs"]:
            raise ValueError("env_config['backend_kwargs'] must not set 'replica': the env "
                             "passes its leased replica; use env_config['replica']")
        replica = None if c["replica"] is None else _int(c, "replica", 0)
        users = c["users_range"]
        if (not isinstance(users, Sequence) or isinstance(users, str) or len(users) != 2
                or not all(isinstance(u, int | np.integer) and not isinstance(u, bool)
                           for u in users)
                or not 1 <= users[0] <= users[1]):
            raise ValueError("env_config['users_range'] must be two ints (low, high) with "
                             f"1 <= low <= high, got {users!r}")
        services = c["services"]
        if services is not None:
            if isinstance(services, str) or not isinstance(services, Sequence):
                raise ValueError(f"env_config['services'] must be a list of service names or "
                                 f"None, got {services!r}")
            services = tuple(services)
        penalty = c["unhealthy_penalty"]
        if (isinstance(penalty, bool) or not isinstance(penalty, int | float)
                or not math.isfinite(penalty) or penalty > 0):
            raise ValueError(f"env_config['unhealthy_penalty'] must be a finite number <= 0, "
                             f"got {penalty!r}")
        try:
            weights = RewardWeights(c["latency_weight"], c["latency_unit"])
        except ValueError as e:
            raise ValueError(f"env_config latency_weight/latency_unit: {e}") from None
        return cls(
            backend=str(c["backend"]),
            backend_kwargs=dict(c["backend_kwargs"]),
            replica=replica,
            users_range=(int(users[0]), int(users[1])),
            requests_per_user=_int(c, "requests_per_user", 1),
            load_draw=_choice(c, "load_draw", LOAD_DRAWS),
            load_seed=_choice(c, "load_seed", LOAD_SEEDS),
            weights=weights,
            reward_mode=_choice(c, "reward_mode", REWARD_MODES),
            episode_len=_int(c, "episode_len", 1),
            catalogue=str(c["catalogue"]),
            services=services,
            init=_choice(c, "init", INIT_MODES),
            init_upper=_int(c, "init_upper", 1),
            seed=_int(c, "seed", 0),
            unhealthy_penalty=float(penalty),
        )


class ObservationEncoder:
    """Turns a run (report, configuration, load) into the observation vector (module doc table).

    Attributes:
        names: the channel names, in vector order.
        space: the matching ``gymnasium.spaces.Box``.
    """

    def __init__(self, catalogue: ActionCatalogue, max_users: int, max_requests: int) -> None:
        self.catalogue = catalogue
        self.max_users = max_users
        self.max_requests = max_requests
        names: list[str] = []
        low: list[float] = []
        high: list[float] = []

        def add(name: str, lo: float, hi: float) -> None:
            names.append(name)
            low.append(lo)
            high.append(hi)

        for e in ENDPOINTS:
            add(f"endpoint/{e}/failure_frac", 0.0, 1.0)
            add(f"endpoint/{e}/p99_s", 0.0, np.inf)
            add(f"endpoint/{e}/seen", 0.0, 1.0)
        for s in SERVICE_NAMES:
            add(f"service/{s}/error_ratio", 0.0, 1.0)
            if s in HTTP_SERVICES:
                add(f"service/{s}/p99_s", 0.0, np.inf)
            add(f"service/{s}/seen", 0.0, 1.0)
        for s in catalogue.services:
            for k in catalogue.knobs:
                add(f"config/{s}/{k.value}", 0.0, 1.0)
        add("load/users_frac", 0.0, 1.0)
        add("load/requests_frac", 0.0, 1.0)
        self.names: tuple[str, ...] = tuple(names)
        self.space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32),
                                    dtype=np.float32)
        self._log_ceiling = {k: math.log1p(knob_range(k)[1]) for k in catalogue.knobs}

    def encode(self, report: LoadReport | None, config: MeshConfig, users: int,
               requests: int) -> np.ndarray:
        """The observation; ``report`` None means no load ran (every ``seen`` channel 0).

        Raises:
            BackendError: the report names an endpoint or service SockShop does not have.
        """
        values: list[float] = []
        if report is not None:
            strange = sorted(set(report.endpoints) - set(ENDPOINTS))
            strange += sorted(set(report.services) - set(SERVICE_NAMES))
            if strange:
                raise BackendError(f"{report.backend or 'backend'} report has unknown "
                                   f"endpoints/services {strange}")
        for name in ENDPOINTS:
            e = report.endpoints.get(name) if report is not None else None
            if e is None or e.num_requests == 0:
                values += [0.0, 0.0, 0.0]
            else:
                if e.p99_ms is None:
                    raise BackendError(f"endpoint {name!r} saw {e.num_requests} requests but "
                                       "has no p99")
                values += [e.num_failures / e.num_requests, e.p99_ms / 1000.0, 1.0]
        for name in SERVICE_NAMES:
            s = report.services.get(name) if report is not None else None
            http = name in HTTP_SERVICES
            if s is None or s.num_requests == 0:
                values += [0.0, 0.0, 0.0] if http else [0.0, 0.0]
            elif http:
                if s.p99_ms is None:
                    raise BackendError(f"service {name!r} saw {s.num_requests} requests but "
                                       "has no p99")
                values += [s.error_ratio, s.p99_ms / 1000.0, 1.0]
            else:
                values += [s.error_ratio, 1.0]
        for service in self.catalogue.services:
            pool = config.get(service)
            for k in self.catalogue.knobs:
                values.append(math.log1p(knob_value(pool, k)) / self._log_ceiling[k])
        values += [users / self.max_users, requests / self.max_requests]
        return np.asarray(values, dtype=np.float32)


_envs_built_from: dict[int, int] = {}


def _next_env_index(env_config: object) -> int:
    """How many envs this process built before from this very ``env_config`` object.

    RLlib builds all envs of one runner from one ``EnvContext`` object (same worker index), so
    this tells them apart, deterministically (creation order). A plain dict is not tracked
    (it cannot be weakly referenced): 0.
    """
    key = id(env_config)
    if key not in _envs_built_from:
        try:
            weakref.finalize(env_config, _envs_built_from.pop, key, None)
        except TypeError:
            return 0
        _envs_built_from[key] = 0
    index = _envs_built_from[key]
    _envs_built_from[key] = index + 1
    return index


class MeshEnv(gym.Env):
    """Tune SockShop's DestinationRule connection pools on one leased mesh replica.

    See the module docstring for the observation, action, reward, start and end tables and
    :data:`DEFAULT_ENV_CONFIG` for the configuration keys.

    Args:
        env_config: a plain dict or RLlib's ``EnvContext`` (its ``worker_index`` seeds the
            per-env draws together with ``env_config["seed"]``; see Seeding).

    Raises:
        ValueError: an unknown key or bad value in ``env_config`` (named in the message).
        envs.backends.lease.ReplicaTakenError: the requested replica is leased by another env.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, env_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = EnvSettings.from_config(env_config)
        s = self.settings
        self.worker_index = int(getattr(env_config, "worker_index", 0) or 0)
        self.env_index = _next_env_index(env_config)
        try:
            self.catalogue = make_catalogue(s.catalogue, s.services)  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:
            raise ValueError(f"env_config catalogue/services: {e}") from None
        max_users = s.users_range[1]
        self._encoder = ObservationEncoder(self.catalogue, max_users,
                                           max_users * s.requests_per_user)
        self.action_space = gym.spaces.Discrete(len(self.catalogue))
        self.observation_space = self._encoder.space
        # Per-env draws, each from its own stream of (seed, worker, env index): the per-env load,
        # the fixed initial configuration, the seed of a first reset() called without one.
        users_seq, init_seq, episode_seq = np.random.SeedSequence(
            [s.seed, self.worker_index, self.env_index]).spawn(3)
        self._users = int(np.random.default_rng(users_seq).integers(
            s.users_range[0], s.users_range[1], endpoint=True))
        self._init_rng = np.random.default_rng(init_seq)
        self._default_episode_seed = int(episode_seq.generate_state(1)[0])
        self._fixed_init: MeshConfig | None = None
        self._episode_load_seed = 0
        self._config: MeshConfig = {}
        self._episode_initial: MeshConfig = {}
        self._t = 0
        self._episode_over = True
        self._prev_score = 0.0
        self._initial_score = 0.0
        self._initial_eval_score = 0.0
        self.last_report: LoadReport | None = None
        self._closed = False
        self._backend: Backend | None = None
        self._lease: ReplicaLease = acquire_replica(
            s.replica, label=f"MeshEnv {self.env_index} on worker {self.worker_index}")
        try:
            self._backend = make_backend(s.backend, replica=self._lease.replica,
                                         **s.backend_kwargs)
        except BaseException:
            self._lease.release()
            raise

    # ----------------------------------------------------------------- public properties

    @property
    def replica(self) -> int:
        """The replica index this env leased (passed to the backend as ``replica=K``)."""
        return self._lease.replica

    @property
    def backend(self) -> Backend:
        """The backend driving this env's replica."""
        if self._backend is None:
            raise RuntimeError("MeshEnv is closed")
        return self._backend

    @property
    def observation_names(self) -> tuple[str, ...]:
        """The name of every observation channel, in vector order."""
        return self._encoder.names

    @property
    def users(self) -> int:
        """Concurrent users of the current episode's load."""
        return self._users

    @property
    def requests(self) -> int:
        """Total requests of the current episode's load."""
        return self._users * self.settings.requests_per_user

    @property
    def config(self) -> MeshConfig:
        """The configuration applied now (service → pool); a copy."""
        return dict(self._config)

    @property
    def initial_config(self) -> MeshConfig:
        """The configuration the current episode started from (service → pool); a copy."""
        return dict(self._episode_initial)

    @property
    def load_spec(self) -> LoadSpec:
        """The load every run of the current episode drives through the mesh."""
        return self._load_spec()

    def current_rules(self) -> list[DestinationRule]:
        """The DestinationRules the env has applied now."""
        return rules_for(self._config)

    # ----------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Restore the initial configuration, run the load once, observe it (module doc)."""
        if self._closed:
            raise RuntimeError("MeshEnv is closed")
        if options:
            raise ValueError(f"MeshEnv.reset takes no options, got {sorted(options)}")
        if seed is None and self._np_random is None:
            seed = self._default_episode_seed
        super().reset(seed=seed)
        self._episode_over = True  # until the initial run below succeeds
        s = self.settings
        if s.load_draw == "per_episode":
            self._users = int(self.np_random.integers(s.users_range[0], s.users_range[1],
                                                      endpoint=True))
        self._config = self._initial_config()
        self._episode_initial = dict(self._config)
        if s.load_seed == "per_episode":
            self._episode_load_seed = self._draw_load_seed()
        report = self._run_load()
        self._t = 0
        self._episode_over = False
        self._prev_score = score(report, s.weights)
        self._initial_score = self._prev_score
        self._initial_eval_score = evaluation_score(report)
        info = self._info(report, f"reset to the {s.init} initial configuration")
        return self._encoder.encode(report, self._config, self.users, self.requests), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply catalogue action ``action``, check health, run the load, score it."""
        if self._closed:
            raise RuntimeError("MeshEnv is closed")
        if self._episode_over:
            raise RuntimeError("the episode is over (or never started): call reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        s = self.settings
        desc = self.catalogue.describe(int(action))
        new_config = self.catalogue.apply(int(action), self._config)
        healthy = apply_config(self.backend, new_config)  # a failed apply keeps the old config
        self._config = new_config
        self._t += 1
        truncated = self._t >= s.episode_len
        if not healthy:
            self._episode_over = True
            self.last_report = None
            remaining = s.episode_len - self._t + 1
            reward = s.unhealthy_penalty * (remaining if s.reward_mode == "absolute" else 1)
            obs = self._encoder.encode(None, self._config, self.users, self.requests)
            return obs, float(reward), True, truncated, self._info(None, desc)
        report = run_checked(self.backend, self._load_spec(), self._load_seed())
        self.last_report = report
        new_score = score(report, s.weights)
        reward = new_score - self._prev_score if s.reward_mode == "delta" else new_score
        self._prev_score = new_score
        self._episode_over = truncated
        obs = self._encoder.encode(report, self._config, self.users, self.requests)
        return obs, float(reward), False, truncated, self._info(report, desc)

    def close(self) -> None:
        """Close the backend (which restores the mesh) and release the replica. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._backend is not None:
                self._backend.close()
        finally:
            self._backend = None
            self._lease.release()

    # ----------------------------------------------------------------------- internals

    def _load_spec(self) -> LoadSpec:
        return LoadSpec(users=self.users, requests=self.requests,
                        hatch_rate_per_s=HATCH_RATE_PER_S)

    def _draw_load_seed(self) -> int:
        return int(self.np_random.integers(0, 2**31 - 1))

    def _load_seed(self) -> int:
        """The next run's load seed: a fresh draw from the episode's generator (``per_run``) or
        the one drawn at reset (``per_episode``, common random numbers; module doc, Load)."""
        if self.settings.load_seed == "per_episode":
            return self._episode_load_seed
        return self._draw_load_seed()

    def _draw_healthy(self, rng: np.random.Generator) -> MeshConfig:
        """The notebook's random initial configuration, redrawn until the mesh passes the check."""
        s = self.settings
        for _ in range(MAX_INIT_DRAWS):
            config = classic_initial_config(rng, self.catalogue.services, s.init_upper)
            if apply_config(self.backend, config):
                return config
        raise BackendError(f"{MAX_INIT_DRAWS} random initial configurations (knobs in "
                           f"1..{s.init_upper}) all failed the health check")

    def _initial_config(self) -> MeshConfig:
        """Apply and return the episode's initial configuration (module doc, Starting state)."""
        s = self.settings
        if s.init == "istio_default":
            config = istio_default_config()
            if not apply_config(self.backend, config):
                raise BackendError("the mesh fails the health check with Istio's defaults")
            return config
        if s.init == "classic_random":
            return self._draw_healthy(self.np_random)
        if self._fixed_init is None:
            self._fixed_init = self._draw_healthy(self._init_rng)
            return dict(self._fixed_init)
        if not apply_config(self.backend, self._fixed_init):
            raise BackendError("the fixed initial configuration no longer passes the health "
                               "check")
        return dict(self._fixed_init)

    def _run_load(self) -> LoadReport:
        report = run_checked(self.backend, self._load_spec(), self._load_seed())
        self.last_report = report
        return report

    def _info(self, report: LoadReport | None, action_desc: str) -> dict[str, Any]:
        """The step's info (keys in env_contract.md). Measurements are None when no load ran."""
        measured = report is not None
        return {
            "healthy": measured,
            "failure_pct": report.failure_pct if measured else None,
            "p99_ms": max_p99_ms(report) if measured else None,
            "score": score(report, self.settings.weights) if measured else None,
            "eval_score": evaluation_score(report) if measured else None,
            "initial_score": self._initial_score,
            "initial_eval_score": self._initial_eval_score,
            "users": self.users,
            "requests": self.requests,
            "action_desc": action_desc,
            "step": self._t,
            "replica": self.replica,
        }


def _make(env_config: Mapping[str, Any] | None) -> MeshEnv:
    return MeshEnv(env_config)


def register() -> None:
    """Register :data:`ENV_NAME` with RLlib's env registry and with gymnasium. Idempotent."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, _make)
    if ENV_NAME not in gym.registry:
        gym.register(id=ENV_NAME, entry_point="envs.mesh_env:MeshEnv")


__all__ = ["DEFAULT_ENV_CONFIG", "DEFAULT_UNHEALTHY_PENALTY", "ENDPOINTS", "ENV_NAME",
           "MAX_INIT_DRAWS", "EnvSettings", "MeshEnv", "ObservationEncoder", "register"]
