"""Custom metrics from the env's ``info`` at the end of every training episode.

They are logged through RLlib's MetricsLogger and appear in Tune's results and TensorBoard as
``env_runners/<name>`` (mean over the last ``metrics_num_episodes_for_smoothing`` episodes):

* ``failure_pct`` — request-weighted failure rate of the final step's load test, in %;
* ``p99_ms`` — the final step's p99 latency, in ms;
* ``score`` / ``eval_score`` — the final configuration's reward-weighted / fixed-weight score;
* ``score_gain`` / ``eval_score_gain`` — final minus the episode's initial configuration's
  score (> 0: the episode improved the mesh). ``eval_score_gain`` does not depend on the reward
  weights, so it ranks trials of a sweep over those weights;
* ``unhealthy_end`` — fraction of episodes that ended because the mesh stopped serving (the
  env's health check failed after an action). Such an episode's last step ran no load, so it has
  no failure rate, latency or score: it counts here and in none of the metrics above (nothing is
  made up for it);
* ``eval_score_mean`` — the mean evaluation score of the episode's steps 1..episode_len: what a
  controller delivers through a scenario of changing load and faults. Every step an unhealthy
  end cut off counts as the objective's worst score (``info["eval_worst"]``: -100 for the SLO
  objective, nothing served), so breaking the mesh never pays. Trials of a sweep are ranked by
  it;
* ``good_pct_mean`` / ``goodput_rps_mean`` / ``failure_pct_mean`` / ``latency_mean_ms_mean`` /
  ``latency_p99_ms_mean`` — what users felt, mean over the episode's healthy steps.

The same figures go to Ray's own metrics (``ray.util.metrics``), so that they show in the Ray
dashboard's metrics view when a Prometheus scrapes Ray (README, "Watching a run"), per backend
and replica:

* ``meshtune_env_steps_total`` — env steps taken (counter; env steps/s is its rate);
* ``meshtune_env_step_seconds`` — wall time of one env step: its load run, apply and health
  check (histogram);
* ``meshtune_failure_pct`` / ``meshtune_score`` / ``meshtune_eval_score`` — the last step's
  failure rate (%) and scores (gauges; a step that found the mesh unhealthy sets none of them).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.rllib.callbacks.callbacks import RLlibCallback

from envs.settings import DEFAULT_ENV_CONFIG

METRICS_WINDOW = 50

#: metric name -> how to read it from the final step's info dict.
REQUIRED_INFO_KEYS = ("failure_pct", "p99_ms", "score", "eval_score", "initial_score",
                      "initial_eval_score")
EPISODE_METRICS = ("failure_pct", "p99_ms", "score", "eval_score", "score_gain",
                   "eval_score_gain")


#: Per-step figures averaged over an episode's healthy steps (``<name>_mean``).
STEP_MEANS = ("good_pct", "goodput_rps", "failure_pct", "latency_mean_ms", "latency_p99_ms")


def trajectory_metrics(infos: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The episode-long metrics from every ``info`` of an episode (reset's first): the mean
    evaluation score of steps 1..``episode_len`` (steps cut off by an unhealthy end count as
    ``info["eval_worst"]``) and the :data:`STEP_MEANS` over the healthy steps.

    Raises:
        KeyError: the infos lack ``episode_len``, ``eval_worst`` or ``healthy``.
    """
    steps = list(infos[1:])
    if not steps:
        return {}
    missing = [k for k in ("episode_len", "eval_worst", "healthy") if k not in steps[-1]]
    if missing:
        raise KeyError(f"env info lacks {missing} (got keys {sorted(steps[-1])})")
    episode_len = int(steps[-1]["episode_len"])
    healthy = [i for i in steps if i["healthy"]]
    cut_off = episode_len - len(healthy)
    worst = float(steps[-1]["eval_worst"])
    out = {"eval_score_mean": (sum(float(i["eval_score"]) for i in healthy) + worst * cut_off)
           / episode_len}
    for key in STEP_MEANS:
        values = [float(i[key]) for i in healthy if i.get(key) is not None]
        if values:
            out[f"{key}_mean"] = sum(values) / len(values)
    return out


