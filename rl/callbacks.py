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
  made up for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

METRICS_WINDOW = 50

#: metric name -> how to read it from the final step's info dict.
REQUIRED_INFO_KEYS = ("failure_pct", "p99_ms", "score", "eval_score", "initial_score",
                      "initial_eval_score")
EPISODE_METRICS = ("failure_pct", "p99_ms", "score", "eval_score", "score_gain",
                   "eval_score_gain")


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


class MeshMetricsCallback(RLlibCallback):
    """Logs :func:`episode_metrics` of every finished episode."""

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None,
                       env_runner: Any = None, **kwargs: Any) -> None:
        """Read the episode's last info and log each metric (mean over a window of episodes:
        the config's ``metrics_num_episodes_for_smoothing``, else :data:`METRICS_WINDOW`)."""
        if metrics_logger is None:
            raise ValueError("MeshMetricsCallback needs RLlib's metrics_logger")
        config = getattr(env_runner, "config", None)
        window = int(getattr(config, "metrics_num_episodes_for_smoothing", METRICS_WINDOW))
        for name, value in episode_metrics(episode.get_infos(-1)).items():
            metrics_logger.log_value(name, value, reduce="mean", window=window)
