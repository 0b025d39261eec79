"""The PPO baseline: RLlib's PPO, untuned, trained on MeshEnv for a given number of env steps.

The held-out evaluation (``experiments/evaluate.py``) compares the REINFORCE agent with it:
RLlib's default MLP with a value head, lr 3e-4, up to 400-step batches, 4 epochs of 100-step
minibatches, entropy 0.01 — one configuration, where REINFORCE got a sweep over lr and reward
weight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def train_ppo(env_config: dict[str, Any], env_steps: int, seed: int, out_dir: Path
              ) -> tuple[Any, dict[str, Any]]:
    """Train RLlib's PPO on MeshEnv (``env_config``) for at least ``env_steps`` env steps, save
    the Algorithm checkpoint to ``out_dir`` and return its RLModule and a training summary."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from envs.mesh_env import MeshEnv
    from rl.callbacks import MeshMetricsCallback
    from rl.ray_setup import init_ray

    episode_len = int(env_config.get("episode_len", 20))
    batch = max(episode_len, min(400, env_steps))
    config = (
        PPOConfig()
        .environment(MeshEnv, env_config=env_config)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .training(lr=3e-4, gamma=0.99, train_batch_size_per_learner=batch,
                  minibatch_size=min(100, batch), num_epochs=4, entropy_coeff=0.01)
        .callbacks(MeshMetricsCallback)
        .debugging(seed=seed)
    )
    init_ray(log_to_driver=False, dashboard=False)
    t0 = time.monotonic()
    try:
        algo = config.build_algo()
        sampled, iterations, result = 0, 0, {}
        while sampled < env_steps:
            result = algo.train()
            iterations += 1
            sampled = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
        out_dir.mkdir(parents=True, exist_ok=True)
        algo.save(str(out_dir))
        module = algo.get_module()
        algo.stop()
    finally:
        ray.shutdown()
    summary = {"env_steps": sampled, "iterations": iterations, "train_batch": batch,
               "wall_s": time.monotonic() - t0,
               "last_eval_score_gain": result.get("env_runners", {}).get("eval_score_gain")}
    return module, summary
