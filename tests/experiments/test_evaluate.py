"""experiments/evaluate.py end to end: a real --quick run on a freshly trained checkpoint (the
library's parts: tests/rl/evaluation/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rl.evaluation.cases import SCENARIOS
from rl.evaluation.checkpoint import load_policy

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "evaluate.py"


_MAKE_CHECKPOINT = textwrap.dedent("""
    import sys, ray
    from envs.mesh_env import MeshEnv
    from rl.reinforce import ReinforceConfig
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    algo = (ReinforceConfig()
            .environment(MeshEnv, env_config={"init": "classic_random", "load_draw": "per_episode",
                                              "episode_len": 4})
            .env_runners(num_env_runners=0)
            .training(num_episodes_per_train_batch=2)
            .debugging(seed=0)).build_algo()
    algo.train()
    algo.save(sys.argv[1])
    algo.stop()
    ray.shutdown()
""")


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    checkpoint = tmp_path / "ckpt"
    subprocess.run([sys.executable, "-c", _MAKE_CHECKPOINT, str(checkpoint)], check=True,
                   cwd=REPO, env=env, timeout=300, capture_output=True)
    policy = load_policy(checkpoint)
    assert policy.env_config["episode_len"] == 4
    assert policy.env_steps_trained == 8  # 2 episodes × 4 steps
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--checkpoint", str(checkpoint),
         "--ppo-env-steps", "40", "--output", str(out)],
        cwd=REPO, env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    for scenario in SCENARIOS:
        assert f"**{scenario.name}**" in table
        assert str(scenario.first_seed) in table  # the held-out seeds are listed
    for method in ("reinforce", "reinforce_sampled", "ppo", "random_actions", "initial",
                   "istio_default", "random_5", "tpe_5", "random_41", "tpe_41", "oracle"):
        assert f"| {method} " in table, method
    assert table.count("Actions: reinforce: ") == len(SCENARIOS)
    results = json.loads((out / "results.json").read_text())
    assert results["ppo"]["env_steps"] >= 40 and results["ppo"]["trained_here"]
    case = results["scenarios"]["in_range"]["cases"][0]
    assert case["case_seed"] == SCENARIOS[0].first_seed
    assert len(case["fresh_load_seeds"]) == 3
    methods = case["methods"]
    assert methods["oracle"]["gap_closed"] in (None, pytest.approx(1.0))
    assert methods["reinforce"]["load_runs"] == 5  # reset + 4 steps
    assert len(methods["reinforce"]["actions"]) == 4
    assert (out / "score_vs_evals.png").stat().st_size > 10_000
    assert (out / "ppo_checkpoint" / "algorithm_state.pkl").is_file()
