"""REINFORCE with real Ray and a real local mesh (Envoy, Locust, Prometheus on 127.0.0.1): an env
runner SIGKILLed in the middle of sampling is restarted, its replica's lease is freed and leased
again, training goes on, and when the algorithm stops no mesh process and no port is left."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from envs.backends.lease import pid_alive
from envs.backends.local.ports import ReplicaPorts
from envs.backends.local.supervisor import busy_ports, read_state
from envs.mesh_env import MeshEnv

pytestmark = pytest.mark.slow

#: A small episode on the local mesh: 2 steps of 4 users × 25 requests.
LOCAL_ENV = {"backend": "local", "load": "classic", "users_range": (4, 4), "requests_per_user": 25,
             "episode_len": 2, "init": "istio_default"}


def _wait(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.5)
    return bool(predicate())


def test_a_killed_env_runner_on_the_local_mesh_is_restarted_and_leaves_nothing() -> None:
    import ray

    from rl.reinforce import MISSING_RUNNERS_KEY, ReinforceConfig

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ports = [p for k in (0, 1) for p in ReplicaPorts(k).all_ports()]
    try:
        algo = (ReinforceConfig()
                .environment(MeshEnv, env_config=LOCAL_ENV)
                .env_runners(num_env_runners=1, sample_timeout_s=600)
                .training(num_episodes_per_train_batch=1)
                .fault_tolerance(restart_failed_env_runners=True, max_num_env_runner_restarts=5,
                                 delay_between_env_runner_restarts_s=2.0)
                .debugging(seed=0)).build_algo()
        try:
            [runner_pid] = algo.env_runner_group.foreach_env_runner(
                lambda runner: os.getpid(), local_env_runner=False)
            state = read_state(0)
            assert state is not None, "the runner's MeshEnv started replica 0"
            supervisor = state.pid
            results: list[dict] = []
            train = threading.Thread(target=lambda: results.append(algo.train()))
            train.start()
            time.sleep(4.0)  # inside the episode: the reset's or a step's load run
            os.kill(runner_pid, signal.SIGKILL)
            train.join(timeout=900)
            assert not train.is_alive() and results
            # the dead runner's replica went down with it (its supervisor dies with its parent)
            assert _wait(lambda: not pid_alive(supervisor), 30)
            # the next iterations run on a restarted runner that leased a replica again
            after = [algo.train() for _ in range(2)]
            assert after[-1]["env_runners"]["num_env_steps_sampled_lifetime"] > 0
            [new_pid] = algo.env_runner_group.foreach_env_runner(
                lambda runner: os.getpid(), local_env_runner=False)
            assert new_pid != runner_pid
            # the killed round was counted, and the dead runner's lease was freed: the new
            # runner leased replica 0 again and started it afresh
            assert results[0][MISSING_RUNNERS_KEY] >= 1
            again = read_state(0)
            assert again is not None and again.pid != supervisor and read_state(1) is None
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    # closing the algorithm closed the new runner's MeshEnv: its replica is stopped
    assert _wait(lambda: busy_ports(ports) == [], 60), busy_ports(ports)
    assert read_state(0) is None and read_state(1) is None
