"""A policy that learns one rule and applies it to every service: a shared-weight RLModule.

For each service ``s`` one MLP ``phi`` (the same weights for every service) reads that
service's own features ``obs[service_features[s]]`` plus the context shared by all services
``obs[global_features]`` and scores the service's ``A`` acts. The logits are concatenated in
service order — index ``s * A + a``, as :class:`envs.actions.ActionCatalogue` numbers its
actions — and, with ``noop_action``, the global actions' logits are appended last (the no-op;
with ``global_actions`` 2, the whole-mesh restore before it): a head over the mean of the
services' embeddings (``phi``'s last hidden layer) and the global features. No parameter depends
on the number of services ``S``: weights trained with one set of services can be loaded into a
module over another (e.g. trained on SockShop's services, applied to another application's).
Permuting the services permutes the logit blocks and leaves the no-op logit (and the value)
unchanged.

With ``value_head`` (set by ``ReinforceConfig.training(learned_baseline=True)``) the module
also estimates ``V(s)`` for the learned baseline of :mod:`rl.learner`: its own per-service
encoder (same shape as ``phi``'s hidden layers, separate weights, so the value loss does not
pull the policy's features), mean-pooled over services, with the global features, into a small
head. Permutation-invariant, and dropped from the env runners' inference-only copies.

With ``q_head`` (set by ``ReinforceConfig.training(action_critic=True)``) the module also
estimates ``Q(s, a)`` for every action, in the learner's return units, for the all-action policy
gradient of :mod:`rl.learner`: its own per-service encoder (same shape as ``phi``'s, separate
weights) scores each service's ``A`` acts, and a head over the mean of those embeddings and the
global features scores the global actions — the same layout and the same equivariance as the
logits. Dropped from the inference-only copies too.

With ``inert_acts`` (a dict from :func:`rl.policies.inert_acts`) the critic's ``Q`` is exactly 0
for every action that, as far as the observation's configuration blocks show, changes nothing:
a ``set`` act whose knob already holds its value, a reset of a service at Istio's defaults, the
restore when every service is there, the no-op. That is what the ``vs_keep`` reward pays such an
action (the same run with and without it), so the critic need not learn it — and cannot get it
wrong: an overestimated inert action would otherwise outrank the few that pay.

With ``explore_mix`` ε > 0 the env runners sample (``forward_exploration``) from
``(1 - ε) pi + ε u`` instead of ``pi``, where ``u`` puts ``explore_global_share`` of its mass
uniformly on the global actions (restore, no-op) and the rest uniformly on all actions: a
behaviour policy that keeps trying every action, and the rare global ones often, whatever
``pi`` has committed to. Greedy acting (``forward_inference``) and the learner
(``forward_train``) still see ``pi``. Only sound with the action critic, whose policy term does
not weigh the drawn action and whose one-step targets do not depend on the policy that drew it
(``ReinforceTorchLearner.build`` refuses it otherwise).

``model_config`` keys (issue 12's contract, §7):

* ``service_features`` — S lists of F observation indices (one per service, equal lengths);
* ``global_features`` — observation indices shared by all services (may be empty);
* ``acts_per_service`` — ``A``, the acts of one service;
* ``noop_action`` — whether the action space ends with global actions (a no-op at least);
* optional ``global_actions`` — how many global actions end it (default 1 with ``noop_action``,
  0 without; ``setpoint_restore``'s restore and no-op: 2);
* ``hidden`` — widths of ``phi``'s hidden layers (default ``[64, 64]``);
* optional: ``activation`` (``relu`` | ``tanh`` | ``elu``, default ``relu``), ``value_head``,
  ``q_head`` (the action critic, above), ``explore_mix`` and ``explore_global_share`` (its
  behaviour policy, above; default 0 and 0.5), ``inert_acts`` (above), ``q_scale``
  (positive, default 1: the critic's heads' output times ``q_scale`` is ``Q`` in return units,
  so that with Adam's bounded steps the critic can reach one-step effects of tens of points
  within a trial),
  ``act_groups`` — A ints, the group of each act (e.g. the knob it sets): then a second linear
  head scores each service's groups and every act's logit adds its group's score. The function
  class is the same (a sum of two linear maps is one), but what is learnt about one act moves
  the others of its group: a rewarded ``http2MaxRequests set 16`` also raises ``set 4`` and the
  other rungs of that knob on a service in that state, so credit spreads over related acts
  instead of waiting for each of 547 to be drawn (structured exploration). Off by default: on
  the one seed tried it did not change what a trial learned (BENCHMARKS.md, Closed-loop
  evaluation);
* optional ``factored`` (bool, default False): choose the service first, then its act. A
  linear head on each service's embedding gives that service's logit ``l_s``, the global
  actions keep theirs ``l_g``, and act ``a`` of service ``s`` gets ``l_s + log_softmax_a(acts_s)``:
  the flat categorical over the same ``Discrete`` space is then exactly "pick a service (or a
  global action) by softmax over ``[l_1 .. l_S, l_g]``, then an act of it by softmax over its
  ``A`` act logits". The choice of *where* to act learns from every act tried there, not only
  from the act that was drawn; permuting services still permutes the logit blocks. Off by
  default: over 10 seeded trials it learned less, the no-op becoming the action it settles on
  (BENCHMARKS.md, Closed-loop evaluation).

The action space must be ``Discrete(S * A + global_actions)``; a bad key raises ``ValueError``
naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from rl.module import (
    activation,
    activation_name,
    no_value_head_error,
    value_head_flag,
)

#: ``phi``'s hidden widths when ``model_config`` does not set ``hidden``.
DEFAULT_HIDDEN: tuple[int, ...] = (64, 64)

#: The keys every shared module needs (no default: they describe the env).
REQUIRED_KEYS: tuple[str, ...] = ("service_features", "global_features", "acts_per_service",
                                  "noop_action")


@dataclass(frozen=True)
class SharedModuleSettings:
    """The checked ``model_config`` of a :class:`SharedServiceModule`.

    Attributes:
        service_features: per service, its observation indices (S tuples of F ints).
        global_features: observation indices every service also reads (G ints).
        acts_per_service: ``A``, logits per service.
        noop_action: global logits at the end (the no-op at least).
        hidden: widths of ``phi``'s hidden layers (the last is the embedding size).
        activation: name of the hidden layers' activation.
        value_head: build ``V(s)`` for the learned baseline.
        q_head: build ``Q(s, a)`` for the all-action policy gradient (action critic).
        explore_mix: ε of the env runners' behaviour policy (module docstring).
        explore_global_share: the share of ε's mass on the global actions.
        q_scale: the critic's output scale, return units per unit of its heads' output.
        inert_acts: what tells the inert actions (module docstring), or None.
        act_groups: the group of each of the ``A`` acts, or None (no group head).
        global_actions: how many global actions end the action space.
        factored: service first, then act (module docstring).
    """

    service_features: tuple[tuple[int, ...], ...]
    global_features: tuple[int, ...]
    acts_per_service: int
    noop_action: bool
    hidden: tuple[int, ...]
    activation: str
    value_head: bool
    act_groups: tuple[int, ...] | None = None
    global_actions: int = 0
    factored: bool = False
    q_head: bool = False
    explore_mix: float = 0.0
    explore_global_share: float = 0.5
    q_scale: float = 1.0
    inert_acts: Mapping[str, Any] | None = None

    @property
    def num_services(self) -> int:
        """``S``."""
        return len(self.service_features)

    @property
    def num_actions(self) -> int:
        """``S * A + global_actions``: the size of the ``Discrete`` action space."""
        return self.num_services * self.acts_per_service + self.global_actions


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _index_list(key: str, value: Any, obs_dim: int) -> tuple[int, ...]:
    """A list of observation indices, each in ``0 .. obs_dim - 1``, else ``ValueError``."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"model_config[{key!r}] must be a list of ints, got {value!r}")
    indices = tuple(value)
    if not all(_is_int(i) for i in indices):
        raise ValueError(f"model_config[{key!r}] must hold ints, got {value!r}")
    outside = [i for i in indices if not 0 <= i < obs_dim]
    if outside:
        raise ValueError(f"model_config[{key!r}] has indices {outside} outside the "
                         f"observation (size {obs_dim})")
    return indices


