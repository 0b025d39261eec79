"""The REINFORCE loss on RLlib's TorchLearner (Adam, RLlib's default torch optimizer).

``loss = -mean_t(log pi(a_t | s_t) * G_t) - entropy_coeff * mean_t(H(pi(. | s_t)))`` where
``G_t`` are the discounted returns-to-go from :class:`rl.connectors.DiscountedReturnsToGo`
(shaped as configured: per-step baseline or ranks, standardised when ``normalize_returns`` is
on).

With ``learned_baseline`` the module's value head ``V(s)`` is the baseline:
``loss = -mean_t(log pi(a_t | s_t) * (G_t - sg[V(s_t)])) - entropy_coeff * mean_t(H)
+ vf_loss_coeff * mean_t((V(s_t) - G_t)^2)`` (``sg`` = stop-gradient: the policy term does not
train ``V``). ``V`` fits the same ``G_t`` column the policy term uses, after the connector's
shaping, so its target is of order 1 whatever the reward's units; a state-dependent baseline
subtracted from a (shaped) return leaves the policy gradient's expectation unchanged and removes
the part of its variance the state explains (e.g. a broken start that any action repairs).

The learned baseline is off by default (``ReinforceConfig.learned_baseline=False``): the
default shaping (per-step mean baseline, standardised) is what the sweeps and the README were
measured with, and on a 2-service contextual bandit (``tests/rl/test_learner_baseline.py``'s
``ServiceBandit``, shared module, 64 episodes per update, lr 1e-2, 120 updates, seeds 0 and 1)
it did not help: mean return over the last 10 updates 0.63 and 0.66 with it, 0.77 and 0.91
without. Its value head explained ~80 % of the returns' variance while the policy, nearly
deterministic, stayed wrong on one load band: a baseline that predicts a committed policy's
failure removes the push away from the failing action (cf. Chung et al., "Beyond variance
reduction", ICML 2021). Measure it on the mesh before switching it on.

Action critic (``ReinforceConfig.action_critic``, off by default): the module's ``q_head``
estimates ``Q(s, a)`` of *every* action, fitted by ``mean_t((Q(s_t, a_t) - G_t)^2)`` on the
actions taken, and the policy term uses it for all actions at once instead of the one drawn:
``policy_loss = -mean_t(sum_a pi(a | s_t) * sg[Q(s_t, a) - sum_b pi(b | s_t) Q(s_t, b)])`` —
the all-action policy gradient of Mean Actor-Critic (Allen et al. 2017,
https://arxiv.org/abs/1709.00503), still a policy gradient of the same objective. Its point
here: a sampled return moves only the drawn action's log-probability, so a softmax that
committed to one action early never learns what the others are worth in another state (the
one-action collapse of BENCHMARKS.md, Closed-loop evaluation); the critic's regression on all
the samples does not commit, and the policy follows its per-state ranking. With ``vs_keep``
rewards, gamma 0 and raw returns, ``G_t`` is the exact effect of the action on the next run, so
``Q`` is a one-step effect in score points. Such targets do not depend on the policy that drew
the action, so the critic may also fit older samples: with ``critic_replay`` N > 0 (gamma 0
only) the learner keeps the last N ``(obs, action, G)`` samples its loss saw and adds a draw of
``critic_replay_batch`` of them (seeded) to every critic loss — every sample trains the critic
many times instead of once. The loss sees a batch once per epoch, so with ``num_epochs`` k the
buffer holds k copies of each sample: N / k distinct ones. The buffer and its draws' generator
are part of the learner's state (:data:`CRITIC_REPLAY_STATE_KEY`), so a checkpoint carries them
and a trial resumed from it (``--resume``) refits the samples the interrupted one had, with the
same draws: given the same batches its updates are the uninterrupted trial's. (The batches
themselves differ after a resume, for every learner: the env runners' random state is not in
checkpoints.)

Automatic entropy coefficient (``ReinforceConfig.entropy_target``, off by default): instead of a
fixed ``entropy_coeff`` the loss weighs the entropy bonus by ``alpha = exp(log_alpha)``, and after
each update (:meth:`ReinforceTorchLearner.after_gradient_based_update`) ``log_alpha`` moves
towards keeping the batch's mean policy entropy (nats per step) at the target:
``log_alpha += entropy_target_lr * (entropy_target - mean_t H)`` (:func:`next_log_alpha`,
clamped to ``alpha`` in [:data:`ALPHA_MIN`, :data:`ALPHA_MAX`]). Below the target the bonus
grows, above it shrinks: the discrete-SAC temperature (Christodoulou 2019), applied to the
policy-gradient entropy bonus, so that a policy that committed to one action keeps sampling
the others. ``log_alpha`` starts at ``log(max(entropy_coeff, 1e-3))``.
"""

