"""``scripts/critic_check.py``: the critic's Q beside the true one-step effect, on a module built
here (an untrained critic: the true effects do not depend on it), and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from tests.experiments._processes import REPO, _script_env, load_script

critic_check = load_script(REPO / "scripts" / "critic_check.py")
ENV_CONFIG = {"catalogue": "setpoint_restore", "episode_len": 8, "step_s": 5.0}


def _critic(q_head: bool = True) -> object:
    from envs.mesh_env import MeshEnv
    from rl.policies import inert_acts, mesh_layout
    from rl.shared_module import SharedServiceModule

    env = MeshEnv(ENV_CONFIG)
    try:
        spaces = env.observation_space, env.action_space
    finally:
        env.close()
    torch.manual_seed(0)
    return RLModuleSpec(module_class=SharedServiceModule, observation_space=spaces[0],
                        action_space=spaces[1],
                        model_config={**mesh_layout(ENV_CONFIG), "hidden": [16],
                                      "q_head": q_head, "inert_acts": inert_acts(ENV_CONFIG)}
                        ).build()


def test_q_beside_the_true_effect_at_calm_and_at_overload() -> None:
    """At Istio's defaults the restore changes nothing: Q and the effect are exactly 0. The
    front-end's cap does nothing at 30 req/s and earns tens of points at 180 req/s (the
    simulator's own numbers, whatever the critic says); the Q column is the module's own."""
    module = _critic()
    rows = critic_check.check_states(module, ENV_CONFIG, ["istio_default"], [30.0, 180.0],
                                     [1], ["front-end"])
    calm, overload = rows
    assert calm.values["restore"] == (0.0, 0.0) == overload.values["restore"]
    assert calm.values["front-end cap"][1] == 0.0
    assert overload.values["front-end cap"][1] > 10.0
    from envs.mesh_env import MeshEnv
    from envs.scenarios import steady

    env = MeshEnv({**ENV_CONFIG, "reward_mode": "vs_keep", "load_seed": "per_episode"})
    try:
        obs, _ = env.reset(seed=1, options={"scenario": steady(180.0, 8, name="s")})
    finally:
        env.close()
    index = next(a for a in range(len(env.catalogue))
                 if env.catalogue.describe(a) == "front-end: http.http2MaxRequests set 16")
    with torch.no_grad():
        q = module.compute_action_values({Columns.OBS: torch.as_tensor(obs[None])})[0]
    assert overload.values["front-end cap"][0] == pytest.approx(float(q[index]))
    n, r, mae = critic_check.agreement(rows)
    pairs = [v for row in rows for k, v in row.values.items() if k != "greedy"]
    assert n == len(pairs) == 4
    assert mae == pytest.approx(sum(abs(q - t) for q, t in pairs) / 4)
    assert -1.0 <= r <= 1.0
    exact = [critic_check.Row("s", 1.0, 1, {"a": (2.0 * t, t), "greedy": (9.0, 0.0)}, "x")
             for t in (0.0, 1.0, 5.0)]
    assert critic_check.agreement(exact)[1] == pytest.approx(1.0)  # linear in the truth
    table = critic_check.table(rows)
    assert table.count("\n") == 3 and "| istio_default | 180 | 1 |" in table


def test_a_module_without_a_critic_or_an_unknown_service_is_named() -> None:
    with pytest.raises(ValueError, match="has no action critic"):
        critic_check.check_states(_critic(q_head=False), ENV_CONFIG, ["istio_default"], [30.0],
                                  [1], ["front-end"])
    with pytest.raises(ValueError, match=r"no action 'nosuch: http\.http2MaxRequests set 16'"):
        critic_check.check_states(_critic(), ENV_CONFIG, ["istio_default"], [30.0], [1],
                                  ["nosuch"])


@pytest.mark.parametrize(("args", "message"), [
    ([], "is not an RLlib Algorithm checkpoint"),
    (["--rates", "-5"], "--rates must be positive"),
    (["--starts", "nowhere"], "invalid choice: 'nowhere'"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "critic_check.py"),
                          str(tmp_path), *args], cwd=REPO, env=_script_env(),
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].count(message) == 1