def shared_module_settings(model_config: Mapping[str, Any] | None, obs_dim: int,
                           num_actions: int) -> SharedModuleSettings:
    """Check ``model_config`` against the observation size and the action-space size.

    Raises:
        ValueError: naming the key — a required key is missing; ``service_features`` is empty,
            has lists of unequal or zero length, or indices outside the observation;
            ``global_features`` has indices outside it; ``acts_per_service`` is not a positive
            int; ``noop_action``/``value_head`` not a bool; ``hidden`` not a non-empty list of
            positive ints; or the action space's size is not ``S * A (+1)``.
    """
    config = dict(model_config or {})
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"model_config is missing {missing} (needed by SharedServiceModule)")
    raw = config["service_features"]
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) == 0:
        raise ValueError(f"model_config['service_features'] must be a non-empty list of lists "
                         f"of ints, got {raw!r}")
    services = tuple(_index_list("service_features", s, obs_dim) for s in raw)
    lengths = sorted({len(s) for s in services})
    if len(lengths) != 1 or lengths[0] == 0:
        raise ValueError(f"model_config['service_features'] lists must all have the same, "
                         f"non-zero length; got lengths {[len(s) for s in services]}")
    global_features = _index_list("global_features", config["global_features"], obs_dim)
    acts = config["acts_per_service"]
    if not _is_int(acts) or acts < 1:
        raise ValueError(f"model_config['acts_per_service'] must be a positive int, got {acts!r}")
    noop = config["noop_action"]
    if not isinstance(noop, bool):
        raise ValueError(f"model_config['noop_action'] must be a bool, got {noop!r}")
    hidden = config.get("hidden", DEFAULT_HIDDEN)
    if (not isinstance(hidden, Sequence) or isinstance(hidden, str) or len(hidden) == 0
            or not all(_is_int(h) and h > 0 for h in hidden)):
        raise ValueError(f"model_config['hidden'] must be a non-empty list of positive ints, "
                         f"got {hidden!r}")
    groups = config.get("act_groups")
    if groups is not None:
        if (not isinstance(groups, Sequence) or isinstance(groups, str) or len(groups) != acts
                or not all(_is_int(g) and g >= 0 for g in groups)):
            raise ValueError(f"model_config['act_groups'] must be a list of {acts} "
                             f"(acts_per_service) non-negative ints, got {groups!r}")
        groups = tuple(groups)
    n_global = config.get("global_actions", int(noop))
    if not _is_int(n_global) or n_global < int(noop) or (n_global > 0 and not noop):
        raise ValueError(f"model_config['global_actions'] must be an int >= 1 with noop_action "
                         f"(0 without), got {n_global!r} (noop_action={noop})")
    factored = config.get("factored", False)
    if not isinstance(factored, bool):
        raise ValueError(f"model_config['factored'] must be a bool, got {factored!r}")
    try:
        q_scale = check_q_scale(config.get("q_scale", 1.0))
    except ValueError as e:
        raise ValueError(f"model_config['q_scale']: {e}") from None
    settings = SharedModuleSettings(
        service_features=services, global_features=global_features, acts_per_service=acts,
        noop_action=noop, hidden=tuple(hidden), activation=activation_name(config),
        value_head=value_head_flag(config.get("value_head", False)), act_groups=groups,
        global_actions=n_global, factored=factored,
        q_head=value_head_flag(config.get("q_head", False), key="q_head"),
        explore_mix=_fraction(config, "explore_mix", 0.0, upper_open=True),
        explore_global_share=_fraction(config, "explore_global_share", 0.5),
        q_scale=q_scale)
    inert = config.get("inert_acts")
    if inert is not None:
        settings = _with_inert_acts(settings, inert)
    if settings.explore_global_share > 0 and settings.explore_mix > 0 and not n_global:
        raise ValueError("model_config['explore_global_share'] > 0 needs global actions "
                         "(noop_action)")
    if settings.num_actions != num_actions:
        raise ValueError(
            f"the action space has {num_actions} actions but model_config describes "
            f"{settings.num_services} services (service_features) x {acts} acts "
            f"(acts_per_service) + {n_global} global_actions (noop_action={noop}) = "
            f"{settings.num_actions}")
    return settings