from __future__ import annotations

import math
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
VALUE_LOSS_KEY = "value_loss"
EXPLAINED_VARIANCE_KEY = "value_explained_variance"
#: Metric: the entropy bonus's weight ``alpha`` used by this update (with ``entropy_target``).
ENTROPY_ALPHA_KEY = "entropy_alpha"
#: Learner state key of the per-module ``log_alpha`` (kept across checkpoints).
LOG_ALPHA_STATE_KEY = "entropy_log_alpha"
#: Key of the learner state's per-module action-critic replays (:meth:`CriticReplay.get_state`):
#: a checkpoint carries them, so a resumed trial refits the samples the interrupted one would.
CRITIC_REPLAY_STATE_KEY = "critic_replay"
#: Range of the automatic entropy coefficient ``alpha``.
ALPHA_MIN, ALPHA_MAX = 1e-4, 10.0
#: Lower bound of the coefficient's start: ``log(0)`` would not move.
ALPHA_START_MIN = 1e-3


def initial_log_alpha(entropy_coeff: float) -> float:
    """``log_alpha`` before the first update: ``log(max(entropy_coeff, 1e-3))``, clamped to
    ``[log ALPHA_MIN, log ALPHA_MAX]``."""
    return _clamp_log_alpha(math.log(max(entropy_coeff, ALPHA_START_MIN)))


def next_log_alpha(log_alpha: float, mean_entropy: float, entropy_target: float,
                   entropy_target_lr: float) -> float:
    """One step of the automatic entropy coefficient: ``log_alpha + entropy_target_lr *
    (entropy_target - mean_entropy)`` (entropies in nats per step), clamped so that ``alpha =
    exp(log_alpha)`` stays in ``[ALPHA_MIN, ALPHA_MAX]``. Entropy below the target raises
    ``alpha``, above it lowers it."""
    return _clamp_log_alpha(log_alpha + entropy_target_lr * (entropy_target - mean_entropy))


def _clamp_log_alpha(log_alpha: float) -> float:
    return min(max(log_alpha, math.log(ALPHA_MIN)), math.log(ALPHA_MAX))


def reinforce_loss(logp: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor,
                   entropy_coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total_loss, policy_loss)`` of one batch; all tensors have shape ``[B]``."""
    policy_loss = -torch.mean(logp * returns)
    return policy_loss - entropy_coeff * torch.mean(entropy), policy_loss


def baseline_loss(logp: torch.Tensor, returns: torch.Tensor, values: torch.Tensor,
                  entropy: torch.Tensor, entropy_coeff: float, vf_loss_coeff: float,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total_loss, policy_loss, value_loss)`` of one batch with a learned baseline.

    ``policy_loss = -mean(logp * (returns - values.detach()))``, ``value_loss =
    mean((values - returns)^2)``, ``total = policy_loss - entropy_coeff * mean(entropy) +
    vf_loss_coeff * value_loss``; all tensors have shape ``[B]``.
    """
    advantages = returns - values.detach()
    policy_loss = -torch.mean(logp * advantages)
    value_loss = torch.mean((values - returns) ** 2)
    total = policy_loss - entropy_coeff * torch.mean(entropy) + vf_loss_coeff * value_loss
    return total, policy_loss, value_loss


