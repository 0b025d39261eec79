"""experiments/evaluate.py: gap arithmetic, held-out seeds, and a real --quick run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests._scripts import REPO, load_script

SCRIPT = REPO / "experiments" / "evaluate.py"


ev = load_script("evaluate")


def test_gap_closed_arithmetic() -> None:
    # initial -500, oracle -400: a gap of 100 points
    assert ev.gap_closed(-450.0, -500.0, -400.0) == pytest.approx(0.5)
    assert ev.gap_closed(-400.0, -500.0, -400.0) == pytest.approx(1.0)
    assert ev.gap_closed(-500.0, -500.0, -400.0) == pytest.approx(0.0)
    assert ev.gap_closed(-550.0, -500.0, -400.0) == pytest.approx(-0.5)  # worse than the start
    assert ev.gap_closed(-380.0, -500.0, -400.0) == pytest.approx(1.2)  # beat the oracle
    # no gap, a negative gap, or a gap within the noise: undefined, not a made-up number
    assert ev.gap_closed(-450.0, -500.0, -500.0) is None
    assert ev.gap_closed(-450.0, -400.0, -500.0) is None
    assert ev.gap_closed(-450.0, -500.0, -490.0, min_gap=15.0) is None
    assert ev.gap_closed(-495.0, -500.0, -480.0, min_gap=15.0) == pytest.approx(0.25)


def test_held_out_case_seeds_are_disjoint_from_training_seeds() -> None:
    from rl.evaluation.episode import VALIDATION_FIRST_SEED, held_out_seeds

    cases = [s for sc in ev.SCENARIOS for s in ev.case_seeds(sc, 1000)]
    assert len(cases) == len(set(cases)), "two scenarios share a case seed"
    training = set()
    for sweep_seed in range(0, 100):
        training |= ev.training_seeds(sweep_seed, num_env_runners=8)
    assert ev.training_seeds(0, 2) == {0, 1, 2, 1_000_000, 1_000_001, 1_000_002}
    assert not training & set(cases)
    assert not set(held_out_seeds(1000)) & set(cases)  # pg_sweep's own evaluation seeds
    # ... and its validation seeds, which pick the best trial: a case there would be selected on
    assert not set(held_out_seeds(1000, VALIDATION_FIRST_SEED)) & set(cases)


def test_load_seed_ranges_never_overlap() -> None:
    search = {s for i in range(40) for s in ev.load_seeds(ev.SEARCH_SEED_BASE, i, 2000)}
    selection = {s for i in range(40) for s in ev.load_seeds(ev.SELECTION_SEED_BASE, i, 20)}
    fresh = {s for i in range(40) for s in ev.load_seeds(ev.FRESH_SEED_BASE, i, 20)}
    assert len(search) == 40 * 2000 and len(fresh) == 40 * 20
    assert not search & fresh and not search & selection and not selection & fresh
    with pytest.raises(ValueError, match="at most"):
        ev.load_seeds(ev.FRESH_SEED_BASE, 0, ev.SEED_STRIDE + 1)


def test_method_order_and_budget_names() -> None:
    names = ["oracle", "tpe_201", "random_actions", "random_21", "initial", "reinforce",
             "tpe_21", "random_201", "istio_default", "ppo", "reinforce_sampled"]
    assert ev.method_order(names) == ["reinforce", "reinforce_sampled", "ppo", "random_actions",
                                      "initial",
                                      "istio_default", "random_21", "tpe_21", "random_201",
                                      "tpe_201", "oracle"]
    assert ev.search_budget("tpe_201") == 201
    assert ev.search_budget("random_actions") is None


def test_bad_flags_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ev.EvaluateError, match="does not exist"):
        ev.default_checkpoint(tmp_path / "missing.json")
    with pytest.raises(ev.EvaluateError, match="fresh-seeds"):
        ev.settings_from_args(ev.parse_args(["--checkpoint", str(tmp_path), "--fresh-seeds",
                                             "1"]))
    with pytest.raises(ev.EvaluateError, match="not an RLlib Algorithm checkpoint"):
        ev.load_policy(tmp_path)


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
    policy = ev.load_policy(checkpoint)
    assert policy.env_config["episode_len"] == 4
    assert policy.env_steps_trained == 8  # 2 episodes × 4 steps
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--checkpoint", str(checkpoint),
         "--ppo-env-steps", "40", "--output", str(out)],
        cwd=REPO, env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    for scenario in ev.SCENARIOS:
        assert f"**{scenario.name}**" in table
        assert str(scenario.first_seed) in table  # the held-out seeds are listed
    for method in ("reinforce", "reinforce_sampled", "ppo", "random_actions", "initial",
                   "istio_default", "random_5", "tpe_5", "random_41", "tpe_41", "oracle"):
        assert f"| {method} " in table, method
    assert table.count("Actions: reinforce: ") == len(ev.SCENARIOS)
    results = json.loads((out / "results.json").read_text())
    assert results["ppo"]["env_steps"] >= 40 and results["ppo"]["trained_here"]
    case = results["scenarios"]["in_range"]["cases"][0]
    assert case["case_seed"] == ev.SCENARIOS[0].first_seed
    assert len(case["fresh_load_seeds"]) == 3
    methods = case["methods"]
    assert methods["oracle"]["gap_closed"] in (None, pytest.approx(1.0))
    assert methods["reinforce"]["load_runs"] == 5  # reset + 4 steps
    assert len(methods["reinforce"]["actions"]) == 4
    assert (out / "score_vs_evals.png").stat().st_size > 10_000
    assert (out / "ppo_checkpoint" / "algorithm_state.pkl").is_file()


def _result(score: float, curve: list[tuple[int, float]], healthy: bool = True,
            gap: float | None = None) -> Any:
    return ev.MethodResult(score=score, failure_pct=1.0, p99_ms=300.0, gap_closed=gap,
                           load_runs=curve[-1][0] if curve else 0, healthy_end=healthy,
                           curve=curve)


def test_tables_and_plot_handle_episodes_that_ended_early(tmp_path: Path) -> None:
    full = [(1, -500.0), (2, -480.0), (21, -450.0)]
    short = [(1, -600.0), (2, -900.0)]  # terminated (unhealthy) after one step
    results = [
        {"reinforce": _result(-450.0, full, gap=0.5), "initial": _result(-500.0, [], gap=0.0),
         "istio_default": _result(-470.0, []), "oracle": _result(-400.0, [], gap=1.0)},
        {"reinforce": _result(-900.0, short, healthy=False, gap=-3.0),
         "initial": _result(-600.0, [], gap=0.0), "istio_default": _result(-470.0, []),
         "oracle": _result(-500.0, [], gap=1.0)},
    ]
    assert ev._value_at(short, 21) == -900.0 and ev._value_at(full, 5) == -480.0
    table = ev.scenario_table(results)
    assert "| reinforce (1 unhealthy ends) | 11 |" in table  # median of 21 and 2 runs
    assert "| initial | 0 | -550 [-575, -525] |" in table
    assert "| istio_default | 0 | -470 [-470, -470] | 1.00 [1.00, 1.00] | 300 [300, 300] " \
           "| — | 1/2 |" in table  # REINFORCE beat the defaults in one case of two
    assert "gap closed (2/2 cases with a gap)" in table
    ev.plot_curves([("a", results), ("b", results), ("c", results)], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 5_000


def test_throughput_bare_layers_and_table() -> None:
    tp = load_script("throughput")
    sim = tp.time_simulator(users=5, steps=4)
    env = tp.time_mesh_env(users=5, steps=6)
    assert (sim.steps, env.steps) == (4, 6) and sim.wall_s > 0 and env.wall_s > 0
    two = tp.Layer("two runners", steps=100, wall_s=0.5, workers=2)
    assert two.steps_per_s == pytest.approx(200.0)
    assert two.ms_per_step == pytest.approx(5.0) and two.worker_ms_per_step == pytest.approx(10.0)
    text = tp.markdown([tp.Layer("sim", 100, 0.2), two], "cmd", "today", 5, (1.0, 2.0, 3.0))
    assert "| two runners | 100 | 0.5 | **200** | 5.00 | 10.00 | +8.00 | — |" in text
    assert sim.cpu_s is not None and sim.cpu_s > 0
    assert tp.median_round([tp.Layer("x", 1, w) for w in (3.0, 1.0, 2.0)]).wall_s == 2.0
    assert "`cmd`" in text and "load average 1.0 / 2.0" in text
