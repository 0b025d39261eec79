"""Does the policy use what it sees? The observation-shuffling ablation of issue 12.

The trained policy plays every held-out case again, but at each step it is shown the
observation that it saw at the same step of *another* case (case ``i`` gets case ``i + 1``'s,
cyclically: held-out cases cycle through the families, so the neighbour is another family, its
load, its faults, its start), while its actions still act on case ``i``'s mesh. A policy that
ignores its observation (one constant action) keeps its gain; one that reacts to load and
faults loses it. Reported as the share of the policy's mean gain over Istio's defaults that
the shuffle loses (target: ≥ 50 %).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs.actions import ActionCatalogue, MeshConfig
from envs.scenarios import Scenario
from rl.controllers import PolicyController
from rl.evaluation.closed_loop import ScenarioRun


class ShuffledObservationPolicy:
    """A :class:`rl.controllers.PolicyController` fed another episode's observations.

    Args:
        module: the trained RLModule.
        catalogue: its action catalogue.
        observations: what the policy is shown, by step (``observations[t]`` at the action
            after run ``t``; the last one again past its end, if that episode ended early).
        name: its name in tables.
    """

    def __init__(self, module: Any, catalogue: ActionCatalogue,
                 observations: Sequence[np.ndarray], name: str = "policy_shuffled_obs") -> None:
        if not observations:
            raise ValueError("ShuffledObservationPolicy needs at least one observation")
        self._policy = PolicyController(module, catalogue, name)
        self._observations = list(observations)
        self.name = name
        self.last_action: int | None = None

    def reset(self, scenario: Scenario, start: MeshConfig) -> MeshConfig:
        """The scenario's own start (as the policy)."""
        self.last_action = None
        return self._policy.reset(scenario, start)

    def act(self, obs: np.ndarray, config: MeshConfig, info: Mapping[str, Any]) -> MeshConfig:
        """The policy's greedy action on the other episode's observation of the same step,
        applied to this episode's configuration."""
        t = min(int(info["t"]), len(self._observations) - 1)
        new = self._policy.act(self._observations[t], config, info)
        self.last_action = self._policy.last_action
        return new


def shuffled_sources(n: int) -> list[int]:
    """Which case's observations case ``i`` is shown: ``(i + 1) mod n`` (none for n < 2)."""
    if n < 2:
        raise ValueError(f"the shuffle needs at least 2 cases, got {n}")
    return [(i + 1) % n for i in range(n)]


def run_shuffled(module: Any, catalogue: ActionCatalogue,
                 plan: Sequence[tuple[Scenario, int]], policy_runs: Sequence[ScenarioRun],
                 step_s: float, episode_len: int) -> list[ScenarioRun]:
    """The policy through every case of ``plan`` (same seeds, on the simulator) shown the
    observations of its own runs ``policy_runs`` of the case :func:`shuffled_sources` names."""
    from envs.backends import make_backend
    from rl.evaluation.closed_loop import run_scenario

    if len(policy_runs) != len(plan):
        raise ValueError(f"{len(policy_runs)} policy runs for {len(plan)} cases")
    backend = make_backend("sim")
    try:
        runs = []
        for (scenario, seed), source in zip(plan, shuffled_sources(len(plan)), strict=True):
            controller = ShuffledObservationPolicy(module, catalogue,
                                                   policy_runs[source].observations)
            run = run_scenario(backend, scenario, controller, seed, step_s, episode_len,
                               catalogue)
            run.controller = controller.name
            runs.append(run)
        return runs
    finally:
        backend.close()


def gain_lost(policy: Sequence[ScenarioRun], shuffled: Sequence[ScenarioRun],
              baseline: Sequence[ScenarioRun]) -> dict[str, float]:
    """The policy's and the shuffled policy's mean summed-score gain over ``baseline`` (per
    case, then averaged) and the share of the gain the shuffle lost (NaN when the policy has no
    gain to lose)."""
    if not len(policy) == len(shuffled) == len(baseline) > 0:
        raise ValueError("gain_lost needs the same, non-zero number of cases per method")
    base = np.array([r.summed_score for r in baseline])
    gain = float(np.mean([r.summed_score for r in policy] - base))
    ablated = float(np.mean([r.summed_score for r in shuffled] - base))
    lost = (gain - ablated) / gain if gain > 0 else float("nan")
    return {"gain": gain, "shuffled_gain": ablated, "share_lost": lost}


__all__ = ["ShuffledObservationPolicy", "gain_lost", "run_shuffled", "shuffled_sources"]
