"""The observation-shuffling ablation (rl/evaluation/ablation.py): a policy that reads its
observation acts differently when shown another episode's, a constant one does not, and the
share of the gain lost is computed from the per-case summed scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from envs.actions import make_catalogue
from envs.scenarios import held_out_cases
from rl.controllers import PolicyController
from rl.evaluation.ablation import gain_lost, run_shuffled, shuffled_sources
from rl.evaluation.closed_loop import ScenarioRun, StepRecord, run_scenario
from tests.rl.evaluation._policies import ObsHash

EPISODE_LEN = 8


class _Constant(ObsHash):
    """Action 3 whatever it observes."""

    def forward_inference(self, batch: dict) -> dict:
        index = torch.full((batch[Columns.OBS].shape[0],), 3, dtype=torch.long)
        return {Columns.ACTION_DIST_INPUTS: torch.nn.functional.one_hot(index, self.n_act)
                .float()}


def _policy_runs(module: torch.nn.Module, plan: list) -> list[ScenarioRun]:
    from envs.backends import make_backend

    catalogue = make_catalogue("ladder")
    backend = make_backend("sim")
    try:
        return [run_scenario(backend, s, PolicyController(module, catalogue), seed, 10.0,
                             EPISODE_LEN, catalogue) for s, seed in plan]
    finally:
        backend.close()


def test_sources_are_another_case() -> None:
    assert shuffled_sources(3) == [1, 2, 0]
    with pytest.raises(ValueError, match="at least 2"):
        shuffled_sources(1)


@pytest.mark.parametrize(("module_class", "changes"), [(ObsHash, True), (_Constant, False)])
def test_only_a_policy_that_reads_its_observation_acts_differently(
        module_class: type, changes: bool) -> None:
    catalogue = make_catalogue("ladder")
    module = module_class(len(catalogue))
    plan = [(s, 4_000_000 + i) for i, s in enumerate(held_out_cases(3, 3, EPISODE_LEN))]
    own = _policy_runs(module, plan)
    shuffled = run_shuffled(module, catalogue, plan, own, 10.0, EPISODE_LEN)
    assert [r.controller for r in shuffled] == ["policy_shuffled_obs"] * 3
    acted = [[s.action for s in r.steps[1:]] for r in own]
    acted_shuffled = [[s.action for s in r.steps[1:]] for r in shuffled]
    assert (acted != acted_shuffled) is changes
    if not changes:  # the same actions on the same seeds: the same episode
        assert [r.summed_score for r in own] == [r.summed_score for r in shuffled]


def _run(summed: float) -> ScenarioRun:
    run = ScenarioRun("s", "m", 0)
    run.steps = [StepRecord(t=0, rate_rps=1.0, faults=(), healthy=True, score=0.0),
                 StepRecord(t=1, rate_rps=1.0, faults=(), healthy=True, score=summed)]
    return run


def test_share_of_the_gain_lost() -> None:
    base = [_run(-10.0), _run(-20.0)]
    out = gain_lost([_run(-4.0), _run(-10.0)], [_run(-7.0), _run(-17.0)], base)
    assert out["gain"] == pytest.approx(8.0) and out["shuffled_gain"] == pytest.approx(3.0)
    assert out["share_lost"] == pytest.approx(5.0 / 8.0)
    assert np.isnan(gain_lost([_run(-12.0)], [_run(-12.0)], [_run(-10.0)])["share_lost"])