def action_critic_loss(logits: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor,
                       q_values: torch.Tensor, entropy: torch.Tensor, entropy_coeff: float,
                       critic_coeff: float, scale_advantages: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total_loss, policy_loss, critic_loss, q_taken)`` of one batch with an action critic.

    ``logits`` and ``q_values`` have shape ``[B, N]``, ``actions``, ``returns`` and ``entropy``
    ``[B]``. ``critic_loss = mean((Q(s, a_taken) - returns)^2)``; with ``pi = softmax(logits)``
    and ``A = sg[Q] - sum_b pi_b sg[Q_b]``, ``policy_loss = -mean(sum_a pi_a A_a)`` (the
    expected policy gradient under the critic; the critic gets no gradient from it);
    ``total = policy_loss - entropy_coeff * mean(entropy) + critic_coeff * critic_loss``.
    With ``scale_advantages`` ``A`` is divided by its standard deviation over the batch's
    states and actions (weighted by ``pi``; 1 when it is 0), so that ``entropy_coeff`` is a
    temperature relative to the critic's spread, not in the reward's units.
    """
    probs = torch.softmax(logits, dim=-1)
    q = q_values.detach()
    advantages = q - (probs.detach() * q).sum(dim=-1, keepdim=True)
    if scale_advantages:
        spread = torch.sqrt((probs.detach() * advantages ** 2).sum(dim=-1).mean())
        advantages = advantages / (spread if spread.item() > 0 else 1.0)
    policy_loss = -torch.mean((probs * advantages).sum(dim=-1))
    critic_loss, q_taken = critic_mse(q_values, actions, returns)
    total = policy_loss - entropy_coeff * torch.mean(entropy) + critic_coeff * critic_loss
    return total, policy_loss, critic_loss, q_taken


def critic_mse(q_values: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean((Q(s, a_taken) - returns)^2), Q(s, a_taken))``: the critic's loss on the actions
    taken (``q_values`` ``[B, N]``, ``actions`` and ``returns`` ``[B]``)."""
    q_taken = q_values.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    return torch.mean((q_taken - returns) ** 2), q_taken


