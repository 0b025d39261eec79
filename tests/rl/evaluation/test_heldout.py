"""Held-out evaluation settings and cases (rl/evaluation/heldout.py, rl/evaluation/cases.py).

The whole evaluation runs end to end in ``tests/experiments/test_evaluate.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from envs.backends.base import ServiceDown
from rl.evaluation.cases import SCENARIOS, case_env_config
from rl.evaluation.heldout import DEFAULT_CASES, EvaluationError, resolve_settings


def test_bad_sizes_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="fresh-seeds"):
        resolve_settings(checkpoint=tmp_path, output=tmp_path, fresh_seeds=1)


def test_quick_is_smaller_and_explicit_sizes_win(tmp_path: Path) -> None:
    full = resolve_settings(checkpoint=tmp_path, output=tmp_path)
    quick = resolve_settings(checkpoint=tmp_path, output=tmp_path, quick=True)
    assert full.cases_per_scenario == DEFAULT_CASES
    assert set(quick.cases_per_scenario.values()) == {1}
    assert (quick.fresh_seeds, quick.oracle_evals, quick.ppo_env_steps) == (3, 40, 200)
    assert (full.fresh_seeds, full.oracle_evals, full.ppo_env_steps) == (8, 600, None)
    two = resolve_settings(checkpoint=tmp_path, output=tmp_path, quick=True, cases=2)
    assert set(two.cases_per_scenario.values()) == {2}


def test_fault_scenarios_put_their_faults_into_the_env_config() -> None:
    carts_down = next(s for s in SCENARIOS if s.name == "carts_down")
    config = case_env_config({"backend": "sim", "replica": 3}, carts_down, 7)
    assert config["faults"] == [ServiceDown("carts", 3.0, 6.0)]
    assert "replica" not in config and "backend_kwargs" not in config
    assert config["seed"] == 7 and config["users_range"] == (10, 20)
    assert "faults" not in case_env_config({}, SCENARIOS[0], 7)
    with pytest.raises(ValueError, match="simulator"):
        case_env_config({"backend": "local"}, carts_down, 7)
