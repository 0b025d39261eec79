"""``ReinforceConfig``: the AlgorithmConfig of the REINFORCE agent.

Settings beyond RLlib's own (``lr``, ``gamma``, ``train_batch_size``...), all set through
``.training(...)``:

* ``num_episodes_per_train_batch`` — complete episodes per gradient step, split over all env
  runners;
* ``normalize_returns`` — standardise the batch's returns-to-go (a constant baseline);
* ``per_step_baseline`` — first subtract the batch's mean return-to-go at each step index
  (a time-dependent baseline for fixed-length episodes);
* ``rank_returns`` — replace each return-to-go by its centred rank among the batch's at the same
  step index (fitness shaping, :func:`rl.connectors.per_step_centered_ranks`; robust to the
  heavy-tailed returns of the mesh; takes the place of ``per_step_baseline``);
* ``entropy_coeff`` — weight of the entropy bonus (0 = plain REINFORCE).

The policy network defaults to the seed notebook's (see :mod:`rl.module`).
"""

from __future__ import annotations

from typing import Any, Self

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rl.module import SoftmaxPolicyModule


class ReinforceConfig(AlgorithmConfig):
    """Configuration of :class:`rl.algorithm.Reinforce` (new API stack, torch only)."""

    def __init__(self, algo_class: type | None = None) -> None:
        if algo_class is None:
            from rl.algorithm import Reinforce  # circular: the algorithm names its config

            algo_class = Reinforce
        super().__init__(algo_class=algo_class)
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
        """The seed's softmax policy (:data:`rl.module.DEFAULT_POLICY_CONFIG`), overridable via
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
