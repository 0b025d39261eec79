"""The REINFORCE loss on RLlib's TorchLearner (Adam, RLlib's default torch optimizer).

``loss = -mean_t(log pi(a_t | s_t) * G_t) - entropy_coeff * mean_t(H(pi(. | s_t)))`` where
``G_t`` are the discounted returns-to-go from :class:`rl.connectors.DiscountedReturnsToGo`
(standardised when ``normalize_returns`` is on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.typing import ModuleID, TensorType

from rl.connectors import DiscountedReturnsToGo

if TYPE_CHECKING:
    from rl.reinforce import ReinforceConfig

POLICY_LOSS_KEY = "policy_loss"
ENTROPY_KEY = "entropy"
RETURNS_TO_GO_MEAN_KEY = "returns_to_go_mean"


def reinforce_loss(logp: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor,
                   entropy_coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total_loss, policy_loss)`` of one batch; all tensors have shape ``[B]``."""
    policy_loss = -torch.mean(logp * returns)
    return policy_loss - entropy_coeff * torch.mean(entropy), policy_loss


class ReinforceTorchLearner(TorchLearner):
    """TorchLearner whose loss is REINFORCE with an optional entropy bonus."""

    def build(self) -> None:
        """Build as usual, then prepend the returns-to-go connector to the learner pipeline."""
        super().build()
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(DiscountedReturnsToGo(
                gamma=self.config.gamma, normalize=self.config.normalize_returns,
                per_step_baseline=self.config.per_step_baseline,
                rank_returns=self.config.rank_returns))

    def compute_loss_for_module(self, *, module_id: ModuleID, config: ReinforceConfig,
                                batch: dict[str, Any],
                                fwd_out: dict[str, TensorType]) -> TensorType:
        """The REINFORCE loss of one module; logs policy loss, entropy and mean return."""
        module = self.module[module_id]
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])
        entropy = dist.entropy()
        returns = batch[Columns.RETURNS_TO_GO]
        loss, policy_loss = reinforce_loss(logp, returns, entropy, config.entropy_coeff)
        self.metrics.log_dict(
            {POLICY_LOSS_KEY: policy_loss.detach(), ENTROPY_KEY: entropy.mean().detach(),
             RETURNS_TO_GO_MEAN_KEY: returns.mean().detach()},
            key=module_id, window=1)
        return loss
