"""experiments/evaluate.py end to end: real --quick runs (held-out scenarios, --steady and
--classic) on a freshly trained checkpoint, and its one-line errors (the library's parts:
tests/rl/evaluation/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from envs.settings import classic_env_config
from rl.evaluation.cases import SCENARIOS
from rl.evaluation.checkpoint import load_policy

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "evaluate.py"


_MAKE_CHECKPOINT = textwrap.dedent("""
    import json, sys, ray
    from envs.mesh_env import MeshEnv
    from rl.reinforce import ReinforceConfig
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    algo = (ReinforceConfig()
            .environment(MeshEnv, env_config={"episode_len": 8, **json.loads(sys.argv[2])})
            .env_runners(num_env_runners=0)
            .training(num_episodes_per_train_batch=2)
            .debugging(seed=0)).build_algo()
    algo.train()
    algo.save(sys.argv[1])
    algo.stop()
    ray.shutdown()
""")


ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}


def _make_checkpoint(path: Path, env_config: dict[str, Any]) -> Path:
    subprocess.run([sys.executable, "-c", _MAKE_CHECKPOINT, str(path), json.dumps(env_config)],
                   check=True, cwd=REPO, env=ENV, timeout=300, capture_output=True)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy of MeshEnv's defaults (open load, ladder catalogue), one update."""
    return _make_checkpoint(tmp_path_factory.mktemp("evaluate") / "ckpt", {})


@pytest.fixture(scope="module")
def classic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy of the notebook's setup (classic_env_config), one update."""
    return _make_checkpoint(tmp_path_factory.mktemp("evaluate") / "classic",
                            classic_env_config())


@pytest.mark.slow
def test_quick_held_out_run_end_to_end(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--checkpoint", str(checkpoint),
         "--output", str(out)], cwd=REPO, env=ENV, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    methods = ("policy", "istio_default", "tpe_201", "rule_based", "gateway_throttle",
               "keep_start")
    for method in methods:
        assert f"| {method} |" in table, method
    for header in ("summed score", "good %", "goodput req/s", "failure %", "mean ms", "p99 ms",
                   "win rate", "Steady parts"):
        assert header in table, header
    results = json.loads((out / "results.json").read_text())
    assert results["episode_len"] == 8  # the checkpoint's
    assert len(results["cases"]) == 2
    case = results["cases"][0]
    assert set(case["runs"]) == set(methods)
    seeds = {name: [s["load_seed"] for s in run["steps"]] for name, run in case["runs"].items()}
    assert len({tuple(v) for v in seeds.values() if None not in v}) == 1  # common random numbers
    assert len(case["runs"]["policy"]["steps"]) == 9
    assert set(results["win_rates"]) == set(methods) - {"policy"}
    assert results["policy_actions"]["steps"] > 0
    assert (out / "fault_case.png").stat().st_size > 10_000


@pytest.mark.slow
def test_quick_steady_run_end_to_end(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steady", "--quick", "--cases", "1",
         "--checkpoint", str(checkpoint), "--output", str(out)],
        cwd=REPO, env=ENV, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    methods = ("start", "policy", "tpe_9", "istio_default", "gateway_throttle", "oracle")
    for method in methods:  # the checkpoint's episodes are 8 steps: TPE with 9 runs
        rows = [line for line in table.splitlines() if line.startswith(f"| {method} |")]
        assert len(rows) == 2, method  # a row in range and one at 4x nominal
    for header in ("gap closed, median [95 % CI]", "score", "good %", "goodput req/s",
                   "failure %", "mean ms", "p99 ms", "**in_range**", "**out_of_range**",
                   "--steady --quick"):
        assert header in table, header
    results = json.loads((out / "results.json").read_text())
    assert results["episode_len"] == 8 and results["fresh_seeds"] == 3
    assert results["oracle_runs"] == 30
    for family in ("in_range", "out_of_range"):
        (case,) = results["families"][family]["cases"]
        scores = {m: v["score"] for m, v in case["methods"].items()}
        assert set(scores) == set(methods)
        assert all(scores["oracle"] >= s for s in scores.values())  # on the same fresh seeds
        assert all(len(v["scores"]) == 3 for v in case["methods"].values())
    assert results["families"]["out_of_range"]["cases"][0]["rate_rps"] == 240.0


@pytest.mark.parametrize("args, message", [
    (["--cases", "0"], "--cases must be >= 1"),
    (["--fresh-seeds", "3"], "do not apply to the held-out evaluation"),
    (["--checkpoint", "/nonexistent/ckpt"], "not an RLlib Algorithm checkpoint"),
    (["--steady", "--classic"], "pick one"),
    (["--out-cases", "2"], "--out-cases only applies with --steady"),
    (["--steady", "--selection-seeds", "2"], "only apply with --classic"),
    (["--steady", "--cases", "0", "--out-cases", "0"], "not both 0"),
    (["--steady", "--fresh-seeds", "0"], "--fresh-seeds and --oracle-evals must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    argv = args if "--checkpoint" in args else [*args, "--checkpoint", str(tmp_path)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *argv, "--output", str(tmp_path / "o")],
                          cwd=REPO, env=ENV, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_classic_needs_a_classic_policy(checkpoint: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--classic", "--quick", "--checkpoint",
                           str(checkpoint), "--output", str(tmp_path / "o")],
                          cwd=REPO, env=ENV, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "acts on the 'ladder' catalogue" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_quick_classic_run_end_to_end(classic_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint = classic_checkpoint
    policy = load_policy(checkpoint)
    assert policy.env_config["episode_len"] == 8
    assert policy.env_steps_trained == 16  # 2 episodes × 8 steps
    out = tmp_path / "out"
    env = ENV
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--classic", "--quick", "--checkpoint", str(checkpoint),
         "--ppo-env-steps", "40", "--output", str(out)],
        cwd=REPO, env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    for scenario in SCENARIOS:
        assert f"**{scenario.name}**" in table
        assert str(scenario.first_seed) in table  # the held-out seeds are listed
    for method in ("reinforce", "reinforce_sampled", "ppo", "random_actions", "initial",
                   "istio_default", "random_9", "tpe_9", "random_81", "tpe_81", "oracle"):
        assert f"| {method} " in table, method
    assert table.count("Actions: reinforce: ") == len(SCENARIOS)
    for column in ("eval score", "goodput req/s", "failure %", "mean ms", "p99 ms"):
        assert column in table, column  # what users got beside the score
    results = json.loads((out / "results.json").read_text())
    assert results["ppo"]["env_steps"] >= 40 and results["ppo"]["trained_here"]
    case = results["scenarios"]["in_range"]["cases"][0]
    assert case["case_seed"] == SCENARIOS[0].first_seed
    assert len(case["fresh_load_seeds"]) == 3
    methods = case["methods"]
    assert methods["oracle"]["gap_closed"] in (None, pytest.approx(1.0))
    assert methods["reinforce"]["load_runs"] == 9  # reset + 8 steps
    assert len(methods["reinforce"]["actions"]) == 8
    for method in ("reinforce", "istio_default", "oracle"):
        assert methods[method]["goodput_rps"] > 0 and methods[method]["latency_mean_ms"] > 0
    assert (out / "score_vs_evals.png").stat().st_size > 10_000
    assert (out / "ppo_checkpoint" / "algorithm_state.pkl").is_file()
