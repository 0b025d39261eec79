"""``Reinforce``: an RLlib Algorithm whose training step is one REINFORCE update.

Each ``training_step`` samples ``num_episodes_per_train_batch`` complete episodes split over all
env runners (in parallel), updates the policy once on all of them, then pushes the new weights
to the runners.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms import Algorithm
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rl.config import ReinforceConfig

#: Attribute set on an env runner after its first ``sample`` (see ``_sample_complete_episodes``).
_SAMPLED_BEFORE = "_reinforce_sampled_before"


def episodes_per_runner(num_episodes: int, num_runners: int) -> list[int]:
    """Split ``num_episodes`` over ``num_runners`` as evenly as possible (first ones get more)."""
    if num_runners < 1:
        raise ValueError(f"num_runners must be >= 1, got {num_runners}")
    base, extra = divmod(num_episodes, num_runners)
    return [base + (1 if i < extra else 0) for i in range(num_runners)]


class Reinforce(Algorithm):
    """REINFORCE (Williams 1992) on RLlib's new API stack."""

    @classmethod
    def get_default_config(cls) -> ReinforceConfig:
        """A fresh :class:`ReinforceConfig`."""
        return ReinforceConfig()

    def training_step(self) -> None:
        """Sample complete episodes from every env runner, update once, sync weights."""
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = self._sample_complete_episodes()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                    (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)},
            )
        self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)

        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group, inference_only=True)

    def _sample_complete_episodes(self) -> tuple[list[Any], list[dict[str, Any]]]:
        """``(episodes, per-runner metrics)``; uses the local runner only if there are no others."""
        num_remote = self.env_runner_group.num_remote_workers()
        counts = episodes_per_runner(self.config.num_episodes_per_train_batch, max(1, num_remote))

        def sample(runner: Any) -> tuple[list[Any], dict[str, Any]]:
            # Remote runners have worker_index 1..N, the local one 0.
            n = counts[max(runner.worker_index, 1) - 1]
            if getattr(runner, _SAMPLED_BEFORE, False):
                # RLlib resets the envs before sampling n episodes and, when config.seed is set,
                # re-seeds them with the *same* seed on every such call: every iteration would
                # replay the same episodes. Only the runner's first reset is seeded; later ones
                # continue the env's own generator (still deterministic).
                runner._needs_initial_reset = False
            episodes = runner.sample(num_episodes=n)
            setattr(runner, _SAMPLED_BEFORE, True)
            return episodes, runner.get_metrics()

        results = self.env_runner_group.foreach_env_runner(
            sample, local_env_runner=num_remote <= 0)
        episodes = [episode for eps, _ in results for episode in eps]
        return episodes, [metrics for _, metrics in results]
