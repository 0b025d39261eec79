"""``scripts/train_variant.py`` end to end: one trial of the main job's configuration with the
script's settings, then its greedy policy and the references through held-out cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests._unwritable import unwritable_path
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
    # what users got sits beside every score, one row per method
    head = next(x for x in out.stdout.splitlines() if x.startswith("| method |"))
    for column in ("summed score", "good %", "goodput req/s", "failure %", "mean ms", "p99 ms"):
        assert column in head
    assert {x.split("|")[1].strip() for x in out.stdout.splitlines()
            if x.startswith("| ") and not x.startswith("| method")} == set(result["summed"])
    assert "wins against Istio's defaults" in out.stdout


def test_one_iteration_with_the_action_critic_saves_a_checkpoint_evaluate_reads(
        tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_variant.py"), "--iterations", "1",
         "--cases", "1", "--step-s", "1", "--catalogue", "setpoint_restore",
         "--reward-mode", "vs_keep", "--gamma", "0", "--raw-returns",
         "--episodes-per-scenario", "1", "--action-critic", "--critic-replay", "1000",
         "--explore-mix", "0.2", "--inert-zero", "--entropy", "0.5", "--save", str(ckpt)],
        cwd=REPO, env=_script_env(), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{")))
    assert result["args"]["action_critic"] is True and result["args"]["inert_zero"] is True
    assert result["args"]["critic_replay"] == 1000 and result["args"]["explore_mix"] == 0.2
    assert result["cases"] == 1
    # the checkpoint is the trained policy: read back, it takes the greedy actions the script
    # printed for the same case
    read = subprocess.run(
        [sys.executable, "-c", _REPLAY, str(ckpt)], cwd=REPO, env=_script_env(),
        capture_output=True, text=True, timeout=600, check=False)
    assert read.returncode == 0, read.stderr[-2000:]
    assert read.stdout.strip().splitlines()[-1] == result["per_case"][0]["actions"]
    # scripts/rank_checkpoints.py reads it too: one row, finite numbers, no correlation of one
    ranked = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "rank_checkpoints.py"), str(ckpt),
         "--validation-episodes", "2", "--cases", "1"],
        cwd=REPO, env=_script_env(), capture_output=True, text=True, timeout=600, check=False)
    assert ranked.returncode == 0, ranked.stderr[-2000:]
    rows = [x for x in ranked.stdout.splitlines() if x.startswith("| `")]
    assert len(rows) == 1 and str(ckpt) in rows[0]
    assert all(math.isfinite(float(c)) for c in rows[0].split("|")[2:-1])
    assert "over 1 checkpoints: nan" in ranked.stdout


#: Loads a checkpoint with ``rl.evaluation.checkpoint.load_policy`` and prints the greedy
#: policy's actions through the first held-out case, in ``train_variant``'s short labels.
_REPLAY = """
import sys
sys.path.insert(0, "scripts")
import rl
from envs.actions import make_catalogue
from rl.controllers import PolicyController
from rl.evaluation.checkpoint import load_policy
from rl.evaluation.scenario_eval import evaluate_methods, held_out_plan
from train_variant import _short
ck = load_policy(sys.argv[1])
catalogue = make_catalogue(ck.env_config["catalogue"])
runs = evaluate_methods(held_out_plan(1, 20), {"policy": lambda: PolicyController(ck.module,
                        catalogue)}, 10.0, 20, catalogue, log=lambda _: None)
print(" ".join(_short(catalogue, s.action) for s in runs["policy"][0].steps
               if s.action is not None))
"""


def test_an_unwritable_save_directory_is_one_line_before_training(tmp_path: Path) -> None:
    where = unwritable_path(tmp_path, "ck")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_variant.py"),
                          "--save", str(where)],
                         cwd=REPO, env=_script_env(), capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2
    assert f"--save {where}: cannot write there" in out.stderr
    assert "Traceback" not in out.stderr and "[train]" not in out.stdout


@pytest.mark.parametrize(("flags", "message"), [
    (["--explore-mix", "0.1"], "add --action-critic"),
    (["--action-critic", "--inert-zero"], "add --reward-mode vs_keep"),
    (["--action-critic", "--critic-replay", "100"], "needs --gamma 0"),
    (["--change-cost", "1"], "--change-cost: change_cost is charged against not acting: it "
                             "needs reward mode 'vs_keep', got 'absolute'"),
    (["--q-scale", "10"], "add --action-critic"),
    (["--action-critic", "--q-scale", "0"], "--q-scale: q_scale must be a finite number > 0"),
    (["--reward-mode", "vs_keep", "--change-cost", "-1"],
     "--change-cost: change_cost must be a finite number >= 0"),
])
def test_critic_flags_that_cannot_work_are_one_line(flags: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "train_variant.py"), *flags],
                         cwd=REPO, env=_script_env(), capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
