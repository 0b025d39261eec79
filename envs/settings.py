"""``MeshEnv``'s configuration: the ``env_config`` keys, their defaults and their validation.

:data:`DEFAULT_ENV_CONFIG` lists every key (others are rejected) and its default;
:meth:`EnvSettings.from_config` validates a given ``env_config`` into an :class:`EnvSettings`,
raising ValueError naming the key; :func:`next_env_index` tells apart the envs built from one
``env_config`` object (RLlib's ``EnvContext``). What each key means is in the docstring of
:class:`envs.mesh_env.MeshEnv` (Arguments). A backend name is checked by
:func:`envs.backends.registry.backend_factory` only.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.backends.base import Fault, LatencySpike, ServiceDown
from envs.backends.registry import backend_factory
from envs.istio import pools_of, read_rules
from envs.reward import (
    OBJECTIVES,
    REWARD_MODES,
    ClassicObjective,
    Objective,
    RewardWeights,
    SloObjective,
    check_change_cost,
)
from envs.scenarios import DISTRIBUTIONS, MIN_EPISODE_LEN, Scenario, load_scenarios

#: The ``load_draw`` choices: the episode's users drawn once per env or at every reset.
LOAD_DRAWS: tuple[str, ...] = ("per_env", "per_episode")
#: The ``load_seed`` choices: a new load seed for every run, or one per episode.
LOAD_SEEDS: tuple[str, ...] = ("per_run", "per_episode")
#: The ``init`` choices: the episode's initial configuration (None: the scenario's start under
#: the open load, ``classic_fixed`` under the classic load).
INIT_MODES: tuple[str, ...] = ("classic_fixed", "classic_random", "istio_default", "tuned")
#: The static configuration the ``tuned`` start uses when ``tuned_config`` is None: the best
#: configuration TPE found with 201 runs on the steady nominal load (``experiments/tune_static.py``
#: writes it), as DestinationRules an operator could apply.
TUNED_STATIC_PATH = Path(__file__).resolve().parent / "data" / "tuned_static.yaml"
#: The ``load`` choices: scenario-driven open-loop arrivals, or the notebook's closed loop.
LOADS: tuple[str, ...] = ("open", "classic")

#: Every env_config key and its default. Keys not listed here are rejected.
DEFAULT_ENV_CONFIG: dict[str, Any] = {
    "backend": "sim",
    "backend_kwargs": {},
    "replica": None,
    "load": "open",
    "scenarios": "training",
    "step_s": 10.0,
    "users_range": (10, 20),
    "requests_per_user": 80,
    "load_draw": "per_env",
    "load_seed": "per_run",
    "objective": "slo",
    "late_weight": 1.0,
    "latency_weight": 0.1,
    "latency_unit": "ms",
    "reward_mode": "delta",
    "change_cost": 0.0,
    "episode_len": 20,
    "catalogue": "ladder",
    "services": None,
    "init": None,
    "init_upper": 100,
    "tuned_config": None,
    "seed": 0,
    "unhealthy_penalty": None,
    "faults": (),
}


def classic_env_config(**overrides: Any) -> dict[str, Any]:
    """The notebook's setup as an ``env_config``: its closed-loop load (10–20 users × 80
    requests, no think time), its score (:class:`envs.reward.ClassicObjective`) with the
    evaluation weights, its fixed random start, its additive ``classic`` catalogue over the 12
    tunable services; ``overrides`` on top."""
    return {"load": "classic", "objective": "classic", "init": "classic_fixed",
            "catalogue": "classic", **overrides}


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
    """``env_config`` after validation (keys and defaults: :data:`DEFAULT_ENV_CONFIG`; meaning:
    :class:`envs.mesh_env.MeshEnv`'s docstring)."""

    backend: str
    backend_kwargs: dict[str, Any]
    replica: int | None
    load: str
    scenarios: str | tuple[Scenario, ...]
    step_s: float
    users_range: tuple[int, int]
    requests_per_user: int
    load_draw: str
    load_seed: str
    objective: Objective
    reward_mode: str
    change_cost: float
    episode_len: int
    catalogue: str
    services: tuple[str, ...] | None
    init: str | None
    init_upper: int
    tuned_config: dict[str, Any] | None
    seed: int
    unhealthy_penalty: float
    faults: tuple[Fault, ...]

    @classmethod
    def from_config(cls, env_config: Mapping[str, Any] | None) -> EnvSettings:
        """Validate ``env_config`` (unknown keys and bad values raise ValueError naming them)."""
        given = dict(env_config or {})
        unknown = sorted(set(given) - set(DEFAULT_ENV_CONFIG))
        if unknown:
            raise ValueError(f"unknown env_config key(s) {unknown}; "
                             f"known keys: {sorted(DEFAULT_ENV_CONFIG)}")
        c = {**DEFAULT_ENV_CONFIG, **given}
        try:
            backend_factory(c["backend"])
        except ValueError as e:
            raise ValueError(f"env_config['backend']: {e}") from None
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
        faults = c["faults"]
        if (isinstance(faults, str | Mapping) or not isinstance(faults, Sequence)
                or not all(isinstance(f, ServiceDown | LatencySpike) for f in faults)):
            raise ValueError("env_config['faults'] must be a sequence of "
                             "envs.backends.base.ServiceDown / LatencySpike, "
                             f"got {faults!r}")
        try:
            weights = RewardWeights(c["latency_weight"], c["latency_unit"])
        except ValueError as e:
            raise ValueError(f"env_config latency_weight/latency_unit: {e}") from None
        objective_name = _choice(c, "objective", OBJECTIVES)
        try:
            slo = SloObjective(c["late_weight"])  # checked whichever objective is chosen
        except ValueError as e:
            raise ValueError(f"env_config['late_weight']: {e}") from None
        objective: Objective = slo if objective_name == "slo" else ClassicObjective(weights)
        penalty = c["unhealthy_penalty"]
        if penalty is None:
            penalty = objective.worst
        if (isinstance(penalty, bool) or not isinstance(penalty, int | float)
                or not math.isfinite(penalty) or penalty > 0):
            raise ValueError(f"env_config['unhealthy_penalty'] must be a finite number <= 0 "
                             f"(or None: the objective's worst score), got {penalty!r}")
        step_s = c["step_s"]
        if (isinstance(step_s, bool) or not isinstance(step_s, int | float)
                or not math.isfinite(step_s) or step_s <= 0):
            raise ValueError(f"env_config['step_s'] must be a positive number of seconds, "
                             f"got {step_s!r}")
        init = None if c["init"] is None else _choice(c, "init", INIT_MODES)
        tuned = c["tuned_config"]
        if isinstance(tuned, str):
            tuned = tuned_config_from(tuned)
        elif tuned is not None and not isinstance(tuned, Mapping):
            raise ValueError("env_config['tuned_config'] must be a mapping service -> "
                             f"ConnectionPool, a DestinationRule YAML path or None, got {tuned!r}")
        reward_mode = _choice(c, "reward_mode", REWARD_MODES)
        try:
            change_cost = check_change_cost(c["change_cost"], reward_mode)
        except ValueError as e:
            raise ValueError(f"env_config['change_cost']: {e}") from None
        load = _choice(c, "load", LOADS)
        scenarios = _scenarios(c["scenarios"])
        episode_len = _int(c, "episode_len", 1)
        if load == "open" and isinstance(scenarios, str) and episode_len < MIN_EPISODE_LEN:
            raise ValueError(f"env_config['episode_len'] must be >= {MIN_EPISODE_LEN} to draw "
                             f"from the {scenarios!r} scenarios (their load shapes need it), "
                             f"got {episode_len}; give a list of scenarios or the classic load")
        return cls(
            backend=str(c["backend"]),
            backend_kwargs=dict(c["backend_kwargs"]),
            replica=replica,
            load=load,
            scenarios=scenarios,
            step_s=float(step_s),
            users_range=(int(users[0]), int(users[1])),
            requests_per_user=_int(c, "requests_per_user", 1),
            load_draw=_choice(c, "load_draw", LOAD_DRAWS),
            load_seed=_choice(c, "load_seed", LOAD_SEEDS),
            objective=objective,
            reward_mode=reward_mode,
            change_cost=change_cost,
            episode_len=episode_len,
            catalogue=str(c["catalogue"]),
            services=services,
            init=init,
            init_upper=_int(c, "init_upper", 1),
            tuned_config=None if tuned is None else dict(tuned),
            seed=_int(c, "seed", 0),
            unhealthy_penalty=float(penalty),
            faults=tuple(faults),
        )

    def tuned(self) -> dict[str, Any]:
        """The ``tuned`` start's configuration: ``tuned_config``, or the project's shipped
        static configuration (:data:`TUNED_STATIC_PATH`) when None."""
        if self.tuned_config is not None:
            return dict(self.tuned_config)
        return tuned_config_from(TUNED_STATIC_PATH)

    @property
    def start(self) -> str:
        """The initial-configuration mode when it does not come from a scenario: ``init``, or
        ``classic_fixed`` under the classic load."""
        return self.init or "classic_fixed"


def tuned_config_from(path: str | Path) -> dict[str, Any]:
    """The configuration (service → pool) of the DestinationRule YAML file at ``path``.

    Raises:
        ValueError: the file is missing, malformed or holds invalid rules (one line naming it).
    """
    try:
        return dict(pools_of(read_rules(path)))
    except (OSError, ValueError) as e:
        raise ValueError(f"tuned configuration {path}: {e}") from None


def _scenarios(value: Any) -> str | tuple[Scenario, ...]:
    """``env_config["scenarios"]`` validated: a set's name (:data:`envs.scenarios.DISTRIBUTIONS`),
    a YAML file's path (read now) or a non-empty sequence of :class:`~envs.scenarios.Scenario`."""
    if isinstance(value, str):
        if value in DISTRIBUTIONS:
            return value
        if value.endswith((".yaml", ".yml")):
            return tuple(load_scenarios(value))
        raise ValueError(f"env_config['scenarios'] must be one of {sorted(DISTRIBUTIONS)}, a "
                         f".yaml path or a list of Scenario, got {value!r}")
    if (isinstance(value, Mapping) or not isinstance(value, Sequence) or not value
            or not all(isinstance(v, Scenario) for v in value)):
        raise ValueError("env_config['scenarios'] must be a set's name, a .yaml path or a "
                         f"non-empty list of envs.scenarios.Scenario, got {value!r}")
    return tuple(value)


_envs_built_from: dict[int, int] = {}


def next_env_index(env_config: object) -> int:
    """How many envs this process built before from this very ``env_config`` object: the env's
    index among its runner's envs, one of the three numbers of ``MeshEnv``'s per-env seeding.

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


__all__ = ["DEFAULT_ENV_CONFIG", "INIT_MODES", "LOADS", "LOAD_DRAWS", "LOAD_SEEDS", "EnvSettings",
           "classic_env_config", "next_env_index"]