def check_q_scale(q_scale: object) -> float:
    """The critic's output scale (``model_config['q_scale']``) as a float; ``ValueError`` (one
    line) unless it is a finite number > 0."""
    if (isinstance(q_scale, bool) or not isinstance(q_scale, int | float)
            or not 0 < q_scale < float("inf")):
        raise ValueError(f"q_scale must be a finite number > 0, got {q_scale!r}")
    return float(q_scale)


def _with_inert_acts(settings: SharedModuleSettings, inert: Any) -> SharedModuleSettings:
    """``settings`` with ``inert_acts`` checked against its layout, else ``ValueError`` naming
    the key."""
    from dataclasses import replace

    keys = ("config_offsets", "defaults", "act_offset", "act_value", "global_kinds")
    if not isinstance(inert, Mapping) or any(k not in inert for k in keys):
        raise ValueError(f"model_config['inert_acts'] must be a dict with keys {keys}")
    f = len(settings.service_features[0])
    offsets, defaults = list(inert["config_offsets"]), list(inert["defaults"])
    act_offset, act_value = list(inert["act_offset"]), list(inert["act_value"])
    kinds = list(inert["global_kinds"])
    if (len(offsets) != len(defaults) or not all(_is_int(o) and 0 <= o < f for o in offsets)
            or len(act_offset) != settings.acts_per_service
            or len(act_value) != settings.acts_per_service
            or not all(_is_int(o) and -2 <= o < f for o in act_offset)
            or len(kinds) != settings.global_actions):
        raise ValueError("model_config['inert_acts'] does not fit the layout: config_offsets "
                         f"and defaults of equal length within a service's {f} features, "
                         f"act_offset/act_value of {settings.acts_per_service} acts, "
                         f"global_kinds of {settings.global_actions} global actions")
    return replace(settings, inert_acts={"config_offsets": offsets, "defaults": defaults,
                                         "act_offset": act_offset, "act_value": act_value,
                                         "global_kinds": kinds})


