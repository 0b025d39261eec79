"""Timing env steps through each layer (bare simulator, bare MeshEnv, RLlib sampling and
training): the measurements behind ``experiments/throughput.py`` and its table.

Steps/s are wall-clock figures on a shared machine: the command times the layers side by side in
one run (rounds interleaved, the median round kept) so their ratios hold.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Layer:
    """One measured layer.

    Attributes:
        name: what was timed.
        steps: env steps (simulator runs for the bare simulator) completed in the timed part.
        wall_s: wall time of the timed part, s.
        workers: processes stepping envs in parallel (env runners; 1 for the bare layers).
        cpu_s: CPU time of this process over the timed part, s (bare layers only; None when
            the work ran in other processes).
    """

    name: str
    steps: int
    wall_s: float
    workers: int = 1
    cpu_s: float | None = None

    @property
    def steps_per_s(self) -> float:
        """Steps per second of wall time."""
        return self.steps / self.wall_s

    @property
    def ms_per_step(self) -> float:
        """Wall milliseconds per step."""
        return 1000.0 * self.wall_s / self.steps

    @property
    def worker_ms_per_step(self) -> float:
        """Milliseconds one worker spends per step (wall × workers / steps): the layer's cost
        per step, comparable across runner counts."""
        return self.ms_per_step * self.workers


def median_round(rounds: list[Layer]) -> Layer:
    """The round with the median wall time (the machine is shared: one round can be slowed by
    other jobs, and the median is robust to that)."""
    if not rounds:
        raise ValueError("no rounds to take the median of")
    return sorted(rounds, key=lambda layer: layer.wall_s)[len(rounds) // 2]


def env_config(users: int) -> dict[str, Any]:
    """MeshEnv config of every layer: fixed load, the notebook's random initial configuration."""
    return {"users_range": (users, users), "init": "classic_random", "load_draw": "per_env",
            "seed": 0}


def time_simulator(users: int, steps: int) -> Layer:
    """``SimMesh.run_load`` ``steps`` times (after one warm-up run), Istio defaults."""
    from envs.backends.base import LoadSpec
    from envs.backends.sim import SimMesh
    from envs.sockshop import HATCH_RATE_PER_S

    mesh = SimMesh()
    load = LoadSpec(users=users, requests=80 * users, hatch_rate_per_s=HATCH_RATE_PER_S)
    mesh.run_load(load, seed=0)
    t0, c0 = time.perf_counter(), time.process_time()
    for seed in range(steps):
        mesh.run_load(load, seed=seed)
    return Layer("bare simulator (SimMesh.run_load)", steps, time.perf_counter() - t0,
                 cpu_s=time.process_time() - c0)


def time_mesh_env(users: int, steps: int, seed: int = 0) -> Layer:
    """``MeshEnv.step`` ``steps`` times with seeded random actions (resets included)."""
    from envs.mesh_env import MeshEnv

    env = MeshEnv(env_config(users))
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=seed)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                env.reset()
        return Layer("bare MeshEnv (step, random actions)", steps, time.perf_counter() - t0,
                     cpu_s=time.process_time() - c0)
    finally:
        env.close()


#: Episodes per REINFORCE update in the training layers: the main job's
#: (``rl.sweep.sweep_settings``), split over the runners.
TRAIN_EPISODES_PER_BATCH = 16


