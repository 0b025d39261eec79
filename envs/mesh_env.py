"""``MeshEnv``, the Gymnasium env that tunes SockShop's Istio connection pools one knob step at a
time on one leased mesh replica, and its registration (:func:`register`). Its specification is
the class docstring (``help(MeshEnv)``); its parts are in :mod:`envs.settings`,
:mod:`envs.actions`, :mod:`envs.observation`, :mod:`envs.reward` and :mod:`envs.measure`.
"""

from __future__ import annotations

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
from envs.observation import ObservationEncoder
from envs.reward import StepReward, evaluation_score, score
from envs.settings import EnvSettings, next_env_index
from envs.sockshop import HATCH_RATE_PER_S

#: The id the env is registered under, with RLlib and with gymnasium.
ENV_NAME = "meshtune/MeshEnv-v0"
#: How many random initial configurations are drawn before giving up on a healthy one.
MAX_INIT_DRAWS = 20


class MeshEnv(gym.Env):
    """Tune SockShop's DestinationRule connection pools on one leased mesh replica.

    ## Description

    Through the :class:`~envs.backends.base.Backend` interface only (backend ``sim``, ``local``
    or ``k8s``, by name), on a replica it leases (:mod:`envs.backends.lease`), a step applies
    one catalogue action to the configuration, checks the front-end answers (the notebook's
    ``check_fail``), drives the episode's load through the mesh and scores the report.

    ## Action Space

    ``Discrete(len(catalogue))``, ``index = service_index × actions_per_service + act``:
    ``classic`` (12 acts per service, 144 actions on the 12 default services) or ``extended``
    (21 per service + a global no-op, 253); the tables are in :mod:`envs.actions`.

    ## Observation Space

    ``Box(float32)``, ``3·18 + 2·14 + 8 + S·K + 2`` channels (S services, K knobs; 164 for
    ``classic``), named in :attr:`observation_names`; a statistic the run did not produce is 0
    **with its ``seen`` channel 0** (:mod:`envs.observation`).

    | block | one group per | channel | unit / range |
    |---|---|---|---|
    | endpoints | Locust request name (18) | ``failure_frac``, ``p99_s``, ``seen`` | 0..1, s, 0/1 |
    | services | SockShop service (14) | ``error_ratio`` (callers' view), ``seen`` | 0..1, 0/1 |
    | | HTTP service only (8) | ``p99_s`` (TCP: connections, no durations) | s |
    | configuration | tunable service × knob | ``log1p(v)/log1p(ceiling)`` | 0..1 |
    | load | — | ``users_frac`` (/ max users), ``requests_frac`` (/ max requests) | 0..1 |

    ``v``: :func:`envs.knobs.knob_value` (count, ms, 0/1); ``ceiling``: top of its ``knob_range``.

    ## Rewards

    ``score = -18 · (failure % of all requests + latency_weight · traffic-weighted mean endpoint
    p99 in latency_unit)`` (:func:`envs.reward.score`); per step (:class:`~envs.reward.StepReward`;
    penalty: ``unhealthy_penalty``, default -1800, the failure term of all requests failing):

    | reward_mode | healthy step *t* | unhealthy step *t* |
    |---|---|---|
    | ``delta`` (the notebook's) | ``score_t - score_{t-1}`` (``score_0``: reset's run) | penalty |
    | ``absolute`` | ``score_t`` | penalty × (episode_len - t + 1) |

    ## Starting State

    ``reset`` applies the initial configuration, checks health and runs the load once.
    ``init``: ``classic_fixed`` (the notebook's: the six classic knobs of each service uniform
    in 1..``init_upper``, drawn once per env), ``classic_random`` (drawn at each reset; a draw
    failing the health check is redrawn, at most :data:`MAX_INIT_DRAWS` times) or
    ``istio_default`` (no rules); Istio's defaults or the fixed draw failing the health check
    raise :class:`~envs.backends.base.BackendError`. Load: users uniform in ``users_range``,
    ``requests_per_user`` each, drawn ``per_env`` or ``per_episode`` (``load_draw``);
    ``faults`` in every run, not in the health check; ``load_seed`` ``per_run`` (new every run)
    or ``per_episode`` (every run replays the episode's load: an action changing nothing on
    the simulator gets exactly 0).

    ## Episode End

    Terminated: the health check after an action failed. Truncated: ``episode_len`` steps.

    ## Info

    ``healthy``, ``failure_pct`` (%), ``p99_ms`` (largest endpoint p99, ms), ``score`` /
    ``eval_score`` (env's / evaluation weights), ``initial_score`` / ``initial_eval_score``,
    ``users``, ``requests``, ``action_desc``, ``step``, ``replica``; measurements None if no run.

    ## Arguments

    ``env_config``, a dict or ``EnvContext`` (:data:`envs.settings.DEFAULT_ENV_CONFIG`):

    | key | default | meaning |
    |---|---|---|
    | ``backend`` / ``backend_kwargs`` | ``"sim"`` / ``{}`` | backend name and its kwargs |
    | ``replica`` | None | replica to lease (None: lowest free; taken: ``ReplicaTakenError``) |
    | ``users_range`` / ``requests_per_user`` | (10, 20) / 80 | the load (Starting State) |
    | ``load_draw`` / ``load_seed`` | ``per_env`` / ``per_run`` | see Starting State |
    | ``faults`` | () | ``ServiceDown`` / ``LatencySpike`` in every run's ``LoadSpec`` |
    | ``latency_weight`` / ``latency_unit`` | 0.1 / ``"ms"`` | score points per unit of p99 |
    | ``reward_mode`` / ``unhealthy_penalty`` | ``delta`` / -1800.0 | see Rewards (<= 0) |
    | ``episode_len`` | 20 | steps before truncation |
    | ``catalogue`` / ``services`` | ``classic`` / None | None: ``TUNABLE_SERVICES`` |
    | ``init`` / ``init_upper`` | ``classic_fixed`` / 100 | see Starting State |
    | ``seed`` | 0 | seeds the per-env draws (Seeding) |

    ## Seeding

    ``seed``, the RLlib worker index and the env's index in its ``EnvContext``
    (:func:`envs.settings.next_env_index`) seed the per-env draws and a first unseeded
    ``reset()``; ``reset(seed=s)`` seeds the episode: the same ``s``, the same episode (sim).

    ## Version History

    * v0: the only version. Added since, defaults keeping earlier episodes: ``load_seed``
      (``per_run``), ``faults`` (none; before, ``SimMesh(faults=...)`` via ``backend_kwargs``).
      Renamed: ``seed_fixed`` / ``seed_random`` / catalogue ``seed`` became ``classic_*``.
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
        top = s.users_range[1]
        self._encoder = ObservationEncoder(self.catalogue, top, top * s.requests_per_user)
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
        self._reward = StepReward(s.reward_mode, s.weights, s.unhealthy_penalty, s.episode_len)
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

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Restore the initial configuration, run the load once, observe it (Starting State)."""
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
            self._episode_load_seed = self._load_seed(fresh=True)
        report = self._run_load()
        self._t = 0
        self._episode_over = False
        self._initial_score = self._reward.reset(report)
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
        desc = self.catalogue.describe(int(action))
        new_config = self.catalogue.apply(int(action), self._config)
        healthy = apply_config(self.backend, new_config)  # a failed apply keeps the old config
        self._config = new_config
        self._t += 1
        truncated = self._t >= self.settings.episode_len
        if not healthy:
            self._episode_over = True
            self.last_report = None
            reward = self._reward.step(None, self._t)
            obs = self._encoder.encode(None, self._config, self.users, self.requests)
            return obs, reward, True, truncated, self._info(None, desc)
        report = self._run_load()
        reward = self._reward.step(report, self._t)
        self._episode_over = truncated
        obs = self._encoder.encode(report, self._config, self.users, self.requests)
        return obs, reward, False, truncated, self._info(report, desc)

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
        return LoadSpec(users=self.users, requests=self.requests,
                        hatch_rate_per_s=HATCH_RATE_PER_S, faults=self.settings.faults)

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

    def _initial_config(self) -> MeshConfig:
        """Apply and return the episode's initial configuration (class doc, Starting State)."""
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
            raise BackendError("the fixed initial configuration no longer passes the health check")
        return dict(self._fixed_init)

    def _run_load(self) -> LoadReport:
        report = run_checked(self.backend, self._load_spec(), self._load_seed())
        self.last_report = report
        return report

    def _info(self, report: LoadReport | None, action_desc: str) -> dict[str, Any]:
        """The step's info (class doc, Info). Measurements are None when no load ran."""
        m = report is not None
        return {"healthy": m, "failure_pct": report.failure_pct if m else None,
                "p99_ms": max_p99_ms(report) if m else None,
                "score": score(report, self.settings.weights) if m else None,
                "eval_score": evaluation_score(report) if m else None,
                "initial_score": self._initial_score,
                "initial_eval_score": self._initial_eval_score, "users": self.users,
                "requests": self.requests, "action_desc": action_desc, "step": self._t,
                "replica": self.replica}


def register() -> None:
    """Register :data:`ENV_NAME` with RLlib's env registry and with gymnasium. Idempotent."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, MeshEnv)  # RLlib calls it with an EnvContext
    if ENV_NAME not in gym.registry:
        gym.register(id=ENV_NAME, entry_point="envs.mesh_env:MeshEnv")


__all__ = ["ENV_NAME", "MAX_INIT_DRAWS", "MeshEnv", "register"]
