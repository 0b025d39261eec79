"""``MeshEnv``, the Gymnasium env that tunes SockShop's Istio connection pools one knob step at a
time on one leased mesh replica, and its registration (:func:`register`). Its specification is
the class docstring (``help(MeshEnv)``); its parts are in :mod:`envs.settings`,
:mod:`envs.actions`, :mod:`envs.observation`, :mod:`envs.reward` and :mod:`envs.measure`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.actions import MeshConfig, classic_initial_config, istio_default_config, make_catalogue
from envs.backends import make_backend
from envs.backends.base import Backend, BackendError, LoadSpec
from envs.backends.lease import ReplicaLease, acquire_replica
from envs.backends.report import LoadReport
from envs.istio import DestinationRule, rules_for
from envs.measure import apply_config, max_p99_ms, run_checked
from envs.observation import ObservationEncoder, ratio_scale
from envs.reward import StepReward
from envs.scenarios import Scenario, draw
from envs.settings import EnvSettings, next_env_index
from envs.sockshop import HATCH_RATE_PER_S
from envs.sockshop.slo import NOMINAL_RATE_RPS

#: The id the env is registered under, with RLlib and with gymnasium.
ENV_NAME = "meshtune/MeshEnv-v1"
#: How many random initial configurations are drawn before giving up on a healthy one.
MAX_INIT_DRAWS = 20


def random_state_key(rng: np.random.Generator) -> int:
    """A 63-bit fingerprint of ``rng``'s state (stable across processes; equal states, equal
    keys): identifies which random draws an episode will make."""
    digest = hashlib.sha256(repr(rng.bit_generator.state).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class MeshEnv(gym.Env):
    """Tune SockShop's DestinationRule connection pools on one leased mesh replica, through a
    scenario of changing load and faults, for the requests users get served within their SLO.

    ## Description

    Through the :class:`~envs.backends.base.Backend` interface only (backend ``sim``, ``local``
    or ``k8s``, by name), on a replica it leases (:mod:`envs.backends.lease`), a step applies
    one catalogue action to the configuration, checks the front-end answers (the notebook's
    ``check_fail``), drives the step's load through the mesh and scores the report. Under the
    default open load an episode is a **scenario** (:mod:`envs.scenarios`): per run an offered
    rate (Poisson session arrivals) and the faults active then (a service down, a service
    slowed ×k), and a starting configuration; the load does not depend on the configuration,
    so serving less cannot score better. ``load="classic"`` is the notebook's closed loop.

    ## Action Space

    ``Discrete(len(catalogue))``, ``index = service_index × actions_per_service + act``:
    ``ladder`` (default: each of six knobs one rung up or down its ladder, 12 acts per service,
    on the 12 request-path services and the front-end's gateway pool, + a global no-op: 157),
    ``setpoint`` (each of the six knobs set to any rung of its ladder in one action, 42 acts per
    service on the same 13 services + a global no-op: 547; what ``experiments/pg_sweep.py``
    trains with), ``setpoint_restore`` (``setpoint``'s blocks, then a global restore of Istio's
    defaults on every tuned service and the no-op: 548), ``setpoint_reset`` (``setpoint``'s
    acts plus a 43rd per service that resets that service to Istio's defaults, + the no-op:
    560), ``classic`` (the notebook's additive
    steps, 144 on the 12 default services) or ``extended`` (21 per service + a global no-op,
    253); the tables are in :mod:`envs.actions`.

    ## Observation Space

    ``Box(0, 1, float32)``, named in :attr:`observation_names` (:mod:`envs.observation`): a
    global context (load level, progress, the run as users felt it, per endpoint failures and
    p99, the untuned services) and one equal-length block per tuned service (:attr:`
    service_slices`): what its callers saw — errors, latency, the **causes** (``UO`` pool
    overflow, ``UF`` connect failure, ``UT`` timeout, resets, retries, ``URX`` retries
    exhausted, retries skipped by the budget) and the **demand** (requests in flight per pool
    against ``maxConnections``, the queue and ``http2MaxRequests``) — and its configuration
    (``log1p(v)/log1p(ceiling)``). A statistic the run did not produce is 0 with its ``seen``
    channel 0.

    ## Rewards

    The objective (``objective``, :mod:`envs.reward`): ``slo`` (default), ``score = -100 ·
    (failed + abandoned + late_weight · late) / offered`` — the share of offered requests not
    served within their endpoint's SLO (:mod:`envs.sockshop.slo`); ``classic``, the notebook's
    ``-18 · (failure % + latency_weight · traffic-weighted mean endpoint p99 in latency_unit)``.
    Per step (:class:`~envs.reward.StepReward`; penalty: ``unhealthy_penalty``, default the
    objective's worst score: -100, or -1800 for ``classic``):

    | reward_mode | healthy step *t* | unhealthy step *t* |
    |---|---|---|
    | ``delta`` (the notebook's) | ``score_t - score_{t-1}`` (``score_0``: reset's run) | penalty |
    | ``absolute`` | ``score_t`` | penalty × (episode_len - t + 1) |
    | ``vs_keep`` | ``score_t - keep_t`` (``- change_cost`` if the rules changed) | penalty |

    ``keep_t``: the same run (same load, same load seed) under the configuration before the
    step's action, which the env runs as well (one more run per step that changed the
    configuration; 0 if it changed nothing): what the action did, with the load, the faults and
    earlier actions cancelled (meant for the simulator, where it is exact). ``change_cost``
    (score points, default 0) is charged for a step whose action changed the rules: a change
    must earn more than that against not acting.

    ## Scenarios

    ``scenarios="training"`` (default) draws each episode's scenario from the training families,
    each with weight 1 (``overload`` 2): ``steady`` (0.5–1.75 × the nominal 60 req/s),
    ``ramp``, ``step_up`` / ``step_down`` (×2–×3 at a random step), ``diurnal`` (one period),
    ``fault_down`` (carts-db, orders or payment down), ``fault_slow`` (catalogue, orders or
    payment ×4–×10 slower), ``shift_fault`` (a load shift and a fault) and ``overload``
    (1.8–3 ×). ``scenarios="held_out"`` — for evaluation only — draws from families training
    never sees: ``step_up_x4`` / ``step_down_x4`` (×3.5–×4.5), ``diurnal_2p`` (two periods),
    ``fault_down_unseen`` (carts, orders-db or shipping down), ``fault_slow_unseen`` (carts,
    user or shipping slowed) and ``shift_fault_unseen``. Faults last 2–6 runs. The start is
    ``istio_default``, ``classic_random`` or ``tuned``, with equal odds. Every range and the
    rules that keep the two apart: :mod:`envs.scenarios`.

    ## Starting State

    ``reset`` draws the scenario (``scenarios``: the set ``training`` or ``held_out``, a YAML
    file or a list; ``reset(options={"scenario": s})`` plays ``s``), applies the initial
    configuration, checks health and runs the scenario's first load. The start is ``init`` if
    given, else the scenario's (open load) or ``classic_fixed`` (classic load):
    ``classic_fixed`` (the notebook's: the six classic knobs of each service uniform in
    1..``init_upper``, drawn once per env), ``classic_random`` (drawn at each reset; a draw
    failing the health check is redrawn, at most :data:`MAX_INIT_DRAWS` times),
    ``istio_default`` (no rules) or ``tuned`` (``tuned_config``, default the shipped TPE-201
    static configuration, ``envs/data/tuned_static.yaml``); a fixed start failing the
    health check raises :class:`~envs.backends.base.BackendError`. Run *t* of the open load
    offers ``rate_t × step_s`` requests at ``rate_t``; the classic load is users uniform in
    ``users_range`` × ``requests_per_user``, drawn ``per_env`` or ``per_episode``
    (``load_draw``). ``faults`` are added to every run, not to the health check; ``load_seed``
    ``per_run`` (new every run) or ``per_episode`` (common random numbers within an episode).

    ## Episode End

    Terminated: the health check after an action failed. Truncated: ``episode_len`` steps.

    ## Info

    ``healthy``, ``good_pct`` (% of offered requests served within SLO), ``goodput_rps``,
    ``failure_pct`` (%), ``abandoned``, ``latency_mean_ms`` / ``latency_p99_ms`` (all requests),
    ``p99_ms`` (largest endpoint p99), ``score`` / ``eval_score`` (the objective's / its fixed
    evaluation: :func:`envs.reward.evaluation_score` for ``slo``), ``initial_score`` /
    ``initial_eval_score``, ``scenario``, ``rate_rps``, ``users``, ``requests``,
    ``action_desc``, ``step``, ``episode_len``, ``eval_worst`` (the objective's worst score),
    ``replica``; measurements None if no run. The reset's info also has ``episode_key``: a
    fingerprint (int) of the episode's random state when it started (the generator that draws
    its scenario, start and load seed), equal for two envs reset with the same seed — how a
    learner recognises episodes that replay the same scenario (``rl.connectors``).

    ## Arguments

    ``env_config``, a dict or ``EnvContext`` (:data:`envs.settings.DEFAULT_ENV_CONFIG`;
    :func:`envs.settings.classic_env_config` is the notebook's setup):

    | key | default | meaning |
    |---|---|---|
    | ``backend`` / ``backend_kwargs`` | ``"sim"`` / ``{}`` | backend name and its kwargs |
    | ``replica`` | None | replica to lease (None: lowest free; taken: ``ReplicaTakenError``) |
    | ``load`` | ``"open"`` | ``open`` (scenarios) or ``classic`` (the notebook's closed loop) |
    | ``scenarios`` / ``step_s`` | ``"training"`` / 10.0 | open load: scenarios, s per run |
    | ``users_range`` / ``requests_per_user`` | (10, 20) / 80 | classic load |
    | ``load_draw`` / ``load_seed`` | ``per_env`` / ``per_run`` | see Starting State |
    | ``faults`` | () | ``ServiceDown`` / ``LatencySpike`` added to every run's ``LoadSpec`` |
    | ``objective`` / ``late_weight`` | ``"slo"`` / 1.0 | see Rewards (late_weight in [0, 1]) |
    | ``latency_weight`` / ``latency_unit`` | 0.1 / ``"ms"`` | classic objective's weight |
    | ``reward_mode`` / ``unhealthy_penalty`` | ``delta`` / None | see Rewards (<= 0) |
    | ``change_cost`` | 0.0 | ``vs_keep``: score points per change of the rules (>= 0) |
    | ``episode_len`` | 20 | steps before truncation |
    | ``catalogue`` / ``services`` | ``ladder`` / None | None: the catalogue's own services |
    | ``init`` / ``init_upper`` / ``tuned_config`` | None / 100 / None | see Starting State |
    | ``seed`` | 0 | seeds the per-env draws (Seeding) |

    ## Seeding

    ``seed``, the RLlib worker index and the env's index in its ``EnvContext``
    (:func:`envs.settings.next_env_index`) seed the per-env draws and a first unseeded
    ``reset()``; ``reset(seed=s)`` seeds the episode (its scenario, start and load seeds): the
    same ``s``, the same episode (sim).

    ## Version History

    * v1 (added, defaults unchanged): ``reward_mode="vs_keep"``; ``change_cost``.
    * v1: the open, scenario-driven load, the SLO objective, the cause/demand observation (all
      in [0, 1]) and the ``ladder`` catalogue (front-end included) became the defaults; the v0
      behaviour is ``classic_env_config()`` (closed loop, the notebook's score, ``classic``
      catalogue), with the v1 observation.
    * v0: closed loop and the notebook-style score. Added during v0, defaults keeping earlier
      episodes: ``load_seed`` (``per_run``), ``faults``. Renamed: ``seed_fixed`` /
      ``seed_random`` / catalogue ``seed`` became ``classic_*``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, env_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = EnvSettings.from_config(env_config)
        s = self.settings
        self.worker_index = int(getattr(env_config, "worker_index", 0) or 0)
        self.env_index = next_env_index(env_config)
        try:
            self.catalogue = make_catalogue(s.catalogue, s.services)  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:
            raise ValueError(f"env_config catalogue/services: {e}") from None
        self._encoder = ObservationEncoder(self.catalogue, s.episode_len)
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
        self._scenario: Scenario | None = None
        self._reward = StepReward(s.reward_mode, s.objective, s.unhealthy_penalty, s.episode_len,
                                  s.change_cost)
        self._initial_score = self._initial_eval_score = 0.0
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
    def service_slices(self) -> tuple[tuple[int, ...], ...]:
        """Per catalogue service, the observation indices of its own block (equal lengths)."""
        return self._encoder.service_slices

    @property
    def global_indices(self) -> tuple[int, ...]:
        """The observation indices of the context shared by every service."""
        return self._encoder.global_indices

    @property
    def users(self) -> int:
        """Concurrent users of the current episode's load (classic load; 0 under the open one)."""
        return self._users if self.settings.load == "classic" else 0

    @property
    def requests(self) -> int:
        """Requests of the current run's load (the next run's after a step)."""
        return self._load_spec().requests

    @property
    def scenario(self) -> Scenario | None:
        """The current episode's scenario (None under the classic load)."""
        return self._scenario

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
        """The load of the current step's run (the reset's before the first step)."""
        return self._load_spec()

    def current_rules(self) -> list[DestinationRule]:
        """The DestinationRules the env has applied now."""
        return rules_for(self._config)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw its scenario (open load), apply the initial configuration, run
        the load once, observe it (Starting State). ``options={"scenario": Scenario}`` plays
        that scenario instead of a draw (evaluation)."""
        if self._closed:
            raise RuntimeError("MeshEnv is closed")
        options = dict(options or {})
        pinned = options.pop("scenario", None)
        if options:
            raise ValueError(f"MeshEnv.reset takes only the option 'scenario', got "
                             f"{sorted(options)}")
        if pinned is not None and not isinstance(pinned, Scenario):
            raise ValueError(f"reset option 'scenario' must be an envs.scenarios.Scenario, "
                             f"got {pinned!r}")
        if seed is None and self._np_random is None:
            seed = self._default_episode_seed
        super().reset(seed=seed)
        episode_key = random_state_key(self.np_random)
        self._episode_over = True  # until the initial run below succeeds
        self._t = 0
        s = self.settings
        if s.load == "open":
            self._scenario = self._check_scenario(pinned or self._draw_scenario())
        elif pinned is not None:
            raise ValueError("a scenario needs the open load (env_config['load'] = 'open')")
        if s.load_draw == "per_episode":
            self._users = int(self.np_random.integers(s.users_range[0], s.users_range[1],
                                                      endpoint=True))
        start = self._start_mode()
        self._config = self._initial_config(start)
        self._episode_initial = dict(self._config)
        if s.load_seed == "per_episode":
            self._episode_load_seed = self._load_seed(fresh=True)
        report = self._run_load()
        self._episode_over = False
        self._initial_score = self._reward.reset(report)
        self._initial_eval_score = s.objective.evaluation(report)
        info = self._info(report, f"reset to the {start} initial configuration")
        info["episode_key"] = episode_key
        return self._observe(report), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply catalogue action ``action``, check health, run the load, score it."""
        if self._closed:
            raise RuntimeError("MeshEnv is closed")
        if self._episode_over:
            raise RuntimeError("the episode is over (or never started): call reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        desc = self.catalogue.describe(int(action))
        old_config = self._config
        new_config = self.catalogue.apply(int(action), old_config)
        healthy = apply_config(self.backend, new_config)  # a failed apply keeps the old config
        self._config = new_config
        self._t += 1
        truncated = self._t >= self.settings.episode_len
        if not healthy:
            self._episode_over = True
            self.last_report = None
            reward = self._reward.step(None, self._t)
            return self._observe(None), reward, True, truncated, self._info(None, desc)
        seed = self._load_seed()
        report = self._run_load(seed)
        keep = None
        if self.settings.reward_mode == "vs_keep" and rules_for(old_config) != rules_for(
                new_config):
            keep = self._counterfactual(old_config, new_config, seed)
        reward = self._reward.step(report, self._t, keep)
        self._episode_over = truncated
        return self._observe(report), reward, False, truncated, self._info(report, desc)

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

    def _load_spec(self) -> LoadSpec:
        """The load of run ``self._t`` (0: the reset's): the scenario's step, or the classic
        closed loop; ``env_config["faults"]`` added to its faults."""
        s = self.settings
        if s.load == "classic":
            return LoadSpec(users=self._users, requests=self._users * s.requests_per_user,
                            hatch_rate_per_s=HATCH_RATE_PER_S, faults=s.faults)
        if self._scenario is None:
            raise RuntimeError("no scenario yet: call reset()")
        load = self._scenario.load(self._t, s.step_s)
        if not s.faults:
            return load
        return LoadSpec(users=load.users, requests=load.requests, mode=load.mode,
                        arrival_rate_rps=load.arrival_rate_rps,
                        hatch_rate_per_s=load.hatch_rate_per_s,
                        faults=(*load.faults, *s.faults))

    def _load_level(self) -> float:
        """The offered load in [0, 1]: ``r/(1+r)`` of the rate over the nominal rate (open
        load), or users / the top of ``users_range`` (classic)."""
        s = self.settings
        if s.load == "classic":
            return self._users / s.users_range[1]
        rate = self._load_spec().arrival_rate_rps or 0.0
        return ratio_scale(rate / NOMINAL_RATE_RPS)

    def _observe(self, report: LoadReport | None) -> np.ndarray:
        return self._encoder.encode(report, self._config, self._load_level(), self._t)

    def _draw_scenario(self) -> Scenario:
        """This episode's scenario: a draw from the named set or one of the given list."""
        chosen = self.settings.scenarios
        if isinstance(chosen, str):
            return draw(chosen, self.np_random, self.settings.episode_len)
        return chosen[int(self.np_random.integers(len(chosen)))]

    def _check_scenario(self, scenario: Scenario) -> Scenario:
        need = self.settings.episode_len + 1
        if len(scenario.rates) < need:
            raise ValueError(f"scenario {scenario.name!r} has {len(scenario.rates)} runs; an "
                             f"episode of {self.settings.episode_len} steps needs {need}")
        return scenario

    def _start_mode(self) -> str:
        """The initial-configuration mode: ``init`` if given, else the scenario's start (open
        load) or ``classic_fixed`` (classic load)."""
        s = self.settings
        if s.init is not None or self._scenario is None:
            return s.start
        return self._scenario.start

    def _load_seed(self, fresh: bool = False) -> int:
        """The next run's load seed: a fresh draw from the episode's generator (``per_run``, or
        ``fresh``) or the one drawn at reset (``per_episode``, common random numbers)."""
        if self.settings.load_seed == "per_episode" and not fresh:
            return self._episode_load_seed
        return int(self.np_random.integers(0, 2**31 - 1))

    def _draw_healthy(self, rng: np.random.Generator) -> MeshConfig:
        """The notebook's random initial configuration, redrawn until the mesh passes the check."""
        s = self.settings
        for _ in range(MAX_INIT_DRAWS):
            config = classic_initial_config(rng, self.catalogue.services, s.init_upper)
            if apply_config(self.backend, config):
                return config
        raise BackendError(f"{MAX_INIT_DRAWS} random initial configurations (knobs in "
                           f"1..{s.init_upper}) all failed the health check")

    def _initial_config(self, start: str) -> MeshConfig:
        """Apply and return the episode's initial configuration (class doc, Starting State)."""
        s = self.settings
        if start in ("istio_default", "tuned"):
            config = istio_default_config() if start == "istio_default" else s.tuned()
            if not apply_config(self.backend, config):
                raise BackendError(f"the mesh fails the health check with the {start} "
                                   "configuration")
            return config
        if start == "classic_random":
            return self._draw_healthy(self.np_random)
        if self._fixed_init is None:
            self._fixed_init = self._draw_healthy(self._init_rng)
            return dict(self._fixed_init)
        if not apply_config(self.backend, self._fixed_init):
            raise BackendError("the fixed initial configuration no longer passes the health check")
        return dict(self._fixed_init)

    def _run_load(self, seed: int | None = None) -> LoadReport:
        """This run's load with load seed ``seed`` (None: the next one drawn)."""
        seed = self._load_seed() if seed is None else seed
        report = run_checked(self.backend, self._load_spec(), seed)
        self.last_report = report
        return report

    def _counterfactual(self, old_config: MeshConfig, new_config: MeshConfig,
                        seed: int) -> LoadReport:
        """``vs_keep``'s counterfactual run: this step's load, with load seed ``seed``, under the
        configuration before the action (``old_config``); ``new_config`` is applied again
        afterwards, so the mesh is left as the step left it.

        Raises:
            BackendError: the old configuration fails the health check now (it passed before
                the action; a backend whose health drifts cannot give this reward).
        """
        try:
            if not apply_config(self.backend, old_config):
                raise BackendError("reward_mode 'vs_keep': the configuration before the action "
                                   "no longer passes the health check; the counterfactual run "
                                   "cannot be made")
            return run_checked(self.backend, self._load_spec(), seed)
        finally:
            apply_config(self.backend, new_config)

    def _info(self, report: LoadReport | None, action_desc: str) -> dict[str, Any]:
        """The step's info (class doc, Info). Measurements are None when no load ran."""
        m = report is not None
        objective = self.settings.objective
        measured = m and all(e.num_good is not None for e in report.endpoints.values()
                             if e.num_requests)
        load = self._load_spec()
        return {"healthy": m, "failure_pct": report.failure_pct if m else None,
                "p99_ms": max_p99_ms(report) if m else None,
                "latency_p99_ms": report.latency_p99_ms if m else None,
                "latency_mean_ms": report.latency_mean_ms if m else None,
                "goodput_rps": report.goodput_rps if measured else None,
                "good_pct": report.good_pct if measured else None,
                # a float, like every measurement: a vector env stores each key in one array
                "abandoned": float(report.num_abandoned) if m else None,
                "score": objective.score(report) if m else None,
                "eval_score": objective.evaluation(report) if m else None,
                "initial_score": self._initial_score,
                "initial_eval_score": self._initial_eval_score, "users": self.users,
                "requests": load.requests, "rate_rps": load.arrival_rate_rps,
                "scenario": self._scenario.name if self._scenario is not None else None,
                "action_desc": action_desc, "step": self._t,
                "episode_len": self.settings.episode_len, "eval_worst": objective.worst,
                "replica": self.replica}


def register() -> None:
    """Register :data:`ENV_NAME` with RLlib's env registry and with gymnasium. Idempotent."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, MeshEnv)  # RLlib calls it with an EnvContext
    if ENV_NAME not in gym.registry:
        gym.register(id=ENV_NAME, entry_point="envs.mesh_env:MeshEnv")


__all__ = ["ENV_NAME", "MAX_INIT_DRAWS", "MeshEnv", "register"]