def rllib_config(users: int, num_env_runners: int, envs_per_runner: int, seed: int = 0,
                 cpus_per_runner: float = 0.9) -> Any:
    """The REINFORCE agent as the main job trains it (its callbacks; ``TRAIN_EPISODES_PER_BATCH``
    episodes per update), ``envs_per_runner`` envs per remote runner, on :func:`env_config`;
    ``cpus_per_runner`` is what Ray reserves for each runner (a reservation, not a limit)."""
    from envs.mesh_env import MeshEnv
    from rl.callbacks import MeshMetricsCallback
    from rl.reinforce import ReinforceConfig

    return (
        ReinforceConfig()
        .environment(MeshEnv, env_config=env_config(users))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=envs_per_runner,
                     num_cpus_per_env_runner=cpus_per_runner)
        .learners(num_learners=0, num_cpus_per_learner=0.1)
        .resources(num_cpus_for_main_process=0.1)
        .training(num_episodes_per_train_batch=TRAIN_EPISODES_PER_BATCH, rank_returns=True,
                  entropy_coeff=0.01)
        .callbacks(MeshMetricsCallback)
        .debugging(seed=seed)
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def time_rllib(users: int, num_env_runners: int, sample_steps: int, train_iterations: int,
               rounds: int = 3, seed: int = 0,
               envs_per_runner: tuple[int, ...] = (1,)) -> list[Layer]:
    """RLlib sampling and training throughput of the REINFORCE agent with ``num_env_runners``
    remote runners, for each number of envs per runner in ``envs_per_runner`` (see the module
    docstring): ``[sampling, training]`` per value, in order. The variants are built side by
    side and timed round by round in turn, so a burst of other jobs hits all alike; the
    median round is kept. Training counts the env steps of the episodes each update trained on
    (steps an env took past its quota of episodes are sampled but not trained on, so not
    counted). Ray must be initialised."""
    # Every variant's runners exist at once (only one variant steps at a time): their CPU
    # reservations must fit in the 2 CPUs together, or Ray waits forever for the last ones.
    cpus = 1.8 / (num_env_runners * len(envs_per_runner))
    algos = [rllib_config(users, num_env_runners, k, seed, cpus).build_algo()
             for k in envs_per_runner]
    try:
        per_runner = max(1, sample_steps // num_env_runners)
        samples: list[list[Layer]] = [[] for _ in algos]
        trains: list[list[Layer]] = [[] for _ in algos]
        for algo in algos:
            # warm-up: Numba cache load, first episodes, torch init in every runner; one update
            algo.env_runner_group.foreach_env_runner(lambda r: r.sample(num_timesteps=20),
                                                     local_env_runner=False)
            algo.train()
        for _ in range(rounds):
            for i, (algo, k) in enumerate(zip(algos, envs_per_runner, strict=True)):
                t0 = time.perf_counter()
                counts = algo.env_runner_group.foreach_env_runner(
                    lambda r: sum(len(e) for e in r.sample(num_timesteps=per_runner)),
                    local_env_runner=False)
                samples[i].append(Layer(
                    f"RLlib sampling, {_plural(num_env_runners, 'env runner')} × "
                    f"{_plural(k, 'env')}", int(sum(counts)), time.perf_counter() - t0,
                    num_env_runners))
            for i, (algo, k) in enumerate(zip(algos, envs_per_runner, strict=True)):
                trained = 0
                t1 = time.perf_counter()
                for _ in range(train_iterations):
                    trained += _trained_steps(algo.train())
                trains[i].append(Layer(
                    f"RLlib training (REINFORCE), {_plural(num_env_runners, 'env runner')} × "
                    f"{_plural(k, 'env')}", trained, time.perf_counter() - t1, num_env_runners))
        return [layer for pair in zip(samples, trains, strict=True)
                for layer in (median_round(pair[0]), median_round(pair[1]))]
    finally:
        for algo in algos:
            algo.stop()


def _trained_steps(result: dict[str, Any]) -> int:
    """Env steps in the batch of one training iteration (all modules)."""
    return int(result["learners"]["__all_modules__"]["num_env_steps_trained"])


def markdown(layers: list[Layer], command: str, stamp: str, users: int, load: tuple,
             load_end: tuple | None = None) -> str:
    """The table: steps/s, ms/step, and the cost each layer adds to the bare simulator's."""
    sim = layers[0]
    lines = [f"### {stamp} — `{command}`", "",
             f"One step = one load run of {users} users × 80 requests ({80 * users} requests) "
             f"on the simulator. Machine: {os.cpu_count()} CPUs shared with other jobs, load "
             f"average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the start"
             + (f", {load_end[0]:.1f} / {load_end[1]:.1f} at the end" if load_end else "")
             + ".", "",
             "| layer | steps | wall s | **steps/s** | wall ms/step | ms/step per runner "
             "| per-runner ms/step over the bare simulator | CPU ms/step (this process) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for layer in layers:
        extra = "—" if layer is sim else f"{layer.worker_ms_per_step - sim.ms_per_step:+.2f}"
        cpu = "—" if layer.cpu_s is None else f"{1000.0 * layer.cpu_s / layer.steps:.2f}"
        lines.append(f"| {layer.name} | {layer.steps} | {layer.wall_s:.1f} "
                     f"| **{layer.steps_per_s:.0f}** | {layer.ms_per_step:.2f} "
                     f"| {layer.worker_ms_per_step:.2f} | {extra} | {cpu} |")
    return "\n".join(lines)
