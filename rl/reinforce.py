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
* ``episodes_per_scenario`` — k > 1: the episodes of a batch come in groups of k that replay
  the same scenario with the same seeds (each env runner seeds its envs per group,
  :class:`SeedOnce`), and each return-to-go is compared with its group's at the same step
  (:func:`rl.connectors.subtract_group_mean`; takes the place of ``rank_returns`` and
  ``per_step_baseline``); k must divide ``num_envs_per_env_runner`` and each runner's share of
  the batch must be a multiple of its envs, so every env runs the same number of episodes;
* ``group_scale`` — with ``episodes_per_scenario`` > 1, also divide each group's centred
  returns by the group's standard deviation (:func:`rl.connectors.scale_groups`, as GRPO does),
  so that every scenario of a batch weighs the same; off by default;
* ``entropy_coeff`` — weight of the entropy bonus (0 = plain REINFORCE);
* ``entropy_target`` — nats: instead of the fixed ``entropy_coeff``, weigh the entropy bonus by
  an automatic coefficient ``alpha`` that keeps the batch's mean policy entropy per step near
  this target (:mod:`rl.learner`: discrete-SAC style temperature; ``alpha`` starts at
  ``max(entropy_coeff, 1e-3)``); ``None`` (default) = off;
* ``entropy_target_lr`` — step size of ``log alpha`` per update and nat of entropy gap
  (``log_alpha += entropy_target_lr * (entropy_target - entropy)``); used only with
  ``entropy_target``;
* ``learned_baseline`` — subtract the module's value head ``V(s)`` from the (shaped)
  returns-to-go and train it by MSE (:mod:`rl.learner`); off by default;