class CriticReplay:
    """The last ``capacity`` ``(obs, action, return)`` samples a learner's loss saw (a batch once
    per epoch), for the action critic to fit again (``ReinforceConfig.critic_replay``); draws
    are seeded."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._next = 0
        self._data: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(seed)

    def add(self, obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor) -> None:
        """Append a batch (detached), overwriting the oldest samples once full."""
        new = {"obs": obs.detach().float(), "actions": actions.detach().long(),
               "returns": returns.detach().float()}
        if not self._data:
            self._data = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
                          for k, v in new.items()}
        n = len(new["actions"])
        index = (self._next + torch.arange(n)) % self.capacity
        for key, value in new.items():
            self._data[key][index] = value[-self.capacity:] if n > self.capacity else value
        self._next = int((self._next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def get_state(self) -> dict[str, Any]:
        """The replay as plain data for a checkpoint: the filled samples (numpy arrays), the
        write position and the draws' generator state."""
        return {"capacity": self.capacity, "size": self.size, "next": self._next,
                "data": {key: value[:self.size].numpy().copy()
                         for key, value in self._data.items()},
                "generator": self._generator.get_state().numpy().copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take a :meth:`get_state` back: the same samples, position and next draws.

        Raises:
            ValueError: the state's capacity is not this replay's (the trial's
                ``critic_replay`` changed between the checkpoint and the resume).
        """
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"critic replay of capacity {state['capacity']} in the checkpoint, "
                f"{self.capacity} configured (critic_replay): resume with the checkpoint's "
                "settings")
        self.size, self._next = int(state["size"]), int(state["next"])
        self._data = {}
        for key, value in state["data"].items():
            full = torch.zeros((self.capacity, *value.shape[1:]),
                               dtype=torch.from_numpy(value).dtype)
            full[:self.size] = torch.from_numpy(value)
            self._data[key] = full
        self._generator.set_state(torch.from_numpy(state["generator"]))

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` samples drawn uniformly with replacement (empty dict while empty)."""
        if self.size == 0:
            return {}
        index = torch.randint(0, self.size, (n,), generator=self._generator)
        return {key: value[index] for key, value in self._data.items()}


def explained_variance(returns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``1 - Var(returns - values) / Var(returns)``: 1 = ``V`` explains the returns, 0 = no
    better than their mean; 0 when the returns do not vary (nothing to explain)."""
    var = torch.var(returns, unbiased=False)
    if var.item() == 0.0:
        return torch.zeros(())
    return 1.0 - torch.var(returns - values, unbiased=False) / var


class ReinforceTorchLearner(TorchLearner):
    """TorchLearner whose loss is REINFORCE with an optional entropy bonus (fixed, or kept at a
    target entropy: ``ReinforceConfig.entropy_target``) and an optional learned baseline
    (``ReinforceConfig.learned_baseline``) or action critic (``ReinforceConfig.action_critic``).
    """

    def build(self) -> None:
        """Build as usual, check every module has a value head iff the learned baseline is on,
        then prepend the returns-to-go connector to the learner pipeline.

        Raises:
            ValueError: ``learned_baseline`` is on and a module has no value head, or it is off
                and a module has one (its parameters would get no gradient).
        """
        super().build()
        #: Per module, ``log`` of the entropy bonus's weight (only with ``entropy_target``).
        self.log_alpha: dict[ModuleID, float] = {}
        #: Per module, the mean policy entropy (nats) of the last batch the loss saw.
        self._batch_entropy: dict[ModuleID, float] = {}
        #: Per module, the action critic's replay of earlier samples (``critic_replay`` > 0).
        self.critic_replay: dict[ModuleID, CriticReplay] = {}
        for module_id, module in self.module.items():
            has_q = bool(getattr(module, "has_q_head", False))
            if self.config.action_critic and not has_q:
                raise ValueError(
                    f"action_critic is on but module {module_id!r} ({type(module).__name__}) "
                    "has no q_head: use the shared module (rl.shared_module) and leave "
                    "model_config['q_head'] unset (the config sets it) or True")
            if has_q and not self.config.action_critic:
                raise ValueError(
                    f"module {module_id!r} has a q_head but action_critic is off: its "
                    "parameters would get no gradient; set ReinforceConfig.training("
                    "action_critic=True) or drop model_config['q_head']")
            settings = getattr(module, "settings", None)
            if getattr(settings, "explore_mix", 0.0) > 0 and not self.config.action_critic:
                raise ValueError(
                    f"module {module_id!r} samples from a mixed behaviour policy "
                    "(model_config['explore_mix'] > 0): REINFORCE's log-probability term "
                    "would be biased; use it with action_critic=True only")
            has_value = bool(getattr(module, "has_value_head", False))
            if self.config.learned_baseline and not has_value:
                raise ValueError(
                    f"learned_baseline is on but module {module_id!r} "
                    f"({type(module).__name__}) has no value head: leave "
                    "model_config['value_head'] unset (the config sets it) or True")
            if has_value and not self.config.learned_baseline:
                raise ValueError(
                    f"module {module_id!r} has a value head but learned_baseline is off: its "
                    "parameters would get no gradient; set ReinforceConfig.training("
                    "learned_baseline=True) or drop model_config['value_head']")
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(DiscountedReturnsToGo(
                gamma=self.config.gamma, normalize=self.config.normalize_returns,
                per_step_baseline=self.config.per_step_baseline,
                rank_returns=self.config.rank_returns,
                group_baseline=self.config.episodes_per_scenario > 1,
                group_scale=self.config.group_scale))

    def entropy_weight(self, module_id: ModuleID, config: ReinforceConfig) -> float:
        """The entropy bonus's weight for ``module_id``: ``config.entropy_coeff``, or with
        ``config.entropy_target`` set the automatic ``alpha = exp(log_alpha)``."""
        if config.entropy_target is None:
            return float(config.entropy_coeff)
        if module_id not in self.log_alpha:
            self.log_alpha[module_id] = initial_log_alpha(config.entropy_coeff)
        return math.exp(self.log_alpha[module_id])

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """RLlib's hook, then (``entropy_target`` set) one :func:`next_log_alpha` step per
        module from the mean entropy of the last batch its loss saw (the last minibatch when
        there are several)."""
        super().after_gradient_based_update(timesteps=timesteps)
        for module_id, entropy in self._batch_entropy.items():
            config = self.config.get_config_for_module(module_id)
            if config.entropy_target is None or module_id not in self.log_alpha:
                continue
            self.log_alpha[module_id] = next_log_alpha(
                self.log_alpha[module_id], entropy, config.entropy_target,
                config.entropy_target_lr)
        self._batch_entropy.clear()

    def get_state(self, components: Any = None, *, not_components: Any = None,
                  **kwargs: Any) -> dict[str, Any]:
        """RLlib's learner state plus, in the whole state (``components`` None: a checkpoint,
        ``Algorithm.get_state()``), the per-module ``log_alpha`` and action-critic replay (each
        when there is one). A request for some components — the module's weights RLlib sends
        the env runners after every update — gets none of them: the replay is ~44 MB, copied
        and shipped to every runner each iteration it would be."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        if components is not None:
            return state
        if self.log_alpha:
            state[LOG_ALPHA_STATE_KEY] = dict(self.log_alpha)
        if self.critic_replay:
            state[CRITIC_REPLAY_STATE_KEY] = {
                module_id: replay.get_state() for module_id, replay in self.critic_replay.items()}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """RLlib's learner state plus the per-module ``log_alpha`` and action-critic replay
        (each when the state has one)."""
        super().set_state(state)
        self.log_alpha.update(state.get(LOG_ALPHA_STATE_KEY, {}))
        for module_id, replay_state in state.get(CRITIC_REPLAY_STATE_KEY, {}).items():
            self._replay(module_id, self.config.get_config_for_module(module_id)).set_state(
                replay_state)

    def compute_loss_for_module(self, *, module_id: ModuleID, config: ReinforceConfig,
                                batch: dict[str, Any],
                                fwd_out: dict[str, TensorType]) -> TensorType:
        """The REINFORCE loss of one module (with the learned baseline or the action critic if
        configured); logs policy loss, entropy and mean return (and the value or critic loss and
        its explained variance, and the entropy weight ``alpha`` with ``entropy_target``)."""
        module = self.module[module_id]
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])
        entropy = dist.entropy()
        returns = batch[Columns.RETURNS_TO_GO]
        logs = {ENTROPY_KEY: entropy.mean().detach(),
                RETURNS_TO_GO_MEAN_KEY: returns.mean().detach()}
        entropy_coeff = self.entropy_weight(module_id, config)
        if config.entropy_target is not None:
            self._batch_entropy[module_id] = float(logs[ENTROPY_KEY])
            logs[ENTROPY_ALPHA_KEY] = entropy_coeff
        if config.action_critic:
            q_values = module.compute_action_values(batch)
            loss, policy_loss, critic_loss, q_taken = action_critic_loss(
                fwd_out[Columns.ACTION_DIST_INPUTS], batch[Columns.ACTIONS], returns, q_values,
                entropy, entropy_coeff, config.vf_loss_coeff, config.critic_scale_advantages)
            logs[VALUE_LOSS_KEY] = critic_loss.detach()
            logs[EXPLAINED_VARIANCE_KEY] = explained_variance(returns, q_taken.detach())
            if config.critic_replay > 0:
                loss = loss + config.vf_loss_coeff * self._replayed_critic_loss(
                    module_id, module, config, batch)
        elif config.learned_baseline:
            values = module.compute_values(batch)
            loss, policy_loss, value_loss = baseline_loss(
                logp, returns, values, entropy, entropy_coeff, config.vf_loss_coeff)
            logs[VALUE_LOSS_KEY] = value_loss.detach()
            logs[EXPLAINED_VARIANCE_KEY] = explained_variance(returns, values.detach())
        else:
            loss, policy_loss = reinforce_loss(logp, returns, entropy, entropy_coeff)
        logs[POLICY_LOSS_KEY] = policy_loss.detach()
        self.metrics.log_dict(logs, key=module_id, window=1)
        return loss

    def _replay(self, module_id: ModuleID, config: ReinforceConfig) -> CriticReplay:
        """``module_id``'s action-critic replay, made empty (seeded by ``config.seed``) on first
        use."""
        if module_id not in self.critic_replay:
            seed = 0 if config.seed is None else int(config.seed)
            self.critic_replay[module_id] = CriticReplay(config.critic_replay, seed)
        return self.critic_replay[module_id]

    def _replayed_critic_loss(self, module_id: ModuleID, module: Any, config: ReinforceConfig,
                              batch: dict[str, Any]) -> torch.Tensor:
        """The critic's MSE on ``critic_replay_batch`` earlier samples (0 before any), then this
        batch joins the replay."""
        replay = self._replay(module_id, config)
        old = replay.sample(config.critic_replay_batch)
        replay.add(batch[Columns.OBS], batch[Columns.ACTIONS], batch[Columns.RETURNS_TO_GO])
        if not old:
            return torch.zeros(())
        q = module.compute_action_values({Columns.OBS: old["obs"]})
        return critic_mse(q, old["actions"], old["returns"])[0]
