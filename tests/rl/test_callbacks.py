"""Custom metrics from the env's info (rl/callbacks.py)."""

from __future__ import annotations

import os
import time
import urllib.request
from typing import Any, ClassVar

import pytest

from envs.mesh_env import MeshEnv
from rl.callbacks import (
    EPISODE_METRICS,
    MeshMetricsCallback,
    episode_metrics,
    trajectory_metrics,
)

INFO = {"healthy": True, "failure_pct": 2.5, "p99_ms": 310.0, "score": -40.0,
        "eval_score": -60.0, "initial_score": -55.0, "initial_eval_score": -90.0,
        "episode_len": 4, "eval_worst": -100.0, "good_pct": 40.0}


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


def test_the_episode_mean_counts_steps_an_unhealthy_end_cut_off_as_the_worst() -> None:
    reset = {**INFO, "eval_score": -50.0}
    healthy = {**INFO, "eval_score": -10.0, "good_pct": 90.0}
    broken = {**INFO, "healthy": False, "eval_score": None, "good_pct": None}
    m = trajectory_metrics([reset, healthy, broken])  # episode_len 4: 3 steps lost
    assert m["eval_score_mean"] == pytest.approx((-10 - 3 * 100) / 4)
    assert m["good_pct_mean"] == pytest.approx(90.0)  # over the healthy steps only
    assert trajectory_metrics([reset]) == {}
    with pytest.raises(KeyError, match="eval_worst"):
        trajectory_metrics([reset, {k: v for k, v in INFO.items() if k != "eval_worst"}])


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
    """An episode of 4 steps: the reset's info, then 4 steps' (the last is :data:`INFO`)."""

    infos: ClassVar[list[dict[str, Any]]] = [
        {**INFO, "eval_score": -90.0}, {**INFO, "eval_score": -80.0},
        {**INFO, "eval_score": -70.0}, {**INFO, "eval_score": -70.0}, INFO]

    def get_infos(self, index: int | None = None) -> Any:
        return self.infos if index is None else self.infos[index]


class _Runner:
    class config:  # noqa: N801 - stands in for an AlgorithmConfig attribute
        metrics_num_episodes_for_smoothing = 7


def test_callback_logs_every_metric_as_a_windowed_mean() -> None:
    logger = _Logger()
    MeshMetricsCallback().on_episode_end(episode=_Episode(), metrics_logger=logger,
                                         env_runner=_Runner(), env_index=0)
    assert logger.logged["eval_score_gain"][0] == pytest.approx(30.0)
    assert logger.logged["eval_score_mean"][0] == pytest.approx((-80 - 70 - 70 - 60) / 4)
    assert logger.logged["good_pct_mean"][0] == pytest.approx(40.0)
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
                .environment(MeshEnv, env_config={"load": "classic", "episode_len": 3,
                                                         "users_range": (3, 3),
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
