"""The sweep script (experiments/pg_sweep.py): its errors, and a real --smoke run (the settings:
tests/rl/test_sweep.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.experiments._processes import run_script

_run = functools.partial(run_script, "pg_sweep", timeout_s=300)


def test_backend_that_cannot_start_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    # k8s is registered but there is no cluster (no kubeconfig, not in a pod) on CI machines.
    proc = _run("--smoke", "--backend", "k8s", "--output", str(tmp_path / "out"), timeout_s=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pg_sweep: error: backend 'k8s' cannot start a MeshEnv")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", ["nope", "SIM"])
def test_unknown_backend_is_a_one_line_error_from_the_registry(backend: str,
                                                                tmp_path: Path) -> None:
    proc = _run("--smoke", "--backend", backend, "--output", str(tmp_path / "o"), timeout_s=60)
    err = proc.stderr
    assert proc.returncode == 2
    # the registry's message: the backend, the known ones, the module that registers them
    assert err.startswith(f"pg_sweep: error: unknown backend {backend!r}") and err.count("\n") == 1
    assert "envs.backends.registry" in err and "sim" in err.split("known:")[1]
    assert not (tmp_path / "o").exists()


def _tensorboard_tags(trial_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in trial_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def check_smoke_outputs(out: Path) -> dict[str, Any]:
    """Assert a finished sweep's files are all there and consistent; return results.json."""
    results = json.loads((out / "results.json").read_text())
    settings = results["settings"]
    assert len(results["trials"]) == (settings["samples"] * len(settings["learning_rates"])
                                      * len(settings["late_weights"]))
    assert {(t["lr"], t["late_weight"]) for t in results["trials"]} == {
        (lr, w) for lr in settings["learning_rates"] for w in settings["late_weights"]}
    # every trial's env steps (bench_main_job.py's env steps per second of the sweep)
    assert all(t["env_steps"] >= t["iterations"] for t in results["trials"])
    best = results["trials"][0]
    assert best["trial"] == results["best"]["trial"]
    assert best["validation_score"] == max(t["validation_score"] for t in results["trials"])
    assert results["validation_seeds"][0] == 2_000_000
    held_out = results["held_out"]
    cases = held_out["cases"]
    assert len(cases) == settings["eval_episodes"]
    methods = {"policy", "istio_default", "tpe_201", "rule_based", "gateway_throttle",
               "keep_start"}
    assert all(set(c["runs"]) == methods for c in cases)
    assert all(c["seed"] >= 4_000_000 for c in cases)  # never a training or validation seed
    assert set(held_out["win_rates"]) == methods - {"policy"}
    text = (out / "results.md").read_text()
    for column in ("good %", "goodput", "failure %", "p99"):
        assert column in text, column
    # the trials table: what users got in training beside the ranking scores, for every trial
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| rank | trial"))
    columns = [c.strip() for c in lines[head].strip("|").split("|")]
    for row in lines[head + 2:head + 2 + len(results["trials"])]:
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
        assert float(cells["goodput req/s"]) > 0 and float(cells["mean ms"]) > 0, row
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rules_text = (out / "best_destination_rules.yaml").read_text()
    rules = [r for r in yaml.safe_load_all(rules_text) if r is not None]
    # the policy's last rules, or (its last configuration Istio's defaults) the note saying so
    assert all(r["kind"] == "DestinationRule" for r in rules)
    assert rules or rules_text.startswith("# Istio's defaults: ")
    trial_dir = Path(results["trials"][0]["path"])
    tags = _tensorboard_tags(trial_dir)
    for metric in ("eval_score_mean", "good_pct_mean", "failure_pct_mean", "unhealthy_end"):
        assert f"ray/tune/env_runners/{metric}" in tags, (metric, sorted(tags)[:20])
    return results


@pytest.mark.slow
def test_smoke_sweep_writes_everything_and_the_checkpoint_reproduces(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    proc = _run("--smoke", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = check_smoke_outputs(out)
    assert results["settings"]["learner"] == "critic"  # the default (rl.sweep.DEFAULT_LEARNER)
    assert results["best"]["env_config"]["catalogue"] == "setpoint_restore"

    # A fresh Algorithm.from_checkpoint of the best trial acts as the saved policy did: the
    # same actions through the first held-out case.
    import ray
    from ray.rllib.algorithms.algorithm import Algorithm

    from envs.actions import make_catalogue
    from envs.backends import make_backend
    from envs.scenarios import Scenario
    from envs.settings import EnvSettings
    from rl.controllers import PolicyController
    from rl.evaluation.closed_loop import run_scenario

    best = results["best"]
    env = EnvSettings.from_config(best["env_config"])
    catalogue = make_catalogue(env.catalogue, env.services)
    case = results["held_out"]["cases"][0]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algo = Algorithm.from_checkpoint(best["checkpoint"])
        backend = make_backend("sim")
        try:
            again = run_scenario(backend, Scenario.from_dict(case["scenario"]),
                                 PolicyController(algo.get_module(), catalogue), case["seed"],
                                 env.step_s, env.episode_len, catalogue)
        finally:
            backend.close()
            algo.stop()
    finally:
        ray.shutdown()
    saved = case["runs"]["policy"]
    assert [s.action for s in again.steps] == [s["action"] for s in saved["steps"]]
    assert again.summed_score == pytest.approx(saved["summed_score"])

    # Running again into the same directory refuses to overwrite; --resume continues it.
    proc = _run("--smoke", "--output", str(out), timeout_s=120)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    proc = _run("--smoke", "--resume", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_smoke_outputs(out)


@pytest.mark.slow
def test_smoke_sweep_of_the_group_learner_writes_everything(tmp_path: Path) -> None:
    out = tmp_path / "group"
    proc = _run("--smoke", "--learner", "group", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = check_smoke_outputs(out)
    assert results["settings"]["learner"] == "group"
    assert results["best"]["env_config"]["reward_mode"] == "absolute"
    assert results["best"]["env_config"]["catalogue"] == "setpoint"
    assert {t["lr"] for t in results["trials"]} == {1e-3}
    assert {t["late_weight"] for t in results["trials"]} == {0.5, 1.0}
