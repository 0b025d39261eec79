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
from typing import Any

import numpy as np

from envs.backends.base import Fault, LatencySpike, ServiceDown
from envs.backends.registry import backend_factory
from envs.reward import DEFAULT_UNHEALTHY_PENALTY, REWARD_MODES, RewardWeights

#: The ``load_draw`` choices: the episode's users drawn once per env or at every reset.
LOAD_DRAWS: tuple[str, ...] = ("per_env", "per_episode")
#: The ``load_seed`` choices: a new load seed for every run, or one per episode.
LOAD_SEEDS: tuple[str, ...] = ("per_run", "per_episode")
#: The ``init`` choices: the episode's initial configuration.
INIT_MODES: tuple[str, ...] = ("classic_fixed", "classic_random", "istio_default")

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
    "faults": (),
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
    """``env_config`` after validation (keys and defaults: :data:`DEFAULT_ENV_CONFIG`; meaning:
    :class:`envs.mesh_env.MeshEnv`'s docstring)."""

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
            faults=tuple(faults),
        )


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


__all__ = ["DEFAULT_ENV_CONFIG", "INIT_MODES", "LOAD_DRAWS", "LOAD_SEEDS", "EnvSettings",
           "next_env_index"]
