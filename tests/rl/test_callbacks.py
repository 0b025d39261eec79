"""Custom metrics from the env's info (rl/callbacks.py)."""

from __future__ import annotations

import os
import time
import urllib.request
from typing import Any

import pytest

from envs.mesh_env import MeshEnv
from rl.callbacks import EPISODE_METRICS, MeshMetricsCallback, episode_metrics

INFO = {"healthy": True, "failure_pct": 2.5, "p99_ms": 310.0, "score": -40.0,
        "eval_score": -60.0, "initial_score": -55.0, "initial_eval_score": -90.0}


def test_gains_are_final_minus_initial() -> None:
    m = episode_metrics(INFO)
    assert m["eval_score_gain"] == pytest.approx(30.0)
    assert m["score_gain"] == pytest.approx(15.0)
    assert (m["failure_pct"], m["p99_ms"], m["unhealthy_end"]) == (2.5, 310.0, 0.0)
    assert set(EPISODE_METRICS) <= set(m)


def test_unhealthy_end_has_no_made_up_scores() -> None:
    info = {**INFO, "healthy": False, "failure_pct": None, "p99_ms": None, "score": None,
            "eval_score": None}
    assert episode_metrics(info) == {"unhealthy_end": 1.0}


@pytest.mark.parametrize("key", ["eval_score", "initial_eval_score", "healthy"])
def test_missing_info_key_is_named(key: str) -> None:
    info = {k: v for k, v in INFO.items() if k != key}
    with pytest.raises(KeyError, match=key):
        episode_metrics(info)


class _Logger:
    def __init__(self) -> None:
        self.logged: dict[str, tuple[float, dict[str, Any]]] = {}

    def log_value(self, key: str, value: float, **kwargs: Any) -> None:
        self.logged[key] = (value, kwargs)


class _Episode:
    def get_infos(self, index: int) -> dict[str, Any]:
        assert index == -1
        return INFO


class _Runner:
    class config:  # noqa: N801 - stands in for an AlgorithmConfig attribute
        metrics_num_episodes_for_smoothing = 7


def test_callback_logs_every_metric_as_a_windowed_mean() -> None:
    logger = _Logger()
    MeshMetricsCallback().on_episode_end(episode=_Episode(), metrics_logger=logger,
                                         env_runner=_Runner(), env_index=0)
    assert logger.logged["eval_score_gain"][0] == pytest.approx(30.0)
    assert all(kw == {"reduce": "mean", "window": 7} for _, kw in logger.logged.values())


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


@pytest.mark.slow
def test_ray_custom_metrics_are_exported_per_replica() -> None:
    """A real local Ray: one training iteration with a remote env runner; its steps show up at
    the node's Prometheus endpoint as meshtune_* metrics, tagged with backend and replica."""
    import ray

    from rl.reinforce import ReinforceConfig

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        algo = (ReinforceConfig()
                .environment(MeshEnv, env_config={"episode_len": 3, "users_range": (3, 3),
                                                  "requests_per_user": 20})
                .env_runners(num_env_runners=1)
                .training(num_episodes_per_train_batch=2)
                .callbacks(MeshMetricsCallback)
                .debugging(seed=0)).build_algo()
        result = algo.train()
        steps = int(result["env_runners"]["num_env_steps_sampled_lifetime"])
        port = ray.nodes()[0]["MetricsExportPort"]
        deadline, text, counted = time.monotonic() + 60, "", []

        def counted_steps() -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in counted)

        while time.monotonic() < deadline:  # Ray reports its metrics every second here
            text = _scrape(f"http://127.0.0.1:{port}/metrics")
            counted = [line for line in text.splitlines()
                       if line.startswith("ray_meshtune_env_steps") and 'backend="sim"' in line]
            if counted_steps() >= steps:
                break
            time.sleep(1)
        assert counted, text[-3000:]
        assert counted_steps() == steps
        assert 'replica="0"' in counted[0]
        assert "ray_meshtune_failure_pct" in text and "ray_meshtune_env_step_seconds_bucket" in text
        algo.stop()
    finally:
        ray.shutdown()