def _fraction(config: Mapping[str, Any], key: str, default: float,
              upper_open: bool = False) -> float:
    """``config[key]`` checked: a number in [0, 1] (or [0, 1) with ``upper_open``), else
    ``ValueError`` naming the key."""
    value = config.get(key, default)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0)):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"model_config[{key!r}] must be a number in {bound}, got {value!r}")
    return float(value)


def _trunk(in_dim: int, hidden: Sequence[int], act: str) -> torch.nn.Sequential:
    """``[Linear -> activation] * len(hidden)``: maps ``in_dim`` features to ``hidden[-1]``."""
    layers: list[torch.nn.Module] = []
    for width in hidden:
        layers += [torch.nn.Linear(in_dim, width), activation(act)]
        in_dim = width
    return torch.nn.Sequential(*layers)


def _head(in_dim: int, width: int, act: str, out: int = 1) -> torch.nn.Sequential:
    """``Linear(in_dim, width) -> activation -> Linear(width, out)``: ``out`` scalars."""
    return torch.nn.Sequential(torch.nn.Linear(in_dim, width), activation(act),
                               torch.nn.Linear(width, out))


class SharedServiceModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """A categorical policy whose per-service logits come from one network shared by all
    services (see the module docstring for the layout and the ``model_config`` keys)."""

    def setup(self) -> None:
        """Check ``model_config`` against the spaces and build ``phi`` and the heads."""
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"SharedServiceModule needs a Discrete action space, "
                             f"got {self.action_space}")
        if not isinstance(self.observation_space, gym.spaces.Box) or \
                len(self.observation_space.shape) != 1:
            raise ValueError(f"SharedServiceModule needs a flat Box observation space, "
                             f"got {self.observation_space}")
        s = shared_module_settings(self.model_config, int(self.observation_space.shape[0]),
                                   int(self.action_space.n))
        self.settings = s
        in_dim = len(s.service_features[0]) + len(s.global_features)
        width = s.hidden[-1]
        self.encoder = _trunk(in_dim, s.hidden, s.activation)
        self.act_head = torch.nn.Linear(width, s.acts_per_service)
        self.service_head = torch.nn.Linear(width, 1) if s.factored else None
        self.group_head: torch.nn.Linear | None = None
        if s.act_groups is not None:
            self.group_head = torch.nn.Linear(width, max(s.act_groups) + 1)
            self.register_buffer("act_group_index", torch.tensor(s.act_groups,
                                                                 dtype=torch.long),
                                 persistent=False)
        # the global actions' head (named for the no-op it first held; checkpoints keep it)
        self.noop_head = _head(width + len(s.global_features), width, s.activation,
                               s.global_actions) if s.global_actions else None
        self.value_encoder: torch.nn.Sequential | None = None
        self.value_head: torch.nn.Sequential | None = None
        if s.value_head:
            self.value_encoder = _trunk(in_dim, s.hidden, s.activation)
            self.value_head = _head(width + len(s.global_features), width, s.activation)
        self.q_encoder: torch.nn.Sequential | None = None
        self.q_act_head: torch.nn.Linear | None = None
        self.q_global_head: torch.nn.Sequential | None = None
        if s.q_head:
            self.q_encoder = _trunk(in_dim, s.hidden, s.activation)
            self.q_act_head = torch.nn.Linear(width, s.acts_per_service)
            if s.global_actions:
                self.q_global_head = _head(width + len(s.global_features), width, s.activation,
                                           s.global_actions)
        if s.inert_acts is not None:
            spec = s.inert_acts
            for name, values, dtype in (
                    ("inert_config_offsets", spec["config_offsets"], torch.long),
                    ("inert_defaults", spec["defaults"], torch.float32),
                    ("inert_act_offset", spec["act_offset"], torch.long),
                    ("inert_act_value", spec["act_value"], torch.float32)):
                self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)
            self.register_buffer("inert_global_restore", torch.tensor(
                [k == "restore" for k in spec["global_kinds"]]), persistent=False)
            self.register_buffer("inert_global_noop", torch.tensor(
                [k == "noop" for k in spec["global_kinds"]]), persistent=False)
        # Not persistent: the state dict must not depend on S (or on where features sit).
        self.register_buffer("service_index", torch.tensor(s.service_features,
                                                           dtype=torch.long), persistent=False)
        self.register_buffer("global_index", torch.tensor(s.global_features, dtype=torch.long),
                             persistent=False)

    def _inputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-service inputs [..., S, F + G], global features [..., G])`` of ``obs``
        (``[..., obs_dim]``)."""
        obs = obs.float()
        own = obs[..., self.service_index]
        shared = obs[..., self.global_index]
        tiled = shared.unsqueeze(-2).expand(*own.shape[:-1], shared.shape[-1])
        return torch.cat([own, tiled], dim=-1), shared

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Action logits ``[..., S * A + global_actions]`` for ``batch[Columns.OBS]``
        (``[..., obs_dim]``)."""
        inputs, shared = self._inputs(batch[Columns.OBS])
        embeddings = self.encoder(inputs)
        acts = self.act_head(embeddings)
        if self.group_head is not None:
            acts = acts + self.group_head(embeddings)[..., self.act_group_index]
        if self.service_head is not None:  # service first, then act: log p(s) + log p(a | s)
            acts = self.service_head(embeddings) + torch.log_softmax(acts, dim=-1)
        logits = acts.flatten(-2)
        if self.noop_head is not None:
            pooled = torch.cat([embeddings.mean(dim=-2), shared], dim=-1)
            logits = torch.cat([logits, self.noop_head(pooled)], dim=-1)
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The env runners' behaviour policy: ``pi``, or with ``explore_mix`` ε the mixture
        ``(1 - ε) pi + ε u`` (module docstring), as logits (log-probabilities)."""
        out = self._forward(batch, **kwargs)
        eps = self.settings.explore_mix
        if eps <= 0.0:
            return out
        logits = out[Columns.ACTION_DIST_INPUTS]
        n, g = logits.shape[-1], self.settings.global_actions
        share = self.settings.explore_global_share if g else 0.0
        uniform = torch.full((n,), (1.0 - share) / n, dtype=logits.dtype)
        if g:
            uniform[n - g:] += share / g
        mixed = (1.0 - eps) * torch.softmax(logits, dim=-1) + eps * uniform
        return {**out, Columns.ACTION_DIST_INPUTS: torch.log(mixed)}

    @property
    def has_value_head(self) -> bool:
        """Whether :meth:`compute_values` works (built with a value head, not inference-only)."""
        return getattr(self, "value_head", None) is not None

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """``V(s)``, shape ``[...]``, in the units of the learner's returns-to-go.

        ``embeddings`` is ignored: the value has its own encoder. ``ValueError`` if the module
        has no value head.
        """
        if not self.has_value_head:
            raise no_value_head_error(self)
        inputs, shared = self._inputs(batch[Columns.OBS])
        pooled = self.value_encoder(inputs).mean(dim=-2)
        return self.value_head(torch.cat([pooled, shared], dim=-1)).squeeze(-1)

    @property
    def has_q_head(self) -> bool:
        """Whether :meth:`compute_action_values` works (built with ``q_head``, not
        inference-only)."""
        return getattr(self, "q_encoder", None) is not None

    def compute_action_values(self, batch: dict[str, Any]) -> torch.Tensor:
        """``Q(s, a)`` for every action, shape ``[..., S * A + global_actions]`` (the logits'
        layout), in the units of the learner's returns-to-go.

        ``ValueError`` if the module has no ``q_head``.
        """
        if not self.has_q_head:
            raise ValueError(f"{type(self).__name__} was built without a q_head: set "
                             "model_config['q_head']=True (ReinforceConfig.training("
                             "action_critic=True) does) to learn action values")
        inputs, shared = self._inputs(batch[Columns.OBS])
        embeddings = self.q_encoder(inputs)
        values = self.q_act_head(embeddings).flatten(-2)
        if self.q_global_head is not None:
            pooled = torch.cat([embeddings.mean(dim=-2), shared], dim=-1)
            values = torch.cat([values, self.q_global_head(pooled)], dim=-1)
        values = values * self.settings.q_scale
        if self.settings.inert_acts is not None:
            values = values.masked_fill(self.inert_mask(batch[Columns.OBS]), 0.0)
        return values

    #: Two encoded values closer than this are the same knob value (distinct rungs differ by
    #: far more in ``log1p(v)/log1p(ceiling)``).
    INERT_TOLERANCE = 1e-4

    def inert_mask(self, obs: torch.Tensor) -> torch.Tensor:
        """Which actions change nothing the observation shows, ``[..., S * A + global_actions]``
        booleans (module docstring); all False without ``inert_acts``."""
        obs = obs.float()
        own = obs[..., self.service_index]  # [..., S, F]
        n = self.settings.num_actions
        if self.settings.inert_acts is None:
            return torch.zeros((*obs.shape[:-1], n), dtype=torch.bool)
        tol = self.INERT_TOLERANCE
        at_default = ((own[..., self.inert_config_offsets] - self.inert_defaults).abs()
                      < tol).all(dim=-1)  # [..., S]
        offsets = self.inert_act_offset.clamp(min=0)
        holds = (own[..., offsets] - self.inert_act_value).abs() < tol  # [..., S, A]
        acts = torch.where(self.inert_act_offset >= 0, holds,
                           (self.inert_act_offset == -1) & at_default.unsqueeze(-1))
        mask = acts.flatten(-2)
        if self.settings.global_actions:
            everything = at_default.all(dim=-1, keepdim=True)
            glob = (self.inert_global_noop
                    | (self.inert_global_restore & everything))
            mask = torch.cat([mask, glob.expand(*mask.shape[:-1], -1)], dim=-1)
        return mask

    def get_non_inference_attributes(self) -> list[str]:
        """The value and action-value encoders and heads: acting never needs them."""
        return ["value_encoder", "value_head", "q_encoder", "q_act_head", "q_global_head"]