def episode_metrics(final_info: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of an episode from its last ``info``.

    ``{"unhealthy_end": 1.0}`` if the last step found the mesh unhealthy (``info["healthy"]``
    false), else ``unhealthy_end = 0`` and the :data:`EPISODE_METRICS`. Raises ``KeyError``
    naming the missing keys if the env does not report them.
    """
    if "healthy" not in final_info:
        raise KeyError(f"env info lacks 'healthy' (got keys {sorted(final_info)})")
    if not final_info["healthy"]:
        return {"unhealthy_end": 1.0}
    missing = [k for k in REQUIRED_INFO_KEYS if final_info.get(k) is None]
    if missing:
        raise KeyError(f"env info lacks {missing}; MeshEnv's info contract requires "
                       f"{list(REQUIRED_INFO_KEYS)} (got {dict(final_info)})")
    return {
        "unhealthy_end": 0.0,
        "failure_pct": float(final_info["failure_pct"]),
        "p99_ms": float(final_info["p99_ms"]),
        "score": float(final_info["score"]),
        "eval_score": float(final_info["eval_score"]),
        "score_gain": float(final_info["score"]) - float(final_info["initial_score"]),
        "eval_score_gain": float(final_info["eval_score"])
        - float(final_info["initial_eval_score"]),
    }


#: Bucket bounds of the step-time histogram, s: the simulator's ms to a cluster's minutes.
STEP_SECONDS_BOUNDARIES = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0,
                           300.0]


class RayMetrics:
    """The project's figures as Ray custom metrics (created in the process that reports them)."""

    TAGS = ("backend", "replica")

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.steps = Counter("meshtune_env_steps", description="env steps taken",
                             tag_keys=self.TAGS)
        self.step_seconds = Histogram(
            "meshtune_env_step_seconds", description="wall time of one env step, s",
            boundaries=STEP_SECONDS_BOUNDARIES, tag_keys=self.TAGS)
        self.gauges = {key: Gauge(f"meshtune_{key}", description=what, tag_keys=self.TAGS)
                       for key, what in (("failure_pct", "last step's failure rate, %"),
                                         ("score", "last step's reward score"),
                                         ("eval_score", "last step's evaluation score"))}

    def record_step(self, info: Mapping[str, Any], backend: str, seconds: float) -> None:
        """Count one step of ``backend``'s replica ``info["replica"]`` that took ``seconds``."""
        tags = {"backend": backend, "replica": str(info.get("replica", ""))}
        self.steps.inc(1.0, tags=tags)
        self.step_seconds.observe(seconds, tags=tags)
        if info.get("healthy"):
            for key, gauge in self.gauges.items():
                gauge.set(float(info[key]), tags=tags)


class MeshMetricsCallback(RLlibCallback):
    """Logs :func:`episode_metrics` of every finished episode, and every step's figures as Ray
    custom metrics (:class:`RayMetrics`, when Ray runs)."""

    def __init__(self) -> None:
        super().__init__()
        self._ray_metrics: RayMetrics | None = None
        self._last_t: dict[int, float] = {}

    def _exporter(self) -> RayMetrics | None:
        if self._ray_metrics is None and ray.is_initialized():
            self._ray_metrics = RayMetrics()
        return self._ray_metrics

    def on_episode_start(self, *, env_index: int = 0, **kwargs: Any) -> None:
        """Start the clock of ``env_index``'s first step."""
        self._last_t[env_index] = time.monotonic()

    def on_episode_step(self, *, episode: Any, env_runner: Any = None, env_index: int = 0,
                        **kwargs: Any) -> None:
        """Report the step's wall time and figures to Ray's metrics."""
        now = time.monotonic()
        seconds = now - self._last_t.get(env_index, now)
        self._last_t[env_index] = now
        exporter = self._exporter()
        if exporter is not None:
            config = getattr(env_runner, "config", None)
            env_config = getattr(config, "env_config", None) or {}
            backend = str(env_config.get("backend", DEFAULT_ENV_CONFIG["backend"]))
            exporter.record_step(episode.get_infos(-1), backend, seconds)

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None,
                       env_runner: Any = None, **kwargs: Any) -> None:
        """Read the episode's last info and log each metric (mean over a window of episodes:
        the config's ``metrics_num_episodes_for_smoothing``, else :data:`METRICS_WINDOW`)."""
        if metrics_logger is None:
            raise ValueError("MeshMetricsCallback needs RLlib's metrics_logger")
        config = getattr(env_runner, "config", None)
        window = int(getattr(config, "metrics_num_episodes_for_smoothing", METRICS_WINDOW))
        metrics = {**episode_metrics(episode.get_infos(-1)),
                   **trajectory_metrics(episode.get_infos())}
        for name, value in metrics.items():
            metrics_logger.log_value(name, value, reduce="mean", window=window)