* ``vf_loss_coeff`` — weight of that MSE in the loss (and of the action critic's).
* ``action_critic`` — learn ``Q(s, a)`` of every action (the shared module's ``q_head``) and
  use it for all actions in the policy term (:mod:`rl.learner`); not with ``learned_baseline``;
* ``critic_replay`` — with ``action_critic`` and gamma 0: how many earlier samples the critic
  keeps fitting (0, the default: none; a batch counts once per epoch); ``critic_replay_batch``
  of them join each critic loss;
* ``critic_scale_advantages`` — with ``action_critic``: divide the critic's advantages by their
  spread over the batch, so that ``entropy_coeff`` is a relative temperature (off by default).

RLlib's ``num_epochs`` and ``minibatch_size`` (``training(num_epochs=..., minibatch_size=...)``)
are honoured: ``num_epochs`` passes over the batch instead of one gradient step. Every pass after
the first is slightly off-policy (the returns were sampled by the weights before the first
step; there is no importance ratio or clip, this is not PPO), so keep it small. The main job
keeps one step per batch: 4 steps did not change what a trial learned on the one seed tried
(BENCHMARKS.md, Closed-loop evaluation).

The policy network defaults to the original notebook's (see :mod:`rl.module`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Self

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.env_runner import ENV_STEP_FAILURE
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    ENV_TO_MODULE_CONNECTOR,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    MODULE_TO_ENV_CONNECTOR,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    RLMODULE_INFERENCE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
    WEIGHTS_SEQ_NO,
)
from ray.rllib.utils.spaces.space_utils import unbatch

from rl.batching import episodes_per_runner, groups_align
from rl.module import SoftmaxPolicyModule

#: Metric: env runners whose episodes were missing from an iteration (died or timed out).
MISSING_RUNNERS_KEY = "env_runners_missing"


class SeedOnce(gym.vector.VectorWrapper):
    """Passes a reset's seed to the envs on their first reset only; later resets continue the
    envs' own generators (still deterministic) — or, with ``group_size`` k > 1, seeds every
    reset so that envs ``i`` and ``j`` with ``i // k == j // k`` replay the same scenario.

    RLlib resets the envs before every ``sample(num_episodes=n)`` and, when ``config.seed`` is
    set, re-seeds them with the *same* seed each time: every iteration would replay the same
    episodes. Wrapping the runner's vector env (as RLlib itself wraps it in ``DictInfoToList``)
    keeps the first, seeded reset and drops the seed from the later ones.

    ``first_seed``, if given, replaces the seed of that first reset (when one is passed): the
    vector env seeds its env ``i`` with ``seed + i``, so RLlib's per-runner seed
    (``config.seed + worker_index``) would give two runners with several envs each the same
    seeds (runner 1's env 1 = runner 2's env 0); :class:`ReinforceEnvRunner` passes
    ``config.seed + worker_index * num_envs`` instead, one seed per env over all runners.

    Groups (``episodes_per_scenario``): the ``n``-th reset (one per sample, i.e. per
    iteration) seeds env ``i`` with a seed drawn from ``(first_seed, n, i // k)``; each env's
    episodes of that sample then draw the same scenarios, starts and load seeds as its group's
    (a MeshEnv episode draws only at its reset), and differ only in the actions sampled — the
    common random numbers of :func:`rl.connectors.subtract_group_mean`. The count ``n`` lives in
    the runner: a restarted runner (fault tolerance, a resumed sweep) counts from 0 again and
    replays the first iterations' scenarios (with the policy it has now).
    """

    def __init__(self, env: gym.vector.VectorEnv, first_seed: int | None = None,
                 group_size: int = 1) -> None:
        super().__init__(env)
        if group_size < 1 or env.num_envs % group_size:
            raise ValueError(f"episodes_per_scenario ({group_size}) must divide the envs per "
                             f"env runner ({env.num_envs})")
        self._reset_before = False
        self._first_seed = first_seed
        self._group_size = group_size
        self._resets = 0

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> Any:
        """Reset the envs; ``seed`` (or ``first_seed``) is passed on only the first time, or
        per group at every reset (class docstring)."""
        if self._group_size > 1:
            base = self._first_seed if self._first_seed is not None else seed
            if base is None:
                raise ValueError("episodes_per_scenario > 1 needs a seed (config.debugging("
                                 "seed=...)): the envs of a group must draw the same scenario")
            seeds = [int(np.random.SeedSequence([int(base), self._resets, i // self._group_size])
                         .generate_state(1)[0]) for i in range(self.num_envs)]
            self._resets += 1
            return self.env.reset(seed=seeds, options=options)
        if self._reset_before:
            seed = None
        elif seed is not None and self._first_seed is not None:
            seed = self._first_seed
        self._reset_before = True
        return self.env.reset(seed=seed, options=options)


class ReinforceEnvRunner(SingleAgentEnvRunner):
    """RLlib's single-agent env runner whose envs are seeded once (:class:`SeedOnce`), one seed
    per env over all runners, and which samples ``num_episodes`` from several envs without
    favouring short episodes.

    With ``num_envs_per_env_runner`` = k > 1, RLlib's own loop returns the first
    ``num_episodes`` episodes to *finish* over the k envs and drops the unfinished ones: an
    episode that ends early (an unhealthy configuration terminates it) is over-represented, a
    long one under-represented. Here each env ``i`` gets a fixed quota (``num_episodes`` split
    over the envs, :func:`episodes_per_runner`) and the batch is exactly each env's first quota
    episodes, whatever their lengths — the same distribution as k = 1, with one batched forward
    pass per step for the k envs. An env whose quota is met keeps stepping (a vector env steps
    all its envs) until the others are done, but its extra episodes are neither returned nor
    counted in the metrics. With k = 1, or ``num_timesteps``, RLlib's loop runs unchanged.
    """

    def make_env(self) -> None:
        """RLlib's env, wrapped in :class:`SeedOnce` (RLlib calls this again on re-creation)."""
        super().make_env()
        first_seed = None
        if self.config.seed is not None:
            first_seed = int(self.config.seed) + (self.worker_index or 0) * self.num_envs
        self.env = SeedOnce(self.env, first_seed=first_seed,
                            group_size=int(self.config.episodes_per_scenario))

    def _sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
                explore: bool, random_actions: bool = False,
                force_reset: bool = False) -> list[SingleAgentEpisode]:
        """``num_episodes`` with several envs: :meth:`_sample_quota`; otherwise RLlib's."""
        if num_episodes is None or self.num_envs == 1:
            return super()._sample(num_timesteps=num_timesteps, num_episodes=num_episodes,
                                   explore=explore, random_actions=random_actions,
                                   force_reset=force_reset)
        return self._sample_quota(num_episodes, explore, random_actions)

    def _sample_quota(self, num_episodes: int, explore: bool,
                      random_actions: bool) -> list[SingleAgentEpisode]:
        """Each env's first quota episodes (see the class docstring). Follows RLlib 2.60's
        ``SingleAgentEnvRunner._sample`` step for step (connectors, forward pass, episode
        bookkeeping, callbacks), with the quota in place of its first-finished rule."""
        quota = episodes_per_runner(num_episodes, self.num_envs)
        done = [0] * self.num_envs
        returned: list[SingleAgentEpisode] = []
        ts = 0  # env steps taken, counted episodes or not (what the envs cost)
        self._reset_envs_and_episodes(explore)
        self._needs_initial_reset = True
        while any(d < q for d, q in zip(done, quota, strict=True)):
            if random_actions:
                to_env = {Columns.ACTIONS: self.env.action_space.sample()}
            else:
                to_module = self._cached_to_module
                self._cached_to_module = None
                if explore:
                    runners = self.config.num_env_runners or 1
                    t = (self.num_env_steps_sampled_lifetime // runners + ts) * runners
                    with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
                        to_env = self.module.forward_exploration(to_module, t=t)
                else:
                    with self.metrics.log_time(RLMODULE_INFERENCE_TIMER):
                        to_env = self.module.forward_inference(to_module)
                to_env = self._module_to_env(
                    rl_module=self.module, batch=to_env, episodes=self._ongoing_episodes,
                    explore=explore, shared_data=self._shared_data, metrics=self.metrics,
                    metrics_prefix_key=(MODULE_TO_ENV_CONNECTOR,))
            actions = to_env.pop(Columns.ACTIONS)
            actions_for_env = to_env.pop(Columns.ACTIONS_FOR_ENV, actions)
            results = self._try_env_step(actions_for_env)
            if results == ENV_STEP_FAILURE:  # the envs were re-created: start their episodes
                self._reset_envs_and_episodes(explore)  # again (finished ones are kept)
                continue
            observations, rewards, terminateds, truncateds, infos = results
            observations, actions = unbatch(observations), unbatch(actions)

            started = set()
            for i in range(self.num_envs):
                episode = self._ongoing_episodes[i]
                if not episode.is_reset:  # the vector env reset this env (autoreset)
                    episode.add_env_reset(observation=observations[i], infos=infos[i])
                    started.add(i)
                else:
                    ts += 1
                    extra = {k: v[i] for k, v in to_env.items()}
                    extra[WEIGHTS_SEQ_NO] = self._weights_seq_no
                    episode.add_env_step(
                        observation=observations[i], action=actions[i], reward=rewards[i],
                        infos=infos[i], terminated=terminateds[i], truncated=truncateds[i],
                        extra_model_outputs=extra)
            if self.module is not None:
                self._cached_to_module = self._env_to_module(
                    episodes=self._ongoing_episodes, batch={}, explore=explore,
                    rl_module=self.module, shared_data=self._shared_data, metrics=self.metrics,
                    metrics_prefix_key=(ENV_TO_MODULE_CONNECTOR,),
                    **{Columns.OBS: observations, Columns.ACTIONS: actions,
                       Columns.REWARDS: rewards, Columns.INFOS: infos,
                       Columns.TERMINATEDS: terminateds, Columns.TRUNCATEDS: truncateds})
            for i in range(self.num_envs):
                counted = done[i] < quota[i]
                if counted:  # callbacks (the mesh metrics) only for episodes returned
                    self._make_on_episode_callback(
                        "on_episode_start" if i in started else "on_episode_step", i,
                        self._ongoing_episodes)
                if self._ongoing_episodes[i].is_done:
                    if counted:
                        done[i] += 1
                        self._make_on_episode_callback("on_episode_end", i,
                                                       self._ongoing_episodes)
                        episode = self._ongoing_episodes[i]
                        returned.append(episode.to_numpy() if self.episodes_to_numpy
                                        else episode)
                    self._new_episode(i, self._ongoing_episodes)

        self._done_episodes_for_metrics.extend(returned)
        self._log_env_steps(metric=self._metrics_num_env_steps_sampled, num_steps=ts)
        self._increase_sampled_metrics(ts, len(returned))
        return returned


class Reinforce(Algorithm):
    """REINFORCE (Williams 1992) on RLlib's new API stack."""

    @classmethod
    def get_default_config(cls) -> ReinforceConfig:
        """A fresh :class:`ReinforceConfig`."""
        return ReinforceConfig()

    def training_step(self) -> None:
        """Sample complete episodes from every env runner, update (``num_epochs`` passes over
        the batch, in minibatches of ``minibatch_size`` if set: once by default), sync
        weights."""
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_metrics = self._sample_complete_episodes()
        self.metrics.aggregate(runner_metrics, key=ENV_RUNNER_RESULTS)

        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                # RLlib's own settings: 1 epoch, no minibatches by default (one step per batch)
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size,
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
                       ) -> tuple[int, list[Any], dict[str, Any]]:
                episodes = runner.sample(num_episodes=share[runner.worker_index])
                return runner.worker_index, episodes, runner.get_metrics()

            # In runner order, not in the order they finished: the batch (and so the update
            # and the aggregated metrics, to the last bit) does not depend on timing.
            results = [(episodes, metrics) for _, episodes, metrics in sorted(
                group.foreach_env_runner(sample, local_env_runner=not remote,
                                         timeout_seconds=self.config.sample_timeout_s),
                key=lambda result: result[0])]
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


def _is_number(value: Any) -> bool:
    """A real number (int or float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class ReinforceConfig(AlgorithmConfig):
    """Configuration of :class:`rl.reinforce.Reinforce` (new API stack, torch only)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or Reinforce)
        self.num_episodes_per_train_batch: int = 8
        self.normalize_returns: bool = True
        self.per_step_baseline: bool = True
        self.rank_returns: bool = False
        self.episodes_per_scenario: int = 1
        self.group_scale: bool = False
        self.entropy_coeff: float = 0.0
        self.entropy_target: float | None = None
        self.entropy_target_lr: float = 0.05
        self.learned_baseline: bool = False
        self.vf_loss_coeff: float = 1.0
        self.action_critic: bool = False
        self.critic_replay: int = 0
        self.critic_replay_batch: int = 1024
        self.critic_scale_advantages: bool = False
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
                 episodes_per_scenario: int | Any = NotProvided,
                 group_scale: bool | Any = NotProvided,
                 entropy_coeff: float | Any = NotProvided,
                 entropy_target: float | Any | None = NotProvided,
                 entropy_target_lr: float | Any = NotProvided,
                 learned_baseline: bool | Any = NotProvided,
                 vf_loss_coeff: float | Any = NotProvided,
                 action_critic: bool | Any = NotProvided,
                 critic_replay: int | Any = NotProvided,
                 critic_replay_batch: int | Any = NotProvided,
                 critic_scale_advantages: bool | Any = NotProvided, **kwargs: Any) -> Self:
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
        if episodes_per_scenario is not NotProvided:
            self.episodes_per_scenario = episodes_per_scenario
        if group_scale is not NotProvided:
            self.group_scale = group_scale
        if entropy_coeff is not NotProvided:
            self.entropy_coeff = entropy_coeff
        if entropy_target is not NotProvided:
            self.entropy_target = entropy_target
        if entropy_target_lr is not NotProvided:
            self.entropy_target_lr = entropy_target_lr
        if learned_baseline is not NotProvided:
            self.learned_baseline = learned_baseline
        if vf_loss_coeff is not NotProvided:
            self.vf_loss_coeff = vf_loss_coeff
        if action_critic is not NotProvided:
            self.action_critic = action_critic
        if critic_replay is not NotProvided:
            self.critic_replay = critic_replay
        if critic_replay_batch is not NotProvided:
            self.critic_replay_batch = critic_replay_batch
        if critic_scale_advantages is not NotProvided:
            self.critic_scale_advantages = critic_scale_advantages
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
        k = self.episodes_per_scenario
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"episodes_per_scenario must be a positive int, got {k!r}")
        envs = int(self.num_envs_per_env_runner)
        if not groups_align(k, envs, self.num_episodes_per_train_batch, self.num_env_runners):
            shares = episodes_per_runner(self.num_episodes_per_train_batch,
                                         max(1, self.num_env_runners))
            raise ValueError(
                f"episodes_per_scenario ({k}) must divide num_envs_per_env_runner ({envs}), "
                f"and every runner's share of num_episodes_per_train_batch "
                f"({self.num_episodes_per_train_batch} over {max(1, self.num_env_runners)} "
                f"runners: {shares}) must be a multiple of its envs, so that the envs of a "
                "group run the same episodes")
        if not isinstance(self.group_scale, bool):
            raise ValueError(f"group_scale must be a bool, got {self.group_scale!r}")
        if self.group_scale and k < 2:
            raise ValueError("group_scale scales the groups of episodes_per_scenario > 1; got "
                             f"episodes_per_scenario={k}")
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")
        if self.entropy_target is not None and not (
                _is_number(self.entropy_target) and 0 <= self.entropy_target < math.inf):
            raise ValueError("entropy_target must be None (off) or a finite number of nats >= 0, "
                             f"got {self.entropy_target!r}")
        if not (_is_number(self.entropy_target_lr) and 0 < self.entropy_target_lr < math.inf):
            raise ValueError("entropy_target_lr must be a finite number > 0, got "
                             f"{self.entropy_target_lr!r}")
        if not isinstance(self.learned_baseline, bool):
            raise ValueError(f"learned_baseline must be a bool, got {self.learned_baseline!r}")
        if not self.vf_loss_coeff >= 0:
            raise ValueError(f"vf_loss_coeff must be >= 0, got {self.vf_loss_coeff}")
        if not isinstance(self.action_critic, bool):
            raise ValueError(f"action_critic must be a bool, got {self.action_critic!r}")
        if self.action_critic and self.learned_baseline:
            raise ValueError("action_critic and learned_baseline are two baselines: set one")
        for name in ("critic_replay", "critic_replay_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not isinstance(self.critic_scale_advantages, bool):
            raise ValueError("critic_scale_advantages must be a bool, got "
                             f"{self.critic_scale_advantages!r}")
        if self.critic_scale_advantages and not self.action_critic:
            raise ValueError("critic_scale_advantages scales the action critic's advantages: "
                             "set action_critic=True")
        if self.critic_replay > 0 and not self.action_critic:
            raise ValueError("critic_replay replays samples for the action critic: set "
                             "action_critic=True")
        if self.critic_replay > 0 and self.gamma != 0:
            raise ValueError(f"critic_replay needs gamma 0 (a one-step target does not depend "
                             f"on the policy that drew it), got gamma={self.gamma}")
        if self.critic_replay > 0 and self.critic_replay_batch < 1:
            raise ValueError("critic_replay_batch must be >= 1 with critic_replay")
        if self.batch_mode != "complete_episodes":
            raise ValueError(f"REINFORCE needs batch_mode='complete_episodes', "
                             f"got {self.batch_mode!r}")
        if self.framework_str != "torch":
            raise ValueError(f"only framework='torch' is supported, got {self.framework_str!r}")

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        """``value_head`` follows ``learned_baseline``, ``q_head`` follows ``action_critic`` (a
        user's ``model_config`` overrides them)."""
        return {**super()._model_config_auto_includes, "value_head": self.learned_baseline,
                "q_head": self.action_critic}

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
