"""How much is reacting worth? A look-ahead oracle in the agent's own action space, and a blind
replay of its actions.

Issue 12 asks the policy to "use what it sees": ≥ 5 distinct actions chosen by state, and an
observation shuffle that loses ≥ 50 % of its gain. Whether the held-out cases *reward* reacting
at all is a property of the cases and the catalogue, not of any learner. This module measures it
with a reference that knows what no policy can, the next run's conditions:

* :class:`LookaheadOracle` — at every step, every catalogue action applied to the configuration
  in force is measured on the simulator under the **next run's conditions** (its offered rate
  and active faults, which the oracle is told: it reads the scenario) with its own load seeds
  (:data:`LOOKAHEAD_SEED_BASE`; never the run's own, so it knows the conditions, not the dice),
  in two rounds against the winner's curse, and the best one is taken (no change unless another
  action scores more than ``min_gain`` points higher; a configuration failing the health check
  is never taken). Greedy over one step: a reference for a policy acting through the same
  catalogue one step at a time, not an optimum over whole episodes (a policy that plans ahead
  can beat it).
* :class:`ActionReplay` — a fixed sequence of catalogue actions played from the scenario's own
  start, blind to what happens: the oracle's actions of case ``i + 1`` replayed on case ``i``
  (:func:`rl.evaluation.ablation.shuffled_sources`) is the observation shuffle of the ablation,
  applied to the oracle. The share of the oracle's gain over Istio's defaults that the replay
  loses shows how much of that gain depends on reading the state on these cases.

``scripts/headroom.py`` runs both through the held-out cases beside the static methods.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from envs.actions import ActionCatalogue, MeshConfig
from envs.backends.base import Backend
from envs.measure import measure
from envs.scenarios import Scenario
from rl.evaluation.cases import config_key

#: Base of the oracle's look-ahead load seeds: away from training (``--seed`` + runner),
#: validation (2 000 000+), test (1 000 000+), the classic (3 000 000+) and held-out
#: (4 000 000+) evaluation seeds.
LOOKAHEAD_SEED_BASE = 5_000_000


def lookahead_seeds(scenario: Scenario, t: int, n: int) -> list[int]:
    """The ``n`` load seeds the oracle measures run ``t`` of ``scenario`` with: a function of
    the scenario's name and ``t`` only (the same for every configuration: common random
    numbers), never the run's own seed."""
    entropy = [LOOKAHEAD_SEED_BASE, zlib.crc32(scenario.name.encode()), int(t)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


class LookaheadOracle:
    """The one-step look-ahead oracle (module docstring): a controller that is told the next
    run's rate and faults and measures every action before taking one.

    Choosing the best of ~500 noisy measurements picks the luckiest (the winner's curse: at
    overload one run of a configuration can differ from the next by tens of points), so the
    choice is made in two rounds: every distinct configuration the catalogue reaches in one
    action is measured on ``screen_seeds`` look-ahead seeds; the ``top_k`` best and the
    configuration in force are measured again on ``confirm_seeds`` other seeds, and those
    confirmed means decide.

    Args:
        catalogue: the actions it chooses among (the agent's catalogue).
        backend_factory: makes its private simulator (called once, at the first step; closed by
            :meth:`close`); must model the same mesh as the evaluation's backend.
        step_s: seconds of offered load per run (the evaluation's).
        screen_seeds: look-ahead load seeds per candidate in the first round.
        top_k: candidates the first round passes to the second.
        confirm_seeds: look-ahead load seeds of the second round (other seeds).
        min_gain: how much higher (evaluation-score points: % of offered requests served
            within their SLO) a change must score than keeping the configuration in force, on
            the second round's seeds.
        name: its name in tables.

    Attributes:
        last_action: the catalogue action of the last :meth:`act` (the no-op when it kept the
            configuration).
        evaluated: configurations measured so far (each round counts).
    """

    def __init__(self, catalogue: ActionCatalogue, backend_factory: Callable[[], Backend],
                 step_s: float = 10.0, screen_seeds: int = 1, top_k: int = 8,
                 confirm_seeds: int = 4, min_gain: float = 0.0,
                 name: str = "lookahead_oracle") -> None:
        for field, value in (("screen_seeds", screen_seeds), ("top_k", top_k),
                             ("confirm_seeds", confirm_seeds)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")
        if not isinstance(min_gain, int | float) or not math.isfinite(min_gain) or min_gain < 0:
            raise ValueError(f"min_gain must be a finite number of points >= 0, got {min_gain!r}")
        if not isinstance(step_s, int | float) or not math.isfinite(step_s) or step_s <= 0:
            raise ValueError(f"step_s must be a finite number of seconds > 0, got {step_s!r}")
        self.catalogue = catalogue
        self.name = name
        self.step_s = float(step_s)
        self.screen_seeds = screen_seeds
        self.top_k = top_k
        self.confirm_seeds = confirm_seeds
        self.min_gain = float(min_gain)
        self._factory = backend_factory
        self._backend: Backend | None = None
        self._scenario: Scenario | None = None
        self.last_action: int | None = None
        self.evaluated = 0

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start (where the policy starts); remembers the scenario."""
        self._scenario = scenario
        self.last_action = None
        return dict(start)

    def score(self, config: MeshConfig, t: int, seeds: Sequence[int]) -> float:
        """Mean evaluation score of ``config`` on run ``t``'s conditions over ``seeds``;
        ``-inf`` if the front-end does not answer with it or a run completes nothing."""
        if self._scenario is None:
            raise RuntimeError("LookaheadOracle.score before reset")
        if self._backend is None:
            self._backend = self._factory()
        load = self._scenario.load(t, self.step_s)
        self.evaluated += 1
        total = 0.0
        for seed in seeds:
            m = measure(self._backend, config, load, seed)
            if not m.healthy or m.eval_score is None:
                return -math.inf
            total += m.eval_score
        return total / len(seeds)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The catalogue action whose configuration scores best on the next run (run
        ``info["t"] + 1``, class docstring); the configuration in force unless the best other
        scores more than :attr:`min_gain` higher; among equal scores, the lowest action
        index."""
        if self._scenario is None:
            raise RuntimeError("LookaheadOracle.act before reset")
        t = int(info["t"]) + 1
        seeds = lookahead_seeds(self._scenario, t, self.screen_seeds + self.confirm_seeds)
        screen, confirm = seeds[:self.screen_seeds], seeds[self.screen_seeds:]
        seen = {config_key(config)}
        screened: list[tuple[float, int, MeshConfig]] = []
        for i in range(len(self.catalogue)):
            candidate = self.catalogue.apply(i, config)
            key = config_key(candidate)
            if key in seen:
                continue
            seen.add(key)
            screened.append((self.score(candidate, t, screen), i, candidate))
        screened.sort(key=lambda c: (-c[0], c[1]))
        keep = self.score(config, t, confirm)
        best: tuple[float, int, MeshConfig] | None = None
        for _, i, candidate in screened[:self.top_k]:
            s = self.score(candidate, t, confirm)
            if best is None or s > best[0]:
                best = (s, i, candidate)
        if best is None or not best[0] > keep + self.min_gain:
            self.last_action = self.catalogue.noop_index
            return dict(config)
        self.last_action = best[1]
        return best[2]

    def close(self) -> None:
        """Close its private simulator (idempotent)."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None


class ActionReplay:
    """A fixed sequence of catalogue actions from the scenario's own start, whatever it sees.

    Args:
        catalogue: the catalogue the indices refer to.
        actions: the action of each step (``actions[t - 1]`` at step ``t``); None, or past
            the end of the sequence (a source episode that ended early): no change.
        name: its name in tables.
    """

    def __init__(self, catalogue: ActionCatalogue, actions: Sequence[int | None],
                 name: str = "blind_replay") -> None:
        for a in actions:
            if a is not None:
                catalogue.action(a)  # ValueError on an index outside the catalogue
        self.catalogue = catalogue
        self.actions = [None if a is None else int(a) for a in actions]
        self.name = name
        self.last_action: int | None = None
        self._t = 0

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start."""
        self._t = 0
        self.last_action = None
        return dict(start)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The next action of the sequence applied to ``config``."""
        action = self.actions[self._t] if self._t < len(self.actions) else None
        self._t += 1
        self.last_action = action
        return dict(config) if action is None else self.catalogue.apply(action, config)


__all__ = ["LOOKAHEAD_SEED_BASE", "ActionReplay", "LookaheadOracle", "lookahead_seeds"]
