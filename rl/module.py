"""The policy network: an MLP over the observation with a softmax over the discrete actions.

The default is the original notebook's agent — ``Dense(250, relu) -> Dropout(0.2) ->
Dense(n_actions, softmax)`` — written as a :class:`TorchRLModule`. The softmax is implicit: the
module outputs logits and RLlib's ``TorchCategorical`` turns them into action probabilities.
Dropout is active only in ``forward_train`` (RLlib puts the module in ``eval()`` mode for acting).

With ``model_config["value_head"]`` (set by ``ReinforceConfig.training(learned_baseline=True)``)
the module also has a separate value MLP, ``V(s)``, the learned baseline of
:mod:`rl.learner`; it lives only on the learner (RLlib drops it from the env runners' copies).
The shared-weight alternative, one network applied to every service, is
:mod:`rl.shared_module`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

#: The original notebook's network. Override any key through ``config.rl_module(model_config=...)``.
DEFAULT_POLICY_CONFIG: dict[str, Any] = {
    "hidden_sizes": (250,),
    "activation": "relu",
    "dropout": 0.2,
    "value_head": False,
}

#: The module attributes that only the learner needs (the learned baseline).
VALUE_ATTRIBUTES: tuple[str, ...] = ("value_net",)

_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "elu": torch.nn.ELU,
}


def policy_config(model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy's settings: :data:`DEFAULT_POLICY_CONFIG` overridden by ``model_config``.

    Keys that are not policy settings (RLlib adds its own) are ignored; bad values raise
    ``ValueError`` naming the key.
    """
    cfg = dict(DEFAULT_POLICY_CONFIG)
    for key in DEFAULT_POLICY_CONFIG:
        if model_config is not None and key in model_config:
            cfg[key] = model_config[key]
    hidden = cfg["hidden_sizes"]
    if (not isinstance(hidden, Sequence) or isinstance(hidden, str)
            or not all(isinstance(h, int) and h > 0 for h in hidden)):
        raise ValueError(f"model_config['hidden_sizes'] must be a list of positive ints, "
                         f"got {hidden!r}")
    if cfg["activation"] not in _ACTIVATIONS:
        raise ValueError(f"model_config['activation'] must be one of {sorted(_ACTIVATIONS)}, "
                         f"got {cfg['activation']!r}")
    if not 0.0 <= float(cfg["dropout"]) < 1.0:
        raise ValueError(f"model_config['dropout'] must be in [0, 1), got {cfg['dropout']!r}")
    cfg["hidden_sizes"] = tuple(hidden)
    cfg["dropout"] = float(cfg["dropout"])
    cfg["value_head"] = value_head_flag(cfg["value_head"])
    return cfg


def value_head_flag(value: Any, key: str = "value_head") -> bool:
    """``model_config[key]`` (``value_head`` or ``q_head``) checked: a bool, else ``ValueError``
    naming the key."""
    if not isinstance(value, bool):
        raise ValueError(f"model_config[{key!r}] must be a bool, got {value!r}")
    return value


def activation(name: str) -> torch.nn.Module:
    """A fresh activation layer by name (one of ``relu``, ``tanh``, ``elu``)."""
    return _ACTIVATIONS[name]()


def activation_name(model_config: Mapping[str, Any] | None, default: str = "relu") -> str:
    """``model_config["activation"]`` checked against the known names (``ValueError`` if not)."""
    name = default if model_config is None else model_config.get("activation", default)
    if name not in _ACTIVATIONS:
        raise ValueError(f"model_config['activation'] must be one of {sorted(_ACTIVATIONS)}, "
                         f"got {name!r}")
    return name


def no_value_head_error(module: torch.nn.Module) -> ValueError:
    """The error of asking a module built without a value head for values."""
    return ValueError(f"{type(module).__name__} was built without a value head: set "
                      "model_config['value_head']=True (ReinforceConfig.training("
                      "learned_baseline=True) does) to learn a baseline")


def build_policy_net(obs_dim: int, num_actions: int, cfg: Mapping[str, Any]) -> torch.nn.Sequential:
    """``[Linear -> activation -> Dropout] * len(hidden_sizes) -> Linear(num_actions)`` (logits)."""
    layers: list[torch.nn.Module] = []
    in_dim = obs_dim
    for width in cfg["hidden_sizes"]:
        layers += [torch.nn.Linear(in_dim, width), _ACTIVATIONS[cfg["activation"]]()]
        if cfg["dropout"] > 0.0:
            layers.append(torch.nn.Dropout(cfg["dropout"]))
        in_dim = width
    layers.append(torch.nn.Linear(in_dim, num_actions))
    return torch.nn.Sequential(*layers)


class SoftmaxPolicyModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """A categorical policy over a ``Discrete`` action space from a flat ``Box`` observation,
    with an optional value MLP (``model_config["value_head"]``; same widths and activation as
    the policy, no dropout) for the learned baseline."""

    def setup(self) -> None:
        """Build the network from ``self.model_config`` (see :data:`DEFAULT_POLICY_CONFIG`)."""
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"SoftmaxPolicyModule needs a Discrete action space, "
                             f"got {self.action_space}")
        if not isinstance(self.observation_space, gym.spaces.Box) or \
                len(self.observation_space.shape) != 1:
            raise ValueError(f"SoftmaxPolicyModule needs a flat Box observation space, "
                             f"got {self.observation_space}")
        cfg = policy_config(self.model_config)
        obs_dim = int(self.observation_space.shape[0])
        self.policy_net = build_policy_net(obs_dim, int(self.action_space.n), cfg)
        self.value_net: torch.nn.Sequential | None = None
        if cfg["value_head"]:
            self.value_net = build_policy_net(obs_dim, 1, {**cfg, "dropout": 0.0})

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Action logits for ``batch[Columns.OBS]`` (shape ``[B, obs_dim]``)."""
        return {Columns.ACTION_DIST_INPUTS: self.policy_net(batch[Columns.OBS].float())}

    @property
    def has_value_head(self) -> bool:
        """Whether :meth:`compute_values` works (built with a value head, not inference-only)."""
        return getattr(self, "value_net", None) is not None

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """``V(s)`` for ``batch[Columns.OBS]``, shape ``[B]``, in the units of the learner's
        returns-to-go. ``ValueError`` if the module has no value head."""
        if not self.has_value_head:
            raise no_value_head_error(self)
        return self.value_net(batch[Columns.OBS].float()).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        """The value MLP: acting never needs it, so env runners' copies go without."""
        return list(VALUE_ATTRIBUTES)
