"""``scripts/train_variant.py`` end to end: one trial of the main job's configuration with the
script's settings, then its greedy policy and the references through held-out cases."""

from __future__ import annotations

import json
import subprocess
import sys

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
