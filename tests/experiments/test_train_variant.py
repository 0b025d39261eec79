"""``scripts/train_variant.py`` end to end: one trial of the main job's configuration with the
script's settings, then its greedy policy and the references through held-out cases."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.experiments._processes import REPO, _script_env


def test_one_iteration_trains_evaluates_and_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_variant.py"), "--iterations", "1",
         "--cases", "1", "--step-s", "1", "--act-groups", "--num-epochs", "2",
         "--reward-mode", "vs_keep", "--gamma", "0"],
        cwd=REPO, env=_script_env(), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("{"))
    result = json.loads(line)
    assert result["args"]["act_groups"] is True and result["args"]["num_epochs"] == 2
    assert result["args"]["reward_mode"] == "vs_keep" and result["args"]["gamma"] == 0.0
    assert set(result["summed"]) == {"policy", "istio_default", "gateway_throttle",
                                     "front_end_h2_16"}
    assert result["cases"] == 1
    assert "| policy |" in out.stdout and "wins against Istio's defaults" in out.stdout


def test_one_iteration_with_the_action_critic_and_its_options() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_variant.py"), "--iterations", "1",
         "--cases", "1", "--step-s", "1", "--catalogue", "setpoint_restore",
         "--reward-mode", "vs_keep", "--gamma", "0", "--raw-returns",
         "--episodes-per-scenario", "1", "--action-critic", "--critic-replay", "1000",
         "--explore-mix", "0.2", "--inert-zero", "--entropy", "0.5"],
        cwd=REPO, env=_script_env(), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{")))
    assert result["args"]["action_critic"] is True and result["args"]["inert_zero"] is True
    assert result["args"]["critic_replay"] == 1000 and result["args"]["explore_mix"] == 0.2
    assert result["cases"] == 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--explore-mix", "0.1"], "add --action-critic"),
    (["--action-critic", "--inert-zero"], "add --reward-mode vs_keep"),
    (["--action-critic", "--critic-replay", "100"], "needs --gamma 0"),
])
def test_critic_flags_that_cannot_work_are_one_line(flags: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_variant.py"), *flags],
                         cwd=REPO, env=_script_env(), capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
