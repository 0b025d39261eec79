"""REINFORCE on RLlib's new API stack: ``ReinforceConfig`` and ``Reinforce`` in one place.

Laid out like RLlib's own VPG example (``rllib/examples/algorithms/classes/vpg.py``): the config
names its algorithm and its learner; the learner (:mod:`rl.learner`) and the module
(:mod:`rl.module`) live beside it.

``Reinforce.training_step`` samples ``num_episodes_per_train_batch`` complete episodes split over
all env runners (in parallel), updates the policy once on all of them, then pushes the new
weights to the runners.

Settings beyond RLlib's own (``lr``, ``gamma``, ``train_batch_size``...), all set through
``ReinforceConfig.training(...)``:

* ``num_episodes_per_train_batch`` — complete episodes per gradient step, split over all env
  runners;
* ``normalize_returns`` — standardise the batch's returns-to-go (a constant baseline);
* ``per_step_baseline`` — first subtract the batch's mean return-to-go at each step index
  (a time-dependent baseline for fixed-length episodes);
* ``rank_returns`` — replace each return-to-go by its centred rank among the batch's at the same
  step index (fitness shaping, :func:`rl.connectors.per_step_centered_ranks`; robust to the
  heavy-tailed returns of the mesh; takes the place of ``per_step_baseline``);
* ``entropy_coeff`` — weight of the entropy bonus (0 = plain REINFORCE).

The policy network defaults to the original notebook's (see :mod:`rl.module`).
"""

from __future__ import annotations

from typing import Any, Self

from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from rl.module import SoftmaxPolicyModule

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


class ReinforceConfig(AlgorithmConfig):
    """Configuration of :class:`rl.reinforce.Reinforce` (new API stack, torch only)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or Reinforce)
        self.num_episodes_per_train_batch: int = 8
        self.normalize_returns: bool = True
        self.per_step_baseline: bool = True
        self.rank_returns: bool = False
        self.entropy_coeff: float = 0.0
        self.lr = 1e-3
        self.gamma = 0.99
        # Every train batch is made of whole episodes (REINFORCE needs the full return).
        self.batch_mode = "complete_episodes"
        self.num_env_runners = 1

    def training(self, *, num_episodes_per_train_batch: int | Any = NotProvided,
                 normalize_returns: bool | Any = NotProvided,
                 per_step_baseline: bool | Any = NotProvided,
                 rank_returns: bool | Any = NotProvided,
                 entropy_coeff: float | Any = NotProvided, **kwargs: Any) -> Self:
        """RLlib's training settings plus the REINFORCE ones (see the module docstring)."""
        super().training(**kwargs)
        if num_episodes_per_train_batch is not NotProvided:
            self.num_episodes_per_train_batch = num_episodes_per_train_batch
        if normalize_returns is not NotProvided:
            self.normalize_returns = normalize_returns
        if per_step_baseline is not NotProvided:
            self.per_step_baseline = per_step_baseline
        if rank_returns is not NotProvided:
            self.rank_returns = rank_returns
        if entropy_coeff is not NotProvided:
            self.entropy_coeff = entropy_coeff
        return self

    def validate(self) -> None:
        """RLlib's checks plus ours; a bad setting raises ``ValueError`` naming it."""
        super().validate()
        if not isinstance(self.num_episodes_per_train_batch, int) or \
                self.num_episodes_per_train_batch < 1:
            raise ValueError("num_episodes_per_train_batch must be a positive int, got "
                             f"{self.num_episodes_per_train_batch!r}")
        if self.num_episodes_per_train_batch < max(1, self.num_env_runners):
            raise ValueError(
                f"num_episodes_per_train_batch ({self.num_episodes_per_train_batch}) must be at "
                f"least num_env_runners ({self.num_env_runners}) so every runner samples")
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        if self.batch_mode != "complete_episodes":
            raise ValueError(f"REINFORCE needs batch_mode='complete_episodes', "
                             f"got {self.batch_mode!r}")
        if self.framework_str != "torch":
            raise ValueError(f"only framework='torch' is supported, got {self.framework_str!r}")

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        """The notebook's softmax policy (:data:`rl.module.DEFAULT_POLICY_CONFIG`), overridable via
        ``.rl_module(model_config=...)``.

        The spec carries no ``model_config`` of its own: RLlib gives a spec's own settings
        priority over the config's ``model_config``, so one here would silently override the
        user's. The module fills in the defaults for keys the user does not set.
        """
        return RLModuleSpec(module_class=SoftmaxPolicyModule)

    def get_default_learner_class(self) -> type:
        """:class:`rl.learner.ReinforceTorchLearner`."""
        from rl.learner import ReinforceTorchLearner

        return ReinforceTorchLearner
