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


def time_rllib(users: int, num_env_runners: int, sample_steps: int, train_iterations: int,
               rounds: int = 3, seed: int = 0) -> tuple[Layer, Layer]:
    """RLlib sampling and training throughput of the REINFORCE agent with ``num_env_runners``
    remote runners (see the module docstring). Ray must be initialised."""
    from envs.mesh_env import MeshEnv
    from rl.reinforce import ReinforceConfig

    episodes_per_batch = 4 * num_env_runners
    config = (
        ReinforceConfig()
        .environment(MeshEnv, env_config=env_config(users))
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=1,
                     num_cpus_per_env_runner=0.9)
        .learners(num_learners=0, num_cpus_per_learner=0.1)
        .resources(num_cpus_for_main_process=0.1)
        .training(num_episodes_per_train_batch=episodes_per_batch)
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    try:
        group = algo.env_runner_group
        per_runner = max(1, sample_steps // num_env_runners)
        # warm-up: Numba cache load, first episodes, torch init in every runner
        group.foreach_env_runner(lambda r: r.sample(num_timesteps=20), local_env_runner=False)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            counts = group.foreach_env_runner(
                lambda r: sum(len(e) for e in r.sample(num_timesteps=per_runner)),
                local_env_runner=False)
            samples.append(Layer(f"RLlib sampling, {num_env_runners} env runner"
                                 f"{'s' if num_env_runners > 1 else ''}", int(sum(counts)),
                                 time.perf_counter() - t0, num_env_runners))
        sample = median_round(samples)
        algo.train()  # warm-up iteration
        before = _lifetime_steps(algo.train())
        t1 = time.perf_counter()
        after = before
        for _ in range(train_iterations):
            after = _lifetime_steps(algo.train())
        train = Layer(f"RLlib training (REINFORCE), {num_env_runners} env runner"
                      f"{'s' if num_env_runners > 1 else ''}", after - before,
                      time.perf_counter() - t1, num_env_runners)
        return sample, train
    finally:
        algo.stop()


def _lifetime_steps(result: dict[str, Any]) -> int:
    return int(result["env_runners"]["num_env_steps_sampled_lifetime"])


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
