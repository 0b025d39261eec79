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
* ``entropy_coeff`` — weight of the entropy bonus (0 = plain REINFORCE);
* ``learned_baseline`` — subtract the module's value head ``V(s)`` from the (shaped)
  returns-to-go and train it by MSE (:mod:`rl.learner`); off by default;
* ``vf_loss_coeff`` — weight of that MSE in the loss.

The policy network defaults to the original notebook's (see :mod:`rl.module`).
"""

from __future__ import annotations

import time
from typing import Any, Self

import gymnasium as gym
from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
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

#: Metric: env runners whose episodes were missing from an iteration (died or timed out).
MISSING_RUNNERS_KEY = "env_runners_missing"


class SeedOnce(gym.vector.VectorWrapper):
    """Passes a reset's seed to the envs on their first reset only; later resets continue the
    envs' own generators (still deterministic).

    RLlib resets the envs before every ``sample(num_episodes=n)`` and, when ``config.seed`` is
    set, re-seeds them with the *same* seed each time: every iteration would replay the same
    episodes. Wrapping the runner's vector env (as RLlib itself wraps it in ``DictInfoToList``)
    keeps the first, seeded reset and drops the seed from the later ones.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self._reset_before = False

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> Any:
        """Reset the envs; ``seed`` is passed on only the first time."""
        if self._reset_before:
            seed = None
        self._reset_before = True
        return self.env.reset(seed=seed, options=options)


class ReinforceEnvRunner(SingleAgentEnvRunner):
    """RLlib's single-agent env runner whose envs are seeded once (:class:`SeedOnce`)."""

    def make_env(self) -> None:
        """RLlib's env, wrapped in :class:`SeedOnce` (RLlib calls this again on re-creation)."""
        super().make_env()
        self.env = SeedOnce(self.env)


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
        """``(episodes, per-runner metrics)`` from the healthy env runners (the local one only
        if there are no remote ones).

        The batch's episodes are split over the runners that are healthy now. A runner that
        dies while sampling is marked unhealthy by RLlib and its share is missing from this
        batch; when every runner died, or none is healthy, this waits for RLlib to restore
        them (``restart_failed_env_runners``; at most ``env_runner_restore_timeout_s``) and
        samples again, so an iteration never updates on nothing. Each runner gets
        ``sample_timeout_s`` to return; a batch in which none returned in time, and none died,
        is an error.
        """
        group = self.env_runner_group
        remote = group.num_remote_env_runners() > 0
        deadline = time.monotonic() + float(self.config.env_runner_restore_timeout_s)
        while True:
            ids = group.healthy_env_runner_ids() if remote else [0]
            if not ids:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "no healthy env runner to sample from: none could be restored within "
                        f"env_runner_restore_timeout_s={self.config.env_runner_restore_timeout_s}")
                self.restore_env_runners(group)
                time.sleep(1.0)
                continue
            share = dict(zip(ids, episodes_per_runner(
                self.config.num_episodes_per_train_batch, len(ids)), strict=True))

            def sample(runner: Any, share: dict[int, int] = share
                       ) -> tuple[list[Any], dict[str, Any]]:
                episodes = runner.sample(num_episodes=share[runner.worker_index])
                return episodes, runner.get_metrics()

            results = group.foreach_env_runner(sample, local_env_runner=not remote,
                                               timeout_seconds=self.config.sample_timeout_s)
            died = remote and len(group.healthy_env_runner_ids()) < len(ids)
            # Runners that died or timed out this round (their episodes are missing).
            self.metrics.log_value(MISSING_RUNNERS_KEY, len(ids) - len(results), reduce="sum")
            if results:
                episodes = [episode for eps, _ in results for episode in eps]
                return episodes, [metrics for _, metrics in results]
            if not died:
                raise RuntimeError(
                    f"no env runner returned its episodes within sample_timeout_s="
                    f"{self.config.sample_timeout_s} s (raise it with "
                    f".env_runners(sample_timeout_s=...))")

class ReinforceConfig(AlgorithmConfig):
    """Configuration of :class:`rl.reinforce.Reinforce` (new API stack, torch only)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or Reinforce)
        self.num_episodes_per_train_batch: int = 8
        self.normalize_returns: bool = True
        self.per_step_baseline: bool = True
        self.rank_returns: bool = False
        self.entropy_coeff: float = 0.0
        self.learned_baseline: bool = False
        self.vf_loss_coeff: float = 1.0
        self.lr = 1e-3
        self.gamma = 0.99
        # Every train batch is made of whole episodes (REINFORCE needs the full return).
        self.batch_mode = "complete_episodes"
        self.num_env_runners = 1
        # Env runners whose envs are seeded once, not at every sample (see SeedOnce).
        self.env_runner_cls = ReinforceEnvRunner

    def training(self, *, num_episodes_per_train_batch: int | Any = NotProvided,
                 normalize_returns: bool | Any = NotProvided,
                 per_step_baseline: bool | Any = NotProvided,
                 rank_returns: bool | Any = NotProvided,
                 entropy_coeff: float | Any = NotProvided,
                 learned_baseline: bool | Any = NotProvided,
                 vf_loss_coeff: float | Any = NotProvided, **kwargs: Any) -> Self:
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
        if learned_baseline is not NotProvided:
            self.learned_baseline = learned_baseline
        if vf_loss_coeff is not NotProvided:
            self.vf_loss_coeff = vf_loss_coeff
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
        if not isinstance(self.learned_baseline, bool):
            raise ValueError(f"learned_baseline must be a bool, got {self.learned_baseline!r}")
        if not self.vf_loss_coeff >= 0:
            raise ValueError(f"vf_loss_coeff must be >= 0, got {self.vf_loss_coeff}")
        if self.batch_mode != "complete_episodes":
            raise ValueError(f"REINFORCE needs batch_mode='complete_episodes', "
                             f"got {self.batch_mode!r}")
        if self.framework_str != "torch":
            raise ValueError(f"only framework='torch' is supported, got {self.framework_str!r}")

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        """``value_head`` follows ``learned_baseline`` (a user's ``model_config`` overrides it)."""
        return {**super()._model_config_auto_includes, "value_head": self.learned_baseline}

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
